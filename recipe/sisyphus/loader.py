"""Loads experiment configs into the graph: ``config/x.py`` (its ``py()``/``main()``) or ``config.x.fn``."""
from __future__ import annotations

import asyncio
import importlib
import inspect
import logging
import os
import sys
import threading
from typing import Callable, List

import sisyphus.global_settings as gs


def prepare_sys_path() -> None:
    """Makes the setup's ``config`` and ``recipe`` packages importable."""
    for p in (os.path.join(gs.BASE_DIR, gs.RECIPE_PREFIX), gs.BASE_DIR):
        if p not in sys.path:
            sys.path.insert(0, p)


def _resolve(spec: str) -> Callable:
    """``config/x.py`` -> module config.x's py()/main(); ``config.x.fn`` or ``config/x.py:fn`` -> that function."""
    fn_name = None
    if ":" in spec:
        spec, fn_name = spec.split(":", 1)
    if spec.endswith(".py") or os.path.sep in spec:
        path = os.path.relpath(os.path.abspath(spec), gs.BASE_DIR)
        if path.startswith(".."):
            raise ValueError(f"config {spec} is outside the setup directory {gs.BASE_DIR}")
        if not os.path.isfile(os.path.join(gs.BASE_DIR, path)):
            raise FileNotFoundError(f"config file {spec} does not exist")
        module_name = path[:-3].replace(os.path.sep, ".") if path.endswith(".py") else path.replace(os.path.sep, ".")
        module = importlib.import_module(module_name)
    else:
        try:
            module = importlib.import_module(spec)
        except ModuleNotFoundError:
            module_name, fn_name = spec.rsplit(".", 1)
            module = importlib.import_module(module_name)
    if fn_name is not None:
        if not hasattr(module, fn_name):
            raise AttributeError(f"config {module.__name__} has no function {fn_name!r}")
        return getattr(module, fn_name)
    for name in ("py", "main"):
        if hasattr(module, name):
            return getattr(module, name)
    return lambda: None  # a module that registers its outputs at import time


class ConfigRunner:
    """Runs the config functions; async ones run in a thread so the manager can compute what they await."""

    def __init__(self, specs: List[str]):
        self.specs = specs
        self.threads: List[threading.Thread] = []
        self.errors: List[BaseException] = []

    def start(self) -> None:
        prepare_sys_path()
        for spec in self.specs:
            fn = _resolve(spec)
            if inspect.iscoroutinefunction(fn):
                t = threading.Thread(target=self._run_async, args=(fn,), daemon=True, name=f"config {spec}")
                t.start()
                self.threads.append(t)
            else:
                fn()

    def _run_async(self, fn: Callable) -> None:
        try:
            asyncio.run(fn())
        except BaseException as exc:  # reported by done()
            logging.exception("config failed")
            self.errors.append(exc)

    def done(self) -> bool:
        if self.errors:
            raise RuntimeError(f"config failed: {self.errors[0]!r}") from self.errors[0]
        return all(not t.is_alive() for t in self.threads)


def load_configs(specs: List[str]) -> ConfigRunner:
    runner = ConfigRunner(specs)
    runner.start()
    return runner

"""Job modules import without torch: a worker unpickles its job, and with it every job before it in the graph, so a
torch import there costs every task (even a WER scoring) seconds of start-up."""
import ast
import os
import subprocess
import sys

RECIPE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "recipe")
HEAVY = ("torch", "transformers", "peft", "returnn", "i6_models")


def job_modules():
    """Modules of the recipe that define a class named ``*Job``."""
    found = []
    for root, _, files in os.walk(os.path.join(RECIPE, "llmasr")):
        for name in sorted(files):
            if not name.endswith(".py"):
                continue
            path = os.path.join(root, name)
            tree = ast.parse(open(path, encoding="utf-8").read())
            if any(isinstance(n, ast.ClassDef) and n.name.endswith("Job") for n in tree.body):
                found.append(os.path.relpath(path, RECIPE)[:-3].replace(os.sep, "."))
    return sorted(found)


def test_job_modules_import_without_torch():
    modules = job_modules()
    assert "llmasr.returnn.training" in modules and "llmasr.search.delayed_fusion" in modules
    code = ("import importlib, sys\n"
            f"for m in {modules!r}:\n"
            "    importlib.import_module(m)\n"
            f"print(sorted(h for h in {HEAVY!r} if h in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=RECIPE, check=True)
    assert out.stdout.strip() == "[]", f"job modules import {out.stdout.strip()}"

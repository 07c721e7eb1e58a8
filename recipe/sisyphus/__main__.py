"""The ``sis`` command: manager, worker, console and cleaner."""
from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import List, Optional

import sisyphus.global_settings as gs


def _setup(args) -> None:
    gs.set_base_dir(os.getcwd())
    gs.load_settings(getattr(args, "settings", None))
    from sisyphus.loader import prepare_sys_path

    prepare_sys_path()


def _load_graph(configs: List[str]):
    from sisyphus.graph import graph
    from sisyphus.loader import load_configs

    runner = load_configs(configs)
    return graph, runner


def cmd_manager(args) -> int:
    import sisyphus.toolkit as tk
    from sisyphus.manager import Manager

    tk._running_in_manager = True

    graph, runner = _load_graph(args.config)
    engine = gs.engine()
    manager = Manager(graph, engine, interactive=not args.run, poll=args.poll, config_done=runner.done)
    return manager.run(max_time=args.max_time)


def cmd_worker(args) -> int:
    from sisyphus.worker import run_task

    return run_task(args.jobdir, args.task, int(args.task_id) if args.task_id is not None else None)


def cmd_console(args) -> int:
    import sisyphus.toolkit as tk
    from sisyphus import console

    tk._running_in_manager = True

    graph, runner = _load_graph(args.config)
    console.start(graph, gs.engine(), command=args.command)
    return 0


def cmd_cleaner(args) -> int:
    from sisyphus.cleaner import remove_dirs, unused_job_dirs

    graph, runner = _load_graph(args.config)
    dirs = unused_job_dirs(graph.jobs())
    for d in dirs:
        print(d)
    if args.remove:
        print(f"removed {remove_dirs(dirs)} job directories")
    else:
        print(f"{len(dirs)} job directories not needed (run with --remove to delete them)")
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="sis", description="Sisyphus-compatible workflow manager")
    parser.add_argument("--settings", help="settings file (default: ./settings.py)")
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command_name", required=True)

    m = sub.add_parser("manager", aliases=["m"], help="compute the outputs of configs")
    m.add_argument("config", nargs="+", help="config/x.py, config.x.fn or config/x.py:fn")
    m.add_argument("-r", "--run", action="store_true", help="start without asking")
    m.add_argument("--poll", type=float, default=None, help="seconds between checks")
    m.add_argument("--max-time", type=float, default=None, help="stop after this many seconds")
    m.set_defaults(fn=cmd_manager)

    w = sub.add_parser("worker", help="run one task (used by the engines)")
    w.add_argument("jobdir")
    w.add_argument("task")
    w.add_argument("task_id", nargs="?")
    w.set_defaults(fn=cmd_worker)

    c = sub.add_parser("console", aliases=["c"], help="interactive console on the graph")
    c.add_argument("config", nargs="+")
    c.add_argument("-c", "--command", help="run these Python statements instead of opening the console")
    c.set_defaults(fn=cmd_console)

    k = sub.add_parser("cleaner", help="list/remove job directories no output needs")
    k.add_argument("config", nargs="+")
    k.add_argument("--remove", action="store_true")
    k.set_defaults(fn=cmd_cleaner)

    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="[%(asctime)s] %(levelname)s: %(message)s")
    _setup(args)
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())

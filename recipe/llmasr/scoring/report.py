"""Collects named results (e.g. WER per system and test set) into a Markdown table and a bar plot."""
from __future__ import annotations

import os
from typing import Dict, Optional

from sisyphus import Task, tk

from llmasr.resources import ResourceJob


def _value(v):
    if isinstance(v, tk.Variable):
        return v.get()
    return v


def _cell(v, fmt: str) -> str:
    if v is None:
        return "-"
    return fmt.format(v) if isinstance(v, (int, float)) else str(v)


def markdown_table(results: Dict[str, Dict[str, float]], *, fmt: str = "{:.2f}",
                   info: Optional[Dict[str, Dict[str, object]]] = None) -> str:
    """``results[system][test_set]`` -> Markdown table with an "avg" column over the test sets, then the
    ``info[system][column]`` columns (e.g. tuned scales, not averaged)."""
    info = info or {}
    sets = sorted({s for row in results.values() for s in row})
    extra = sorted({c for row in info.values() for c in row})
    lines = ["| system | " + " | ".join(sets + ["avg"] + extra) + " |", "|---" * (len(sets) + len(extra) + 2) + "|"]
    for name, row in results.items():
        vals = [row.get(s) for s in sets]
        present = [v for v in vals if v is not None]
        avg = sum(present) / len(present) if present else None
        cells = [_cell(v, fmt) for v in vals + [avg]] + [_cell(info.get(name, {}).get(c), "{:.3g}") for c in extra]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


class ReportTableJob(ResourceJob):
    """Writes ``table.md`` and ``plot.png`` from ``results[system][test_set]`` (numbers or tk.Variables)."""

    __sis_hash_exclude__ = {"info": None}

    def __init__(self, results: Dict[str, Dict[str, object]], *, metric: str = "WER [%]",
                 info: Optional[Dict[str, Dict[str, object]]] = None):
        """
        :param results: system name -> test set name -> value (float or output variable of a scoring job)
        :param metric: axis / table caption
        :param info: system name -> column -> value shown after the averages (e.g. tuned scales, RTFx)
        """
        self.results = results
        self.metric = metric
        self.info = info
        self.out_table = self.output_path("table.md")
        self.out_plot = self.output_path("plot.png")

    def tasks(self):
        yield Task("run", mini_task=True)

    def run(self):
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        res = {n: {s: float(_value(v)) for s, v in row.items()} for n, row in self.results.items()}
        info = {n: {c: _value(v) for c, v in row.items()} for n, row in (self.info or {}).items()}
        table = f"{self.metric}\n\n" + markdown_table(res, info=info)
        p = self.out_table.get_path()
        with open(p + ".tmp", "w") as f:
            f.write(table)
        os.replace(p + ".tmp", p)
        sets = sorted({s for row in res.values() for s in row})
        fig, ax = plt.subplots(figsize=(max(4, 1.5 * len(res)), 3))
        w = 0.8 / max(len(sets), 1)
        for i, s in enumerate(sets):
            ax.bar([j + i * w for j in range(len(res))], [row.get(s, 0.0) for row in res.values()], w, label=s)
        ax.set_xticks([j + 0.4 - w / 2 for j in range(len(res))], list(res), rotation=20)
        ax.set_ylabel(self.metric)
        ax.legend()
        fig.tight_layout()
        fig.savefig(self.out_plot.get_path() + ".tmp.png")
        plt.close(fig)
        os.replace(self.out_plot.get_path() + ".tmp.png", self.out_plot.get_path())

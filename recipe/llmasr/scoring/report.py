"""Collects named results (e.g. WER per system and test set) into a Markdown table and a bar plot."""
from __future__ import annotations

import os
from typing import Dict

from sisyphus import Job, Task, tk


def _value(v):
    if isinstance(v, tk.Variable):
        return v.get()
    return v


def markdown_table(results: Dict[str, Dict[str, float]], *, fmt: str = "{:.2f}") -> str:
    """``results[system][test_set]`` -> Markdown table with an "avg" column over the test sets."""
    sets = sorted({s for row in results.values() for s in row})
    lines = ["| system | " + " | ".join(sets) + " | avg |", "|---" * (len(sets) + 2) + "|"]
    for name, row in results.items():
        vals = [row.get(s) for s in sets]
        present = [v for v in vals if v is not None]
        avg = sum(present) / len(present) if present else None
        cells = [fmt.format(v) if v is not None else "-" for v in vals + [avg]]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


class ReportTableJob(Job):
    """Writes ``table.md`` and ``plot.png`` from ``results[system][test_set]`` (numbers or tk.Variables)."""

    def __init__(self, results: Dict[str, Dict[str, object]], *, metric: str = "WER [%]"):
        """
        :param results: system name -> test set name -> value (float or output variable of a scoring job)
        :param metric: axis / table caption
        """
        self.results = results
        self.metric = metric
        self.out_table = self.output_path("table.md")
        self.out_plot = self.output_path("plot.png")

    def tasks(self):
        yield Task("run", mini_task=True)

    def run(self):
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        res = {n: {s: float(_value(v)) for s, v in row.items()} for n, row in self.results.items()}
        table = f"{self.metric}\n\n" + markdown_table(res)
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

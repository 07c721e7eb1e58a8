"""Collects named results (e.g. WER per system and test set) into a Markdown table and a bar plot."""
from __future__ import annotations

import os
from typing import Dict, Mapping, Optional, Sequence

from sisyphus import Job, Task, tk


def _value(v):
    if isinstance(v, tk.Variable):
        return v.get()
    return v


def _cell(v, fmt: str) -> str:
    if v is None:
        return "-"
    return fmt.format(v) if isinstance(v, (int, float)) else str(v)


def _mean(values) -> Optional[float]:
    present = [v for v in values if v is not None]
    return sum(present) / len(present) if present else None


def markdown_table(results: Dict[str, Dict[str, float]], *, fmt: str = "{:.2f}",
                   info: Optional[Dict[str, Dict[str, object]]] = None,
                   set_means: Optional[Mapping[str, Sequence[str]]] = None,
                   rtfx: Optional[Dict[str, Dict[str, Optional[float]]]] = None) -> str:
    """``results[system][test_set]`` -> Markdown table with an "avg" column over the test sets, a column per
    ``set_means`` entry (e.g. "Open ASR mean": the mean over those sets only), "RTFx" (the mean of the per-set
    ``rtfx[system][set]`` over the sets of the first ``set_means`` entry, or all sets), then the
    ``info[system][column]`` columns (e.g. tuned scales, not averaged)."""
    info = info or {}
    set_means = dict(set_means or {})
    sets = sorted({s for row in results.values() for s in row})
    means = list(set_means)
    extra = sorted({c for row in info.values() for c in row})
    rtfx_col = ["RTFx"] if rtfx is not None else []
    rtfx_sets = list(next(iter(set_means.values()))) if set_means else sets
    header = sets + ["avg"] + means + rtfx_col + extra
    lines = ["| system | " + " | ".join(header) + " |", "|---" * (len(header) + 1) + "|"]
    for name, row in results.items():
        vals = [row.get(s) for s in sets]
        cells = [_cell(v, fmt) for v in vals + [_mean(vals)]]
        cells += [_cell(_mean([row.get(s) for s in set_means[m]]), fmt) for m in means]
        if rtfx is not None:
            cells.append(_cell(_mean([rtfx.get(name, {}).get(s) for s in rtfx_sets]), "{:.1f}"))
        cells += [_cell(info.get(name, {}).get(c), "{:.3g}") for c in extra]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


class ReportTableJob(Job):
    """Writes ``table.md`` and ``plot.png`` from ``results[system][test_set]`` (numbers or tk.Variables)."""

    __sis_hash_exclude__ = {"info": None, "set_means": None, "rtfx": None}

    def __init__(self, results: Dict[str, Dict[str, object]], *, metric: str = "WER [%]",
                 info: Optional[Dict[str, Dict[str, object]]] = None,
                 set_means: Optional[Dict[str, Sequence[str]]] = None,
                 rtfx: Optional[Dict[str, Dict[str, object]]] = None):
        """
        :param results: system name -> test set name -> value (float or output variable of a scoring job)
        :param metric: axis / table caption
        :param info: system name -> column -> value shown after the averages (e.g. tuned scales)
        :param set_means: column name -> the sets it averages (e.g. the 8 Open ASR Leaderboard sets)
        :param rtfx: system name -> set -> RTFx (``ScoreWERJob.out_rtfx``); shown as one "RTFx" column
        """
        self.results = results
        self.metric = metric
        self.info = info
        self.set_means = {k: tuple(v) for k, v in set_means.items()} if set_means else None
        self.rtfx = rtfx
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
        rtfx = None
        if self.rtfx is not None:
            rtfx = {n: {s: (None if _value(v) is None else float(_value(v))) for s, v in row.items()}
                    for n, row in self.rtfx.items()}
        table = f"{self.metric}\n\n" + markdown_table(res, info=info, set_means=self.set_means, rtfx=rtfx)
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

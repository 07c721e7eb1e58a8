"""Collects named results (e.g. WER per system and test set) into a Markdown table and a bar plot, and checks the
findings an experiment is expected to show against them (one line per finding and set)."""
from __future__ import annotations

import dataclasses
import json
import os
from typing import ClassVar, Dict, List, Mapping, Optional, Sequence, Tuple

from sisyphus import Task, tk

from llmasr.hash_defaults import HashDefaults
from llmasr.resources import ResourceJob


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


LLM_CALLS = "LLM calls/utt"  # column of the LLM forward calls per utterance (from the search statistics)


def markdown_table(results: Dict[str, Dict[str, float]], *, fmt: str = "{:.2f}",
                   info: Optional[Dict[str, Dict[str, object]]] = None,
                   set_means: Optional[Mapping[str, Sequence[str]]] = None,
                   rtfx: Optional[Dict[str, Dict[str, Optional[float]]]] = None,
                   llm_calls: Optional[Dict[str, Dict[str, float]]] = None) -> str:
    """``results[system][test_set]`` -> Markdown table with an "avg" column over the test sets, a column per
    ``set_means`` entry (e.g. "Open ASR mean": the mean over those sets only), "RTFx" (the mean of the per-set
    ``rtfx[system][set]`` over the sets of the first ``set_means`` entry, or all sets), "LLM calls/utt" (the mean
    of ``llm_calls[system][set]`` over the same sets; "-" for systems without), then the ``info[system][column]``
    columns (e.g. tuned scales, not averaged)."""
    info = info or {}
    set_means = dict(set_means or {})
    sets = sorted({s for row in results.values() for s in row})
    means = list(set_means)
    extra = sorted({c for row in info.values() for c in row})
    rtfx_col = ["RTFx"] if rtfx is not None else []
    calls_col = [LLM_CALLS] if llm_calls is not None else []
    rtfx_sets = list(next(iter(set_means.values()))) if set_means else sets
    header = sets + ["avg"] + means + rtfx_col + calls_col + extra
    lines = ["| system | " + " | ".join(header) + " |", "|---" * (len(header) + 1) + "|"]
    for name, row in results.items():
        vals = [row.get(s) for s in sets]
        cells = [_cell(v, fmt) for v in vals + [_mean(vals)]]
        cells += [_cell(_mean([row.get(s) for s in set_means[m]]), fmt) for m in means]
        if rtfx is not None:
            cells.append(_cell(_mean([rtfx.get(name, {}).get(s) for s in rtfx_sets]), "{:.1f}"))
        if llm_calls is not None:
            cells.append(_cell(_mean([llm_calls.get(name, {}).get(s) for s in rtfx_sets]), "{:.1f}"))
        cells += [_cell(info.get(name, {}).get(c), "{:.3g}") for c in extra]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


COMPARISONS = ("<", "<=", "~", "vs")


@dataclasses.dataclass(frozen=True)
class Finding(HashDefaults):
    """A claim about the results, checked on every set (or on ``sets`` only): it holds where all its comparisons
    ``(a, op, b)`` or ``(a, op, b, factor)`` hold.

    ``a`` and ``b`` are system names (a row of the table) or ``"system:column"`` (an info column, e.g.
    ``"aed-beam:insertions"``, or the per-set ``"system:LLM calls/utt"``); ``op`` is ``<``, ``<=``, ``~`` (within
    ``rel_tol`` of each other) or ``vs`` (no claim: the line reports which of the two is lower and by how much, e.g.
    for the direction of an ablation). With a ``factor`` (``<`` and ``<=`` only) ``a op factor * b`` is checked
    and the line shows the ratio a / b and its relative change (e.g. ``1.01``: at most 1 % relative WER loss).
    """

    claim: str
    comparisons: Tuple[Tuple, ...]
    rel_tol: float = 0.1
    sets: Tuple[str, ...] = ()

    _HASH_DEFAULTS: ClassVar[Dict[str, object]] = {"sets": ()}

    def __post_init__(self):
        bad = [c for c in self.comparisons if len(c) not in (3, 4) or c[1] not in COMPARISONS
               or (len(c) == 4 and (c[1] not in ("<", "<=") or not isinstance(c[3], (int, float)) or c[3] <= 0))]
        if bad or not self.comparisons:
            raise ValueError(f"Finding {self.claim!r}: comparisons must be (a, op, b) with op in {COMPARISONS} or "
                             f"(a, op, b, factor > 0) with op < or <=, got {self.comparisons}")


def _lookup(name: str, eval_set: str, results, info, per_set) -> Optional[float]:
    if ":" in name:
        system, column = name.rsplit(":", 1)
        if column in per_set:
            return per_set[column].get(system, {}).get(eval_set)
        value = info.get(system, {}).get(column)
        return float(value) if isinstance(value, (int, float)) else None
    return results.get(name, {}).get(eval_set)


def _compare(va: float, op: str, vb: float, factor: Optional[float], rel_tol: float) -> Tuple[bool, str]:
    """Whether ``va op (factor *) vb`` holds, and the cell that shows it."""
    if factor is not None:
        good = va < factor * vb if op == "<" else va <= factor * vb * (1 + 1e-12)
        ratio = va / vb if vb else float("inf")
        return good, (f"{va:.2f} / {vb:.2f} = {ratio:.3f} ({100 * (ratio - 1):+.1f} %) "
                      f"{op if good else 'not ' + op} {factor:.3g}")
    good = {"<": va < vb, "<=": va <= vb, "~": abs(va - vb) <= rel_tol * max(abs(va), abs(vb), 1e-9)}[op]
    return good, f"{va:.1f} {op if good else 'not ' + op} {vb:.1f}"


def check_findings(findings: Sequence[Finding], results: Dict[str, Dict[str, float]],
                   info: Optional[Dict[str, Dict[str, object]]] = None,
                   per_set: Optional[Dict[str, Dict[str, Dict[str, float]]]] = None) -> List[str]:
    """One Markdown line per finding: on which sets it holds (with the numbers), or which set breaks it.
    ``per_set[column][system][set]``: values that findings name as ``"system:column"``, per set."""
    info = info or {}
    per_set = per_set or {}
    all_sets = sorted({s for row in results.values() for s in row})
    lines = []
    for f in findings:
        held, broken, parts, missing = [], [], [], []
        sets = [s for s in all_sets if s in f.sets] if f.sets else all_sets
        if not sets:
            missing.extend(f.sets)
        for s in sets:
            ok, cells = True, []
            for a, op, b, *factor in f.comparisons:
                va, vb = _lookup(a, s, results, info, per_set), _lookup(b, s, results, info, per_set)
                if va is None or vb is None:
                    missing.extend(n for n, v in ((a, va), (b, vb)) if v is None)
                    ok = False
                    continue
                if op == "vs":
                    lower = a if va < vb else b if vb < va else "neither"
                    cells.append(f"{a} {va:.1f} vs {b} {vb:.1f} (lower: {lower})")
                    continue
                good, cell = _compare(va, op, vb, factor[0] if factor else None, f.rel_tol)
                ok = ok and good
                cells.append(cell)
            (held if ok else broken).append(s)
            parts.append(f"{s}: " + ", ".join(cells))
        if all(c[1] == "vs" for c in f.comparisons):
            verdict = "direction"
        elif missing and not held:
            verdict = f"not measured (no {sorted(set(missing))[0]})"
        elif not broken:
            verdict = "holds on " + " and ".join(held)
        elif not held:
            verdict = "**does not hold** on " + " or ".join(broken)
        else:
            verdict = f"holds on {' and '.join(held)}, **not on {' and '.join(broken)}**"
        lines.append(f"- {f.claim}: {verdict} ({'; '.join(parts)})")
    return lines


def read_llm_calls(stats: Mapping[str, Mapping[str, object]]) -> Dict[str, Dict[str, float]]:
    """system -> set -> LLM forward calls per utterance, from search statistics files (``llm_forward_calls`` and
    ``utterances``, as the fusion search jobs write them)."""
    out: Dict[str, Dict[str, float]] = {}
    for system, row in stats.items():
        for eval_set, path in row.items():
            p = path.get_path() if hasattr(path, "get_path") else str(path)
            with open(p) as f:
                st = json.load(f)
            missing = [k for k in ("llm_forward_calls", "utterances") if k not in st]
            if missing:
                raise ValueError(f"{p} ({system}, {eval_set}): no {' and no '.join(missing)} in the search statistics "
                                 f"(needed for the LLM calls per utterance)")
            if not st["utterances"]:
                raise ValueError(f"{p} ({system}, {eval_set}): search statistics of 0 utterances")
            out.setdefault(system, {})[eval_set] = st["llm_forward_calls"] / st["utterances"]
    return out


class ReportTableJob(ResourceJob):
    """Writes ``table.md`` and ``plot.png`` from ``results[system][test_set]`` (numbers or tk.Variables)."""

    __sis_hash_exclude__ = {"info": None, "findings": (), "set_means": None, "rtfx": None, "llm_stats": None}

    def __init__(self, results: Dict[str, Dict[str, object]], *, metric: str = "WER [%]",
                 info: Optional[Dict[str, Dict[str, object]]] = None, findings: Sequence[Finding] = (),
                 set_means: Optional[Dict[str, Sequence[str]]] = None,
                 rtfx: Optional[Dict[str, Dict[str, object]]] = None,
                 llm_stats: Optional[Dict[str, Dict[str, tk.Path]]] = None):
        """
        :param results: system name -> test set name -> value (float or output variable of a scoring job)
        :param metric: axis / table caption
        :param info: system name -> column -> value shown after the averages (e.g. tuned scales)
        :param findings: claims checked against the results, listed under the table
        :param set_means: column name -> the sets it averages (e.g. the 8 Open ASR Leaderboard sets)
        :param rtfx: system name -> set -> RTFx (``ScoreWERJob.out_rtfx``); shown as one "RTFx" column
        :param llm_stats: system name -> set -> search statistics JSON with ``llm_forward_calls`` and
            ``utterances``: the LLM calls per utterance, shown as one "LLM calls/utt" column and available to the
            findings per set as ``"system:LLM calls/utt"``
        """
        self.results = results
        self.metric = metric
        self.info = info
        self.findings = tuple(findings)
        self.set_means = {k: tuple(v) for k, v in set_means.items()} if set_means else None
        self.rtfx = rtfx
        self.llm_stats = llm_stats
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
        calls = read_llm_calls(self.llm_stats) if self.llm_stats is not None else None
        table = f"{self.metric}\n\n" + markdown_table(res, info=info, set_means=self.set_means, rtfx=rtfx,
                                                       llm_calls=calls)
        if self.findings:
            lines = check_findings(self.findings, res, info, {LLM_CALLS: calls} if calls is not None else None)
            table += "\nWhat the results show:\n\n" + "\n".join(lines) + "\n"
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

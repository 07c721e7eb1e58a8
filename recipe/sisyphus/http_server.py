"""HTML rendering of graph objects (upstream's ``sisyphus.http_server``; this engine has no web server).

Recipes call ``object_to_html`` in their own ``html()`` methods (e.g. i6_core's RASR CommonRasrParameters).
"""
from __future__ import annotations

import html
from typing import Any, Iterable, Tuple


def _table(rows: Iterable[Tuple[str, ...]]) -> str:
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    return f"<table>{body}</table>"


def object_to_html(obj: Any) -> str:
    """An HTML fragment for a value: containers as tables, paths and jobs by job id, the rest escaped."""
    from sisyphus.job import Job
    from sisyphus.job_path import AbstractPath

    if isinstance(obj, (str, int, float, bool)):
        return html.escape(repr(obj))
    if isinstance(obj, (list, tuple, set, frozenset)):
        rows = [(object_to_html(x),) for x in obj]
        if isinstance(obj, (set, frozenset)):
            rows.sort()
        return _table(rows)
    if isinstance(obj, dict):
        return _table(sorted((object_to_html(k), object_to_html(v)) for k, v in obj.items()))
    if isinstance(obj, AbstractPath):
        if obj.creator is not None:
            job_id = html.escape(obj.creator._sis_id())
            return f'{html.escape(obj.path)} : <a href="/info/{job_id}">{job_id}</a>'
        return html.escape(obj.path)
    if isinstance(obj, Job):
        job_id = html.escape(obj._sis_id())
        return f'<a href="/info/{job_id}">{job_id}</a>'
    if callable(getattr(obj, "html", None)):
        return obj.html()
    return html.escape(str(obj)).replace("\n", "<br/>")

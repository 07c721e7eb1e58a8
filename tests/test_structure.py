"""The code's structure, read from the source: imports point down the pipeline, no module is part of an import cycle,
and no function is longer than a reader can hold in mind."""
import ast
import pathlib
from typing import Dict, Iterator, List, Set, Tuple

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
RECIPE = ROOT / "recipe"

# the pipeline's stages, lowest first: a module may import its own stage and the stages below it
STAGES: Dict[str, int] = {
    "sisyphus": 0,  # the engine
    "llmasr": 1,  # modules directly in the package (hash_defaults, resources): helpers of every stage
    "llmasr.data": 2, "llmasr.text": 2,
    "llmasr.models": 3,
    "llmasr.search": 4,
    "llmasr.returnn": 5, "llmasr.llm": 5,
    "llmasr.tuning": 6, "llmasr.scoring": 6,
    "config": 7,
}
MAX_FUNCTION_LINES = 80


def _module_name(path: pathlib.Path, root: pathlib.Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules(package: str) -> Dict[str, pathlib.Path]:
    root = ROOT if package == "config" else RECIPE
    return {_module_name(p, root): p for p in sorted((root / package).rglob("*.py"))}


def _imports(module: str, path: pathlib.Path) -> Iterator[Tuple[str, int]]:
    """(imported module, line) for every import in the file, also those inside functions (lazy imports)."""
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")[: len(module.split(".")) - node.level + (1 if is_package else 0)]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            yield name, node.lineno
            for alias in node.names:  # ``from llmasr.search import nbest`` imports the module llmasr.search.nbest
                yield f"{name}.{alias.name}", node.lineno


def _stage(module: str) -> str:
    """The stage a project module belongs to (None for third-party modules)."""
    best = None
    for stage in STAGES:
        if module == stage or module.startswith(stage + "."):
            if best is None or len(stage) > len(best):
                best = stage
    return best


def _graph(packages: Tuple[str, ...]) -> Dict[str, Set[str]]:
    """Module -> project modules it imports (only names that are modules of the project)."""
    known: Dict[str, pathlib.Path] = {}
    for package in packages:
        known.update(_modules(package))
    edges: Dict[str, Set[str]] = {m: set() for m in known}
    for module, path in known.items():
        for name, _ in _imports(module, path):
            if name in known and name != module:
                edges[module].add(name)
    return edges


def test_imports_point_down_the_pipeline():
    """No module imports one of a later stage (e.g. a model importing a search, a search importing a job of the
    RETURNN stage); the engine imports nothing of the toolkit."""
    wrong: Dict[str, str] = {}
    for package in ("llmasr", "sisyphus"):
        for module, path in _modules(package).items():
            for name, line in _imports(module, path):
                target = _stage(name)
                where = f"{path.relative_to(ROOT)}:{line}"
                if target is not None and STAGES[target] > STAGES[_stage(module)] and where not in wrong:
                    wrong[where] = f"{where}: {module} ({_stage(module)}) imports {name} ({target})"
    assert not wrong, "imports pointing up the pipeline:\n" + "\n".join(sorted(wrong.values()))


def test_no_private_names_across_stages():
    """A helper that another stage needs is public (``from llmasr.search.nbest import am_score``, not a ``_name``
    of some module of that stage)."""
    wrong = []
    for module, path in _modules("llmasr").items():
        for name, line in _imports(module, path):
            base, _, last = name.rpartition(".")
            target = _stage(base)
            if last.startswith("_") and not last.startswith("__") and target not in (None, _stage(module)):
                wrong.append(f"{path.relative_to(ROOT)}:{line}: {module} imports the private {name}")
    assert not wrong, "\n".join(wrong)


def _cycles(edges: Dict[str, Set[str]]) -> List[List[str]]:
    """Strongly connected components with more than one module (Tarjan's algorithm, iterative)."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    on_stack: Set[str] = set()
    stack: List[str] = []
    found: List[List[str]] = []
    counter = 0
    for root in sorted(edges):
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_no_import_cycles_in_the_toolkit():
    """Every module of the toolkit and the configs can be read without the ones that import it (the engine, which
    follows upstream Sisyphus' layout, may import itself in cycles)."""
    assert _cycles(_graph(("llmasr", "config"))) == []


def test_cycle_finder_finds_cycles():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []
@pytest.mark.parametrize("package", ["llmasr", "sisyphus"])
def test_no_function_longer_than_a_screen(package):
    """Functions of ``recipe/`` have at most 80 lines (docstring included): longer ones are split along their steps."""
    long = []
    for module, path in _modules(package).items():
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.name} has {lines} lines")
    assert not long, "\n".join(long)

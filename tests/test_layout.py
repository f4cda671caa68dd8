"""The house rules of issue 11, held by a test: small modules, no import cycle, no private name crossing modules."""

import ast
from pathlib import Path

import seamless_dask

PACKAGE = Path(seamless_dask.__file__).parent
MODULES = sorted(PACKAGE.rglob("*.py"))
MAX_LINES = 350


def _name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> list[tuple[str, list[str]]]:
    """``(module, names)`` of every module-level ``from ... import`` of the package, relative ones resolved."""
    package = _name(path) if path.name == "__init__.py" else _name(path).rpartition(".")[0]
    found = []
    for node in ast.parse(path.read_text()).body:  # module level only: imports inside functions run later
        if isinstance(node, ast.ImportFrom):
            base = package.split(".")
            module = ".".join(base[: len(base) - node.level + 1] + ([node.module] if node.module else []))
            if node.level == 0:
                module = node.module or ""
            if module.startswith("seamless_dask"):
                found.append((module, [a.name for a in node.names]))
    return found


def test_no_module_is_longer_than_the_house_allows():
    long = {_name(p): n for p in MODULES if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines: {long}: split them by idea"


def test_no_private_name_is_imported_from_another_module():
    crossing = [
        f"{_name(p)} imports {name} from {module}"
        for p in MODULES
        for module, names in _imports(p)
        for name in names
        if name.startswith("_") and not name.startswith("__")
    ]
    assert not crossing, crossing


def test_the_package_has_no_import_cycle_at_module_level():
    graph = {_name(p): set() for p in MODULES}
    for p in MODULES:
        for module, names in _imports(p):
            # `from . import record` imports the module record; `from .grid import TileGrid` the module grid
            targets = [f"{module}.{n}" for n in names if f"{module}.{n}" in graph] or [module]
            graph[_name(p)].update(t for t in targets if t in graph and t != _name(p))

    def cycle_from(start: str, node: str, seen: tuple[str, ...]) -> tuple[str, ...] | None:
        for nxt in graph[node]:
            if nxt == start:
                return (*seen, nxt)
            if nxt not in seen and (found := cycle_from(start, nxt, (*seen, nxt))):
                return found
        return None

    packages = {_name(p) for p in MODULES if p.name == "__init__.py"}
    cycles = [c for m in graph if m not in packages and (c := cycle_from(m, m, (m,)))]
    assert not cycles, f"import cycles: {cycles[:3]}"

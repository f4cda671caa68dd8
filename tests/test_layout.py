"""The house rules, held by a test that sees every import: module-level, inside functions and under
``TYPE_CHECKING``. A folder says what its files may import (docs/design.md, "The house").
"""

import ast
from pathlib import Path

import pytest

import seamless_dask

PACKAGE = Path(seamless_dask.__file__).parent
MODULES = sorted(PACKAGE.rglob("*.py"))
MAX_LINES = 500
MAX_TOP_LEVEL = 20
LONG_LINE, MAX_LONG_SHARE = 100, 0.02

# What each room may import of seamless_dask (besides itself, exceptions and options, which every
# room may use). A room is a subpackage, or a module at the top.
MAY_IMPORT = {
    "tiling": set(),
    "model": {"tiling"},
    "blend": {"tiling", "model"},
    "classes": {"graph"},  # the job record's class count
    "inputs": {"blend", "tiling", "classes"},
    "graph": {"tiling", "blend", "model", "inputs", "classes"},
    "cluster": {"graph", "model"},
    "io": {"graph", "cluster", "classes"},
    "metrics": {"graph"},
    "result": {"graph", "blend", "model", "inputs", "classes"},
    "segment": {"tiling", "model", "blend", "graph", "cluster", "inputs", "classes", "result"},
    "viz": {"tiling", "classes", "io"},
    "training": {"tiling", "blend", "model", "inputs", "io"},
    "accessor": {"segment", "tiling", "model"},
    "demo": {"segment", "viz"},
    "objects": {
        "classes",
        "tiling",
    },  # a class map in, objects out: numpy, scipy, rasterio, shapely
}
EVERYWHERE = {"exceptions", "options"}
TOP = {"cli", "testing", "__init__"}  # the top of the house: may import anything
# What io may use of the graph: the layers it writes through, the record, and the resume contract.
IO_MAY_USE_OF_GRAPH = {"seamless_dask.graph.layers", "seamless_dask.graph.record"}
IO_MAY_USE_OF_BUILD = {"resumed_array"}


def _name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


NAMES = {_name(p) for p in MODULES}


def _imports(path: Path) -> list[tuple[str, list[str]]]:
    """``(module, names)`` of every import in the file, wherever it stands, relative ones resolved;
    ``import x.y`` gives ``("x.y", [])``.
    """
    package = _name(path) if path.name == "__init__.py" else _name(path).rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = package.split(".")
            module = ".".join(
                base[: len(base) - node.level + 1] + ([node.module] if node.module else [])
            )
            if node.level == 0:
                module = node.module or ""
            found.append((module, [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            found.extend((a.name, []) for a in node.names)
    return found


def _targets(module: str, names: list[str]) -> list[str]:
    """The package's modules an import statement loads: ``from . import record`` loads the module
    record, ``from .grid import TileGrid`` the module grid.
    """
    return [f"{module}.{n}" for n in names if f"{module}.{n}" in NAMES] or [module]


def _room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _edges() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {_name(p): set() for p in MODULES}
    for p in MODULES:
        for module, names in _imports(p):
            graph[_name(p)].update(
                t for t in _targets(module, names) if t in NAMES and t != _name(p)
            )
    return graph


def test_no_module_is_longer_than_the_house_allows():
    long = {_name(p): n for p in MODULES if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines: {long}: split them by idea"


def test_lines_are_short_without_being_squeezed():
    lines = [line for p in MODULES for line in p.read_text().splitlines()]
    long = [line for line in lines if len(line) > LONG_LINE]
    assert len(long) <= MAX_LONG_SHARE * len(lines), (
        f"{len(long)} of {len(lines)} lines are over {LONG_LINE} characters (at most "
        f"{MAX_LONG_SHARE:.0%}): run `ruff format`, and wrap prose by hand"
    )


def test_the_top_level_holds_at_most_twenty_modules_and_subpackages():
    top = [
        p
        for p in PACKAGE.iterdir()
        if (p.suffix == ".py" and p.name != "__init__.py") or (p / "__init__.py").exists()
    ]
    assert len(top) <= MAX_TOP_LEVEL, sorted(p.name for p in top)


def test_no_private_name_is_imported_from_another_module():
    crossing = [
        f"{_name(p)} imports {name} from {module}"
        for p in MODULES
        for module, names in _imports(p)
        if module.startswith("seamless_dask")
        for name in names
        if name.startswith("_") and not name.startswith("__")
    ]
    assert not crossing, crossing


def test_the_package_has_no_import_cycle_not_even_inside_functions():
    graph = _edges()

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


@pytest.mark.parametrize("room", sorted(MAY_IMPORT))
def test_each_room_imports_only_the_rooms_below_it(room):
    allowed = MAY_IMPORT[room] | EVERYWHERE | {room}
    wrong = sorted(
        f"{module} imports {target}"
        for module, targets in _edges().items()
        if _room(module) == room
        for target in targets
        if _room(target) not in allowed and target != "seamless_dask"
    )
    assert not wrong, wrong
    assert room in {_room(m) for m in NAMES}, f"{room} is not a room of the package any more"


def test_the_top_of_the_house_is_the_cli_the_testing_helpers_and_the_package():
    rooms = {_room(m) for m in NAMES}
    assert rooms == set(MAY_IMPORT) | EVERYWHERE | TOP, rooms ^ (set(MAY_IMPORT) | EVERYWHERE | TOP)


def test_the_geometry_imports_neither_dask_nor_torch_not_even_lazily():
    heavy = sorted(
        f"{_name(p)} imports {module}"
        for p in MODULES
        if _room(_name(p)) == "tiling"
        for module, _ in _imports(p)
        if module.split(".")[0] in {"dask", "distributed", "torch", "xarray"}
    )
    assert not heavy, heavy


def test_io_reaches_the_graph_through_its_public_contract_only():
    wrong = []
    for p in MODULES:
        if _room(_name(p)) != "io":
            continue
        for module, names in _imports(p):
            if module == "seamless_dask.graph.build":
                wrong += [f"{_name(p)} imports {n}" for n in names if n not in IO_MAY_USE_OF_BUILD]
            elif module.startswith("seamless_dask.graph") and not any(
                t in IO_MAY_USE_OF_GRAPH for t in _targets(module, names)
            ):
                wrong.append(f"{_name(p)} imports {module} {names}")
    assert not wrong, wrong


def test_the_blend_kernels_never_reach_the_graph_the_cluster_or_io():
    wrong = sorted(
        f"{m} imports {t}"
        for m, targets in _edges().items()
        if _room(m) in {"blend", "model", "tiling"}
        for t in targets
        if _room(t) in {"graph", "cluster", "io", "cli", "segment"}
    )
    assert not wrong, wrong


def test_library_code_never_prints():
    printing = [
        f"{_name(p)}:{node.lineno}"
        for p in MODULES
        if _room(_name(p)) not in {"cli", "demo"}
        for node in ast.walk(ast.parse(p.read_text()))
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "print"
    ]
    assert not printing, printing


def test_no_module_branches_on_the_output_kind_by_name():
    """One Output value (options.OutputKind) owns each kind's dims, dtype, bands and moments."""

    def named_output(node: ast.AST) -> bool:
        name = getattr(node, "id", None) or getattr(node, "attr", None)
        return name == "output"

    branches = [
        f"{_name(p)}:{node.lineno}"
        for p in MODULES
        for node in ast.walk(ast.parse(p.read_text()))
        if isinstance(node, ast.Compare)
        and isinstance(node.ops[0], (ast.Eq, ast.NotEq))
        and named_output(node.left)
        and isinstance(node.comparators[0], ast.Constant)
    ]
    assert not branches, branches


def test_every_output_kind_is_described_once():
    from seamless_dask.options import OUTPUT_KINDS, OUTPUTS

    assert tuple(OUTPUT_KINDS) == OUTPUTS
    assert all(kind.name == name for name, kind in OUTPUT_KINDS.items())

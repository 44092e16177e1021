"""The package's layers: every import runs down (or across, within a layer), and no module imports itself back.

Read from the source with ``ast`` (imports under ``if TYPE_CHECKING:`` do not run and are not
counted; ``registry.discover`` imports a part folder's files by name at run time, which is the
registry's job and no static import). A module's layer is the first prefix of its name found in
``LAYERS``, from the bottom:
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = {"ppvae": ROOT / "ppvae", "ppvae.models": ROOT / "models", "ppvae.guides": ROOT / "guides",
           "ppvae.experiments": ROOT / "experiments"}
LAYERS = [
    ["ppvae.errors", "ppvae.paths", "ppvae.rng"],
    ["ppvae.registry", "ppvae.sites", "ppvae.tables", "ppvae.runs", "ppvae.distributions"],
    ["ppvae.plots"],
    ["ppvae.nn"],  # networks, shared by both sides of a pair
    ["ppvae.models", "ppvae.guides", "ppvae.data"],  # the parts of a pair, and the data
    ["ppvae.infer"],  # importance weights, estimators, optimizers, schedules, trainer
    ["ppvae.evaluation"],
    ["ppvae.analyses", "ppvae.loggers"],
    ["ppvae.rules", "ppvae.legacy"],
    ["ppvae.config"],
    ["ppvae.build"],
    ["ppvae.studies"],
    ["ppvae.api", "ppvae.catalog", "ppvae.cli", "ppvae.experiments", "ppvae"],  # the command line, the benchmark, the package's face
]
BOTTOM = {"ppvae.errors", "ppvae.registry", "ppvae.sites", "ppvae.distributions", "ppvae.nn"}


def modules() -> dict[str, Path]:
    out = {}
    for package, folder in SOURCES.items():
        for path in folder.rglob("*.py"):
            if "results" in path.relative_to(folder).parts:
                continue
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join([package, *parts])] = path
    return out


MODULES = modules()


def layer(name: str) -> int:
    """The layer of the longest entry of ``LAYERS`` that is ``name`` or a package holding it (``ppvae``
    itself stands only for the package's ``__init__``)."""
    matches = [(len(p), i) for i, prefixes in enumerate(LAYERS) for p in prefixes
               if name == p or (p != "ppvae" and name.startswith(p + "."))]
    assert matches, f"{name} is in no layer of tests/test_layers.py: add it where it belongs"
    return max(matches)[1]


def _type_checking(node: ast.If) -> bool:
    return isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"


def imports(name: str, path: Path) -> set[str]:
    """The ppvae modules ``name`` imports at run time (``from pkg import mod`` counts as ``pkg.mod``)."""
    tree = ast.parse(path.read_text())
    is_package = path.name == "__init__.py"
    found = set()

    def visit(nodes):
        for node in nodes:
            if isinstance(node, ast.If) and _type_checking(node):
                visit(node.orelse)
                continue
            if isinstance(node, ast.Import):
                found.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = name.split(".") if is_package else name.split(".")[:-1]
                    base = base[:len(base) - node.level + 1]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module
                for alias in node.names:
                    found.add(f"{target}.{alias.name}" if f"{target}.{alias.name}" in MODULES else target)
            else:
                for field in ("body", "orelse", "finalbody", "handlers"):
                    visit(getattr(node, field, []))

    visit(tree.body)
    return {m for m in found if m in MODULES and m != name}


GRAPH = {name: imports(name, path) for name, path in MODULES.items()}


@pytest.mark.parametrize("name", sorted(MODULES))
def test_imports_run_down_the_layers(name):
    upward = sorted(m for m in GRAPH[name] if layer(m) > layer(name))
    assert not upward, f"{name} (layer {layer(name)}) imports {upward} from a higher layer"


def test_no_import_circle():
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(GRAPH[node]):
            if state.get(nxt) == 1:
                raise AssertionError("import circle: " + " -> ".join(path[path.index(nxt):] + [nxt]))
            if nxt not in state:
                visit(nxt)
        path.pop()
        state[node] = 2

    for node in sorted(GRAPH):
        if node not in state:
            visit(node)


@pytest.mark.parametrize("side", ["ppvae.models", "ppvae.guides"])
def test_model_and_guide_parts_import_only_the_bottom_layer(side):
    """A model or guide part imports the registry, the pair contract, errors, distributions and networks,
    nothing of the estimators, the evaluator or the other side."""
    for name, deps in GRAPH.items():
        if name == side or name.startswith(side + "."):
            outside = sorted(d for d in deps if not d.startswith(side)
                             and not any(d == b or d.startswith(b + ".") for b in BOTTOM))
            assert not outside, f"{name} imports {outside}"


def test_importance_code_knows_no_bundled_pair():
    for name, deps in GRAPH.items():
        if name.startswith("ppvae.infer"):
            assert not [d for d in deps if d.startswith(("ppvae.models", "ppvae.guides"))], name


def test_every_module_has_a_layer_and_the_evaluator_is_a_module():
    for name in MODULES:
        layer(name)
    import ppvae
    import ppvae.evaluation.loglik as loglik

    assert loglik.evaluate is ppvae.evaluate and type(loglik).__name__ == "module"

"""matxfer's packages form layers: a module imports only its own layer or lower ones.

data/graphs → models → training → transfer → study → uncertainty → cli, on a ground floor
(``paths``, ``errors``, ``atomic``, ``locking``, ``ranks`` and the package root for
``__version__``) that every layer may use and that imports nothing above itself.
Within and across layers, modules import each other without circles.
Read from the source with :mod:`ast`, so imports inside functions and under
``TYPE_CHECKING`` count too.
"""

from __future__ import annotations

import ast
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "matxfer"
GROUND = 0
#: First component under ``matxfer`` → its layer (higher may import lower, not back).
LAYERS = {
    "": GROUND,  # ``from matxfer import __version__``
    "paths": GROUND,
    "errors": GROUND,
    "atomic": GROUND,
    "locking": GROUND,
    "ranks": GROUND,
    # One layer: validation reads the graph limits (graphs.config), graph building
    # applies the data checks; test_no_import_circles keeps them from tangling.
    "data": 1,
    "graphs": 1,
    "models": 2,
    "training": 3,
    "transfer": 4,
    "study": 5,
    # Intervals over ensembles of a study's runs, or of `train --ensemble` members.
    "uncertainty": 6,
    "cli": 7,
    # cli.py's shared options and its transfer and ranking commands, split off to keep
    # modules short.
    "cli_options": 7,
    "cli_transfer": 7,
    "cli_rank": 7,
    "cli_models": 7,
    "__main__": 7,
}


def _component(dotted: str) -> str:
    """``matxfer.models.ops.kernels`` → ``models``; ``matxfer`` → ``""``."""
    parts = dotted.split(".")
    return parts[1] if len(parts) > 1 else ""


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _matxfer_imports(path: Path) -> list[str]:
    """The matxfer modules ``path`` imports, anywhere in the file."""
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            # matxfer uses absolute imports only; a relative one would hide its layer.
            assert node.level == 0, f"{path}: relative import of {node.module!r}"
            names.append(node.module or "")
    return [name for name in names if name == "matxfer" or name.startswith("matxfer.")]


MODULES = sorted(PACKAGE.rglob("*.py"))


def test_every_module_belongs_to_a_layer() -> None:
    unknown = {_component(_module_name(path)) for path in MODULES} - LAYERS.keys()
    assert not unknown, f"add {sorted(unknown)} to LAYERS in tests/test_layers.py"


@pytest.mark.parametrize("path", MODULES, ids=lambda path: _module_name(path))
def test_no_module_imports_a_higher_layer(path: Path) -> None:
    module = _module_name(path)
    layer = LAYERS[_component(module)]
    upward = [name for name in _matxfer_imports(path) if LAYERS[_component(name)] > layer]
    assert not upward, f"{module} (layer {layer}) imports higher layers: {upward}"


def test_the_check_sees_an_upward_import(tmp_path: Path) -> None:
    source = tmp_path / "bad.py"
    source.write_text("def f():\n    from matxfer.transfer.freeze import FreezeSpec\n")
    assert _matxfer_imports(source) == ["matxfer.transfer.freeze"]
    assert LAYERS[_component("matxfer.transfer.freeze")] > LAYERS["training"]


def _imported_modules(path: Path, modules: set[str]) -> set[str]:
    """The matxfer modules ``path`` imports (``from pkg import module`` names the module)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                found.add(full if full in modules else node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found & modules


def test_no_import_circles() -> None:
    # A circle hidden by a function-level import (as multitask ↔ pretrained once were)
    # still ties the two modules together; the layout should be a tree of imports.
    modules = {_module_name(path): path for path in MODULES}
    graph = {name: _imported_modules(path, set(modules)) - {name} for name, path in modules.items()}
    try:
        tuple(TopologicalSorter(graph).static_order())
    except CycleError as error:
        pytest.fail(f"import circle: {' -> '.join(error.args[1])}")

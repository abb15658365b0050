"""The import rules of docs/architecture.md: recipes -> zoo, never back; registry depends on nothing
of ours; model-building modules never import TensorFlow at module level."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MODEL_BUILDING = [
    "zoo/registry.py",
    "zoo/heads.py",
    "zoo/policies.py",
    "zoo/classifier.py",
    "zoo/fingerprint.py",
    "zoo/preprocessing.py",
    *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "zoo" / "backbones").glob("*.py")),
]


def _imports(path: Path, module_level_only: bool = False) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    nodes = tree.body if module_level_only else ast.walk(tree)
    names = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize("path", sorted((ROOT / "zoo").rglob("*.py")), ids=str)
def test_zoo_never_imports_recipes(path):
    offending = {name for name in _imports(path) if name.split(".")[0] == "recipes"}
    assert not offending, f"{path} imports {offending}; imports point recipes -> zoo only"


def test_registry_depends_on_nothing_of_ours():
    ours = {name for name in _imports(ROOT / "zoo" / "registry.py") if name.startswith("zoo")}
    assert ours <= {"zoo.errors"}


@pytest.mark.parametrize("relative", MODEL_BUILDING)
def test_model_building_code_has_no_module_level_tensorflow(relative):
    names = _imports(ROOT / relative, module_level_only=True)
    assert not {n for n in names if n.split(".")[0] == "tensorflow"}, (
        f"{relative} imports TensorFlow at module level; use keras.ops (JAX machines have no TF)"
    )

"""The import rules of docs/architecture.md: recipes -> zoo, never back; registry depends on
nothing of ours; zoo.convert is a leaf that knows nothing of the registry; no import cycles,
function-local imports included; model-building modules never import TensorFlow at module
level."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MODEL_BUILDING = [
    "zoo/registry.py",
    "zoo/builder.py",
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


# zoo.convert converts a checkpoint given a model and a layer map; the spec and the cache
# are zoo.builder's business.
_NOT_FROM_CONVERT = ("zoo.registry", "zoo.backbones", "zoo.weights", "zoo.builder")


@pytest.mark.parametrize("path", sorted((ROOT / "zoo" / "convert").rglob("*.py")), ids=str)
def test_convert_knows_nothing_of_the_registry(path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    relative = [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level]
    offending = {
        name
        for name in _imports(path)
        if any(name == banned or name.startswith(banned + ".") for banned in _NOT_FROM_CONVERT)
    }
    assert not offending and not relative, (
        f"{path} imports {offending or relative}; zoo.convert is a leaf (see its docstring)"
    )


def _module_paths() -> dict[str, Path]:
    """Dotted module name -> file, for every module of zoo/ and recipes/."""
    found = {}
    for top in ("zoo", "recipes"):
        for path in sorted((ROOT / top).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


def _import_graph() -> dict[str, set[str]]:
    """Module -> the modules of ours it imports anywhere in its body (function-local too).

    ``from a.b import c`` points at ``a.b.c`` when that is a module, else at ``a.b``; a
    relative import is resolved against the importing module's package.
    """
    modules = _module_paths()

    def ours(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph = {}
    for module, path in modules.items():
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        targets = []
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets += [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                targets += [
                    f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base
                    for a in node.names
                ]
        graph[module] = {t for t in map(ours, targets) if t and t != module}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The groups of modules that import each other, directly or through others."""
    reach = {}
    for start in graph:
        seen, todo = set(), [start]
        while todo:
            for target in graph[todo.pop()] - seen:
                seen.add(target)
                todo.append(target)
        reach[start] = seen
    groups = {frozenset(m for m in graph if m in reach[v] and v in reach[m]) for v in graph}
    return sorted(sorted(g) for g in groups if len(g) > 1)


def test_cycle_finder_finds_a_function_local_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


@pytest.mark.parametrize(
    "package",
    ["zoo", "recipes"],
)
def test_no_import_cycles(package):
    cycles = [c for c in _cycles(_import_graph()) if any(m.split(".")[0] == package for m in c)]
    assert not cycles, f"import cycles (function-local imports count): {cycles}"

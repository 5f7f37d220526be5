"""carl_tf's imports point one way: errors <- method, data <- run <- evaluation <- training <- cli.

The method imports nothing of the rest, data knows nothing of the method, evaluation never
imports training; the package's `__init__` re-exports and may import any layer.
"""

import ast
import os

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(REPO, "carl_tf")

# Layer -> the layers its modules may import (besides their own).
ALLOWED = {
    "errors": set(),
    "_entry_point": set(),
    "method": {"errors"},
    "data": {"errors"},
    "run": {"errors", "method", "data"},
    "evaluation": {"errors", "method", "data", "run"},
    "training": {"errors", "method", "data", "run", "evaluation"},
    # The programs load TensorFlow themselves, after their flags (carl_tf._entry_point).
    "cli": {"errors", "_entry_point", "method", "data", "run", "evaluation", "training"},
    # The presets take the evaluation's kNN protocol from its settings, which load no Keras.
    "configs": {"evaluation"},
}


def layer_of(module: str) -> str | None:
    """`carl_tf.run.rundir` -> `run`; None for the package itself or outside carl_tf."""
    parts = module.split(".")
    if parts[0] != "carl_tf" or len(parts) < 2:
        return None
    return parts[1]


def imported_modules(source: str, module: str) -> list[str]:
    """Every carl_tf module a source imports, at any depth (function-level imports too)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the importing module's package
                base = module.split(".")[: -node.level]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            names = [f"{target}.{alias.name}" for alias in node.names]
            # `from carl_tf import data` imports the layer `data`; `from carl_tf.run import x`
            # imports from `run` whatever x is.
            found += names if target == "carl_tf" else [target]
    return [name for name in found if name.split(".")[0] == "carl_tf"]


def violations(source: str, module: str) -> list[str]:
    """The imports of `module` (given as source) that go against the layering."""
    layer = layer_of(module)
    if layer is None:
        return []
    bad = []
    for target in imported_modules(source, module):
        target_layer = layer_of(target)
        if target_layer in (None, layer) or target_layer in ALLOWED[layer]:
            continue
        bad.append(f"{module} imports {target}")
    return bad


def package_modules():
    for directory, _, files in os.walk(PACKAGE):
        for name in sorted(files):
            if name.endswith(".py"):
                path = os.path.join(directory, name)
                relative = os.path.relpath(path, REPO)[:-3].replace(os.sep, ".")
                yield relative.removesuffix(".__init__"), path
    for name in sorted(os.listdir(os.path.join(REPO, "configs"))):
        if name.endswith(".py"):
            yield (
                f"carl_tf.configs.{name[:-3]}".removesuffix(".__init__"),
                os.path.join(REPO, "configs", name),
            )


def test_every_module_belongs_to_a_known_layer():
    layers = {layer_of(module) for module, _ in package_modules()} - {None}
    assert layers <= set(ALLOWED), layers - set(ALLOWED)


@pytest.mark.parametrize("module, path", list(package_modules()), ids=lambda v: str(v))
def test_imports_point_down_only(module, path):
    with open(path, encoding="utf-8") as f:
        assert violations(f.read(), module) == []


@pytest.mark.parametrize(
    "module, source",
    [
        ("carl_tf.method.model", "from carl_tf.data import load_source"),
        ("carl_tf.data.sources", "def f():\n    from carl_tf.method import losses"),
        ("carl_tf.evaluation.loading", "import carl_tf.training.pretrain"),
        ("carl_tf.run.rundir", "from carl_tf import evaluation"),
        ("carl_tf.method.heads", "from ..cli import common"),
    ],
)
def test_the_check_catches_an_import_against_the_direction(module, source):
    assert violations(source, module), f"{source!r} in {module} should be refused"

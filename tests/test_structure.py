"""The package's shape: imports run one way, down the flow files -> model -> data -> run -> reports -> commands."""

import ast
from pathlib import Path

from conftest import REPO

PACKAGE = REPO / "torch_mnist"

# The package by purpose: each folder (or top-level module) may import only from those above its line, and
# from within itself without a circle. Data flows down: files -> model -> data -> run -> reports -> commands.
UNITS = [
    "errors", "interrupts", "files", "history",  # basics everything may use
    "distributed",  # torchrun's process group and shards (the batches take their share)
    "model",  # the MLP, the loss and RMSprop
    "data",  # the datasets as data, idx files, torchvision datasets, batches
    "config", "recipe",  # the configuration, and the one place it becomes objects
    "training",  # one epoch, the run, checkpoints, progress, logs, devices
    "inference",  # own digits and ONNX models, torch-free
    "keras",  # Keras files, conversion, real-Keras parity
    "deploy",  # export, the drawing page and its API
    "reports",  # figures, plots, reproduction, the benchmark
    "commands",  # one module per script
]
MAX_TOP_LEVEL_MODULES = 12


def unit_of(module: str) -> str:
    return module.split(".")[0]


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_imports(path: Path) -> set:
    """The package modules ``path`` imports, at the top or inside functions."""
    name = module_name(path)
    package = name.split(".")[:-1] if path.name != "__init__.py" else name.split(".") if name else []
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package[:len(package) - (node.level - 1)] if node.level > 1 else list(package)
            if node.module:
                found.add(".".join(base + node.module.split(".")))
            else:  # from . import distributed
                found.update(".".join(base + [alias.name]) for alias in node.names)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            modules = [node.module] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
            found.update(m.split(".", 1)[1] for m in modules if m and m.startswith("torch_mnist."))
    return {module for module in found if module}


def import_graph() -> dict:
    graph = {module_name(path): package_imports(path) for path in PACKAGE.rglob("*.py") if module_name(path)}
    # "from . import __version__" names an attribute of the package, not a module
    return {module: {target for target in targets if target in graph} for module, targets in graph.items()}


def test_every_module_lives_in_a_unit_and_the_top_level_is_small():
    assert {unit_of(module) for module in import_graph()} == set(UNITS)
    top_level = [path.name for path in PACKAGE.glob("*.py") if path.name != "__init__.py"]
    assert len(top_level) <= MAX_TOP_LEVEL_MODULES, top_level


def test_imports_only_run_down_the_flow():
    rank = {unit: i for i, unit in enumerate(UNITS)}
    upward = [f"{module} imports {target}" for module, targets in import_graph().items() for target in targets
              if rank[unit_of(target)] > rank[unit_of(module)]]
    assert upward == [], "\n".join(upward)


def test_no_module_is_over_400_lines():
    long = {str(path.relative_to(PACKAGE)): n for path in PACKAGE.rglob("*.py")
            if (n := len(path.read_text().splitlines())) > 400}
    assert long == {}


def test_no_import_circle():
    graph = import_graph()
    visiting, done = set(), set()

    def visit(module, path):
        assert module not in visiting, f"import circle: {' -> '.join(path + [module])}"
        if module in done:
            return
        visiting.add(module)
        for target in graph.get(module, ()):
            visit(target, path + [module])
        visiting.discard(module)
        done.add(module)

    for module in graph:
        visit(module, [])


def test_the_walker_sees_relative_and_function_level_imports(tmp_path):
    source = PACKAGE / "commands" / "train.py"
    imports = package_imports(source)
    assert {"distributed", "config", "commands.common", "training.run"} <= imports


def test_no_function_is_over_60_lines():
    """A function that reads on one screen: ~60 lines, docstring included (nested functions count apart)."""
    long = {}
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 60:
                long[f"{path.relative_to(PACKAGE)}:{node.name}"] = node.end_lineno - node.lineno + 1
    assert long == {}

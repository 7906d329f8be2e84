"""The package's shape: imports run one way, down the flow files -> data -> model -> run -> reports -> commands."""

import ast
from pathlib import Path

from conftest import REPO

PACKAGE = REPO / "torch_mnist"

# Each module may import only from layers above its own line (earlier in this list).
LAYERS = [
    {"errors", "history", "files"},  # basics everything may use
    {"kernels"},  # native code built on first use
    {"ink"},
    {"datasets", "digits", "integrity", "logs", "model", "losses", "optim", "idx", "distributed", "progress"},
    {"predict", "deployed", "keras_files"},  # torch-free: what a deployed model needs; Keras files read
    {"data", "reference", "analysis", "keras_parity"},  # datasets and figures as data
    {"batches"},
    {"config"},  # its choices come from the registries above
    {"recipe", "engine", "runtime", "prepare", "plots", "serve", "peers"},  # config -> objects; the steps
    {"checkpoint"},
    {"training", "export", "keras_convert"},  # a whole run; a run's model shipped, or brought from Keras
    {"benchmark"},
    {"reproduce"},
    {"commands", "commands.common"},
    {"commands.runs"},
    {"commands.train", "commands.evaluate", "commands.predict", "commands.plot", "commands.benchmark",
     "commands.reproduce", "commands.prepare", "commands.serve", "commands.export", "commands.convert"},
]


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


def test_every_module_has_a_layer():
    layered = set().union(*LAYERS)
    assert set(import_graph()) == layered


def test_imports_only_run_down_the_flow():
    layer_of = {module: i for i, layer in enumerate(LAYERS) for module in layer}
    upward = [f"{module} imports {target}" for module, targets in import_graph().items() for target in targets
              if layer_of[target] >= layer_of[module]]
    assert upward == [], "\n".join(upward)


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
    assert {"distributed", "config", "commands.common"} <= imports

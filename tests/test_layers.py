"""The package's data flow runs one way: fire <- observation <- environment <- vector <- planning <- rl <-
commands, with no import cycles (imports inside functions included)."""
import ast
from pathlib import Path

import firebreak_exp

PACKAGE = Path(firebreak_exp.__file__).resolve().parent
#: Module (or package prefix) -> layer; a module imports only modules of its own layer or below.
LAYERS = {"config": 0, "landscape": 0, "interrupt": 0, "atomic": 0, "fire": 1, "observation": 2, "environment": 3, "vector": 4,
          "factory": 5, "plots": 5, "planning": 6, "rl": 7, "commands": 8, "__main__": 9, "evaluate": 9,
          "benchmark": 9, "plan": 9, "api": 9, "convert_seed_config": 9}


def module_imports() -> dict:
    """firebreak_exp module name -> the firebreak_exp modules it imports anywhere in its source."""
    graph = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        imported = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("firebreak_exp"):
                imported.add(node.module.removeprefix("firebreak_exp").lstrip("."))
            elif isinstance(node, ast.Import):
                imported |= {a.name.removeprefix("firebreak_exp").lstrip(".") for a in node.names
                             if a.name.startswith("firebreak_exp")}
        graph[name] = imported - {""}
    return graph


def layer(module: str) -> int:
    return LAYERS[module.split(".")[0]]


def test_every_module_imports_only_its_layer_or_below():
    graph = module_imports()
    assert {m.split(".")[0] for m in graph if m} <= set(LAYERS)
    upward = [(m, i) for m, imports in graph.items() if m for i in imports if layer(i) > layer(m)]
    assert upward == []


def test_no_import_cycles():
    graph = module_imports()
    done, active, cycles = set(), [], []

    def visit(module):
        if module in active:
            cycles.append(active[active.index(module):] + [module])
            return
        if module in done:
            return
        active.append(module)
        for imported in sorted(graph.get(module, ())):
            visit(imported)
        active.pop()
        done.add(module)

    for module in sorted(graph):
        visit(module)
    assert cycles == []

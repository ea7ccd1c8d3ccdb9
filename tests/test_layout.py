"""The package's stages depend on each other in one direction only (no import circle)."""

import ast
from pathlib import Path

import clrepro

PACKAGE = Path(clrepro.__file__).parent
# Lower rank = earlier stage; a module may import only from its own stage or earlier ones.
RANKS = {
    "paths": 0, "config": 0, "data": 1, "models": 2, "methods": 3, "experiment": 4, "metrics": 4,
    "train": 5, "lockstep": 5, "report": 6, "run": 7, "cli": 8, "__main__": 8, "lm": 8, "analysis": 8,
}


def stage(module: str) -> str:
    return module.split(".")[1] if module.count(".") else "__init__"


def imports_of(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("clrepro."):
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("clrepro.")}
    return found


def test_every_import_points_to_an_earlier_or_the_same_stage():
    upward = []
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE).with_suffix("")
        if rel.name == "__init__" and len(rel.parts) == 1:
            continue  # the package's own re-exports
        own = rel.parts[0]
        for module in imports_of(path):
            other = stage(module)
            if other in RANKS and RANKS[other] > RANKS[own]:
                upward.append(f"{rel} imports {module}")
    assert not upward, upward


def test_config_is_a_leaf():
    assert not imports_of(PACKAGE / "config.py")

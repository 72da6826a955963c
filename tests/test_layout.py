"""The package's layout: phases import only the phases before them, no import circle, and the
README's Layout names every module."""

import ast
from pathlib import Path

from .helpers import REPO

PKG = REPO / "src" / "resnet_repro"
PHASES = ("record", "training", "sweeps", "analysis", "cli")  # each may import only those before it


def _module(p: Path) -> str:
    parts = list(p.relative_to(PKG.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports() -> dict[str, set[str]]:
    """Every module's imports of the package's modules (top-level and inside functions)."""
    graph = {}
    for p in PKG.rglob("*.py"):
        here, out = _module(p), set()
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = here.split(".") if p.name == "__init__.py" else here.split(".")[:-1]
                    target = ".".join(
                        base[: len(base) - node.level + 1] + ([node.module] if node.module else [])
                    )
                else:
                    target = node.module or ""
                names = [f"{target}.{a.name}" for a in node.names]
                out |= {
                    target,
                    *(
                        n
                        for n in names
                        if (PKG.parent / n.replace(".", "/")).with_suffix(".py").exists()
                    ),
                }
            elif isinstance(node, ast.Import):
                out |= {a.name for a in node.names}
        graph[here] = {m for m in out if m.startswith("resnet_repro")}
    return graph


def _phase(module: str) -> int:
    parts = module.split(".")
    return PHASES.index(parts[1]) + 1 if len(parts) > 1 and parts[1] in PHASES else 0


def test_no_phase_imports_a_later_one_and_there_is_no_import_circle():
    graph = _imports()
    upward = sorted(
        (a, b)
        for a, bs in graph.items()
        for b in bs
        if a != "resnet_repro" and _phase(b) > _phase(a)
    )
    assert upward == []

    def reaches(start: str, goal: str, seen: set) -> bool:
        for nxt in graph.get(start, ()):
            if nxt == goal or (nxt not in seen and not seen.add(nxt) and reaches(nxt, goal, seen)):
                return True
        return False

    # a package's __init__ "imports" its own modules only through lazy names;
    # circles are between modules
    circles = sorted(
        m
        for m in graph
        if not PKG.joinpath(*m.split(".")[1:], "__init__.py").exists() and reaches(m, m, set())
    )
    assert circles == []


def test_the_readme_layout_names_every_module():
    text = (REPO / "README.md").read_text()
    layout = text[text.index("## Layout") : text.index("## ", text.index("## Layout") + 3)]
    missing = [
        str(p.relative_to(PKG))
        for p in PKG.rglob("*.py")
        if p.name not in ("__init__.py", "__main__.py") and p.name not in layout
    ]
    assert missing == []
    assert all(f"{phase}/" in layout for phase in PHASES)

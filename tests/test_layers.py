"""The package's layering (docs/architecture.md): data flows one way, so a module imports only from its own layer
or the layers below it — never upward — and no modules import each other in a circle. Every import counts, those
inside functions too."""
import ast
from pathlib import Path

import huaxiang

PACKAGE = Path(huaxiang.__file__).resolve().parent
# lowest first; a name is a top-level module or package of huaxiang ("__init__": the package's own __init__.py)
LAYERS = [
    ("__init__", "errors", "schema", "ports", "batching", "folders"),
    ("config",),
    ("privacy", "store"),
    ("ingest",),
    ("features",),
    ("text",),
    ("graph",),
    ("models",),
    ("profile",),
    ("recommend",),
    ("scale", "stream", "forget", "online", "experiments"),
    ("serve", "evaluate"),
    ("jobs", "demo"),
    ("cli", "submit"),
]
LAYER = {name: n for n, names in enumerate(LAYERS) for name in names}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The huaxiang modules `name` imports (as dotted names below huaxiang), wherever the import statement is."""
    is_package = path.name == "__init__.py"
    here = name.split(".") if name != "__init__" else []
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        targets = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here if is_package else here[:-1]
                base = base[:len(base) - (node.level - 1)]
                prefix = ["huaxiang", *base]
            else:
                prefix = []
            mod = ".".join([*prefix, *(node.module.split(".") if node.module else [])])
            # `from m import x`: the submodule m.x when x is one, else m itself
            targets = [f"{mod}.{a.name}" if f"{mod}.{a.name}".removeprefix("huaxiang.") in known else mod
                       for a in node.names]
        for t in targets:
            t = "__init__" if t == "huaxiang" else t.removeprefix("huaxiang.")
            if t in known:
                found.add(t)
    found.discard(name)
    return found


def graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods) | {"__init__"}
    return {name: imports(name, path, known) for name, path in mods.items()}


def top(name: str) -> str:
    return name.split(".")[0]


def test_every_module_has_a_layer():
    assert sorted({top(m) for m in modules()} - set(LAYER)) == []


def test_nothing_imports_upward():
    upward = sorted(f"{m} imports {t} ({top(m)}: layer {LAYER[top(m)]}, {top(t)}: layer {LAYER[top(t)]})"
                    for m, targets in graph().items() for t in targets if LAYER[top(t)] > LAYER[top(m)])
    assert upward == []


def test_nothing_but_the_spark_entry_point_imports_the_cli():
    users = sorted(m for m, targets in graph().items() if top(m) != "cli" and any(top(t) == "cli" for t in targets))
    assert users == ["submit"]


def test_no_import_cycles():
    g = graph()
    cycles, state = [], {}

    def visit(node, stack):
        state[node] = "open"
        for nxt in sorted(g[node]):
            if state.get(nxt) == "open":
                cycles.append(" -> ".join(stack[stack.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = "done"

    for node in sorted(g):
        if node not in state:
            visit(node, [node])
    assert cycles == []


def test_the_checker_sees_relative_lazy_and_absolute_imports(tmp_path):
    """The import reader itself: a relative import inside a function, and a package's own relative import."""
    pkg = tmp_path / "p.py"
    pkg.write_text("def f():\n    from ..store import transaction\n    from . import engine\n"
                   "import huaxiang.schema\n")
    known = {"store", "scale.engine", "scale", "schema", "scale.build"}
    assert imports("scale.build", pkg, known) == {"store", "scale.engine", "schema"}
    (tmp_path / "q.py").write_text("from huaxiang.cli import main\nimport json\nfrom . import __version__\n")
    assert imports("submit", tmp_path / "q.py", {"cli", "__init__"}) == {"cli", "__init__"}

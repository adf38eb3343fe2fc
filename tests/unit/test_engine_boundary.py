"""The engine never imports Streamlit; only mergelab/ui may."""

import ast
from pathlib import Path

ENGINE = Path(__file__).resolve().parents[2] / "mergelab"


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_no_streamlit_outside_ui():
    offenders = [
        str(p.relative_to(ENGINE))
        for p in ENGINE.rglob("*.py")
        if "ui" not in p.relative_to(ENGINE).parts[:1] and "streamlit" in _imports(p)
    ]
    assert offenders == []


def test_checker_sees_a_streamlit_import(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import os\nfrom streamlit import session_state\n")
    assert "streamlit" in _imports(bad)


# --- the layering: data flows one way ------------------------------------------------------------
#: Subpackages in the order data flows through them; each may import only those before it.
LAYERS = ["io", "merging", "models", "storage", "study", "analysis", "viz", "ui"]
#: Top-level modules: config is below everything; the command line and the package's entry points
#: sit above everything.
BOTTOM, TOP = {"config", "choices", "threads"}, {"cli", "__main__", "__init__"}


def _mergelab_imports(path: Path, root: Path = ENGINE) -> set[str]:
    """The mergelab modules ``path`` imports, as dotted names relative to the package
    (``storage.store``), resolving relative imports."""
    rel = path.relative_to(root).with_suffix("")
    package = list(rel.parts[:-1])  # a module's package (an __init__'s own package)
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            out |= {a.name.split(".", 1)[1] for a in node.names if a.name.startswith("mergelab.")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                target = ".".join([*base, *(node.module.split(".") if node.module else [])])
                if node.module is None:  # from . import x
                    out |= {".".join([*base, a.name]) for a in node.names}
                elif target:
                    out.add(target)
            elif node.module and node.module.startswith("mergelab."):
                out.add(node.module.split(".", 1)[1])
            elif node.module == "mergelab":
                out |= {a.name for a in node.names}
    return out


def _layer(module: str) -> int | None:
    head = module.split(".")[0]
    if head in BOTTOM:
        return -1
    if head in TOP:
        return len(LAYERS)
    return LAYERS.index(head) if head in LAYERS else None


def layering_violations(root: Path = ENGINE) -> list[str]:
    bad = []
    for path in root.rglob("*.py"):
        module = ".".join(path.relative_to(root).with_suffix("").parts)
        own = _layer(module)
        assert own is not None, f"{module} is in no layer: put it in one of {LAYERS}"
        for target in _mergelab_imports(path, root):
            theirs = _layer(target)
            if theirs is not None and theirs > own:
                bad.append(f"{module} imports {target}")
    return bad


def test_every_module_imports_only_layers_below_its_own():
    assert layering_violations() == []


def test_each_subpackage_says_what_it_holds():
    for name in LAYERS:
        doc = ast.get_docstring(ast.parse((ENGINE / name / "__init__.py").read_text()))
        assert doc and len(doc) > 30, name


def test_the_layering_check_sees_an_upward_import(tmp_path):
    fake = tmp_path / "mergelab"
    (fake / "storage").mkdir(parents=True)
    (fake / "analysis").mkdir()
    (fake / "storage" / "store.py").write_text("from ..analysis import views\n")
    (fake / "analysis" / "views.py").write_text("from ..storage.store import Store\n")
    assert layering_violations(fake) == ["storage.store imports analysis"]


def test_the_repository_holds_only_its_fixed_top_level():
    """Nothing but the product's fixed top level is tracked (a training run once left `adapters/` at
    the root)."""
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    files = subprocess.run(["git", "ls-files"], cwd=root, capture_output=True, text=True, check=True).stdout.split()
    top = {f.split("/")[0] for f in files}
    allowed = {
        "app.py",
        "pages",
        "mergelab",
        "tests",
        "data",
        ".streamlit",
        "requirements.txt",
        "requirements-dev.txt",
        "README.md",
        "pyproject.toml",
        "bench",
        ".ci",
        ".gitignore",
        "CHANGELOG.md",
    }
    assert top <= allowed, sorted(top - allowed)


# --- no import cycles, lazy imports included ------------------------------------------------------------
def _module_graph(root: Path = ENGINE) -> dict[str, set[str]]:
    """module → the mergelab modules it imports anywhere in its body (a lazy import inside a function
    is an edge too: it only hides a cycle until something imports eagerly). ``from pkg import mod``
    points at the module, not the package."""
    mods = {".".join(p.relative_to(root).with_suffix("").parts): p for p in root.rglob("*.py")}

    def resolve(name: str) -> str | None:
        return name if name in mods else (f"{name}.__init__" if f"{name}.__init__" in mods else None)

    graph = {}
    for mod, path in mods.items():
        package, targets = mod.split(".")[:-1], set()
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                targets |= {resolve(a.name.split(".", 1)[1]) for a in node.names if a.name.startswith("mergelab.")}
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = ".".join([*package[: len(package) - node.level + 1], *(node.module or "").split(".")])
                elif (node.module or "").startswith("mergelab"):
                    base = node.module.split(".", 1)[1] if "." in node.module else ""
                else:
                    continue
                base = base.strip(".")
                targets |= {resolve(f"{base}.{a.name}" if base else a.name) or resolve(base) for a in node.names}
        graph[mod] = {t for t in targets if t and t != mod}
    return graph


def import_cycles(root: Path = ENGINE) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan)."""
    graph, index, low, stack, on, found, counter = _module_graph(root), {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles_even_through_lazy_imports():
    assert import_cycles() == []


def test_the_cycle_check_sees_a_lazy_cycle(tmp_path):
    fake = tmp_path / "mergelab"
    (fake / "storage").mkdir(parents=True)
    (fake / "storage" / "store.py").write_text("def f():\n    from .states import g\n")
    (fake / "storage" / "states.py").write_text("from .store import f\n")
    assert import_cycles(fake) == [["storage.states", "storage.store"]]


def test_every_test_file_has_a_name_of_its_own():
    """pytest's default (rootdir-relative "prepend") import mode imports each test file by its basename,
    so two files called test_x.py in different folders stop the whole collection on a clean clone
    ("import file mismatch"), even where a warm __pycache__ hid it locally."""
    names: dict[str, list[str]] = {}
    root = ENGINE.parent
    for path in sorted((root / "tests").rglob("test_*.py")):
        names.setdefault(path.name, []).append(str(path.relative_to(root)))
    assert {name: paths for name, paths in names.items() if len(paths) > 1} == {}


def test_the_wheel_lists_every_package():
    """pyproject.toml names the packages one by one (it maps mergelab._bundle onto the checkout), so a
    new subpackage left off that list would be missing from every installed copy."""
    import tomllib

    root = ENGINE.parent
    listed = set(tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    on_disk = {".".join(p.parent.relative_to(root).parts) for p in ENGINE.rglob("__init__.py")}
    assert on_disk <= listed, sorted(on_disk - listed)
    assert listed - on_disk == {"mergelab._bundle"}

"""The engine never imports Streamlit; only mergelab/ui may."""

import ast
from pathlib import Path

ENGINE = Path(__file__).resolve().parent.parent / "mergelab"


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
    offenders = [str(p.relative_to(ENGINE)) for p in ENGINE.rglob("*.py")
                 if "ui" not in p.relative_to(ENGINE).parts[:1] and "streamlit" in _imports(p)]
    assert offenders == []


def test_checker_sees_a_streamlit_import(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import os\nfrom streamlit import session_state\n")
    assert "streamlit" in _imports(bad)

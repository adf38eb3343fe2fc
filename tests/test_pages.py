"""AppTest for every page: renders without an exception on the bundled studies."""

from pathlib import Path

from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parent.parent


def _app(db_path):
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    return at


def test_paper_page_renders_recomputed_beside_published(db_path):
    at = _app(db_path).run()
    assert not at.exception, at.exception
    assert at.title[0].value == "The paper's published results"
    frames = [df.value for df in at.dataframe]
    t5 = next(f for f in frames if "p_recomputed" in getattr(f, "columns", []) and "r" in f.columns)
    assert {"GLUE", "a", "b", "c"} <= set(t5["group"])
    assert at.sidebar.selectbox[0].value == "paper"


def test_paper_page_model_switch(db_path):
    at = _app(db_path).run()
    at.selectbox(key="paper_model").select("Qwen2.5-7B").run()
    assert not at.exception
    at.slider(key="paper_collapse").set_value(-50).run()
    assert not at.exception

from mergelab.analysis import paper
from mergelab.viz import figures


def test_html_report_and_png_export(tmp_path):
    import shutil

    from mergelab.study.bundled import open_store
    from mergelab.viz.report import build_report

    store = open_store(tmp_path / "m.db")
    html = build_report(store, "demo")
    assert html.startswith("<!doctype html>") and "<h2>Group default</h2>" in html and "HiddenSim" in html
    assert html.count("plotly.js") >= 1 and "wn_pos" in html
    fig = figures.swap_comparison(paper.load_tables()["table6"])
    if shutil.which("chromium"):  # kaleido renders through Debian's chromium
        png = fig.to_image(format="png")
        assert png[:8] == b"\x89PNG\r\n\x1a\n"

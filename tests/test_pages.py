"""AppTest for every page, on the bundled paper and demo studies (no browser)."""

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from mergelab.storage import jobs
from mergelab.study import executors, planner
from mergelab.study.bundled import open_store

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture()
def app(db_path, monkeypatch):
    monkeypatch.setenv("MERGELAB_NO_AUTOSTART", "1")

    def make(page: str | None = None, study: str = "demo"):
        at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
        at.query_params["study"] = study
        at.run()
        assert at.sidebar.selectbox(key="study_select").value == study
        if page:
            at.switch_page(f"pages/{page}.py").run()
        assert not at.exception, at.exception
        return at

    return make


def test_paper_page_renders_recomputed_beside_published(app):
    at = app("paper", "paper")
    assert at.title[0].value == "The paper's published results"
    t5 = next(df.value for df in at.dataframe if "p_recomputed" in df.value.columns and "r" in df.value.columns)
    assert {"GLUE", "a", "b", "c"} <= set(t5["group"])
    at.selectbox(key="paper_model").select("Qwen2.5-7B").run()
    at.slider(key="paper_collapse").set_value(-50).run()
    assert not at.exception


def test_similarity_controls_and_worst_task(app):
    at = app("similarity")
    mds = next(df.value for df in at.dataframe if "mds" in df.value.columns)
    assert mds.iloc[0]["task"] == "wn_pos"  # the demo's collapsing task has the worst MDS
    assert "ci_low" in mds.columns
    for key, value in [("sim_pooling", "first"), ("sim_distance", "cka"), ("sim_layer", 3)]:
        at.selectbox(key=key).select(value).run()
        assert not at.exception
    at.slider(key="sim_k").set_value(2).run()
    assert not at.exception


def test_merge_loss_flags_collapse(app):
    at = app("merge_loss")
    assert any("Collapse under every method" in e.value and "wn_pos" in e.value for e in at.error)


def test_merge_loss_shows_normalized_scores(app):
    at = app("merge_loss")
    assert any("Normalized score" in h.value for h in at.subheader)
    frames = [d.value for d in at.dataframe]
    table = next(f.data if hasattr(f, "data") else f for f in frames if "level" in getattr(f, "data", f).columns)
    assert {"task", "group mean"} <= set(table["level"])
    assert ((table["normalized"] > 0) & (table["normalized"] < 2)).all()


def test_run_page_lists_done_units(app):
    at = app("run")
    assert any("units done" in str(p.proto) for p in at.get("progress"))


def test_study_page_validation_inline(app):
    at = app("study")
    assert any("Spec is valid" in s.value for s in at.success)
    at.text_area(key="study_groups").input("g: wn_pos, nope").run()
    assert any("unknown task 'nope'" in e.value for e in at.error)


def test_study_form_round_trips_the_demo_spec(app):
    """The form re-creates the registered spec, settings it does not show included (the demo's
    batch_size 64, hidden pooling/distance, each task's split fields): registering it unchanged
    queues nothing new, and the resolved spec keeps them."""
    at = app("study")
    assert at.number_input(key="study_batch").value == 64
    at.button(key="study_register").click().run()
    assert any("0 units queued" in s.value for s in at.success), [s.value for s in at.success]
    resolved = next(c.value for c in at.code if "batch_size" in c.value)
    assert "batch_size: 64" in resolved and "pooling: mean" in resolved


def test_task_swap_end_to_end(app, db_path):
    at = app("task_swap")
    cands = next(df.value for df in at.dataframe if "candidate" in df.value.columns)
    assert cands.iloc[0]["candidate"] == "vader_intensity"
    assert cands.iloc[0]["new_worst_mds"] < 5.0
    at.button(key="swap_go").click().run()  # the demo ships this swap verified: nothing to redo
    assert any("Queued 0 units" in s.value for s in at.success), [s.value for s in at.success]
    table = next(df.value for df in at.dataframe if "worst_after" in df.value.columns)
    shipped = table.iloc[0]
    assert shipped["worst_before"] <= -30 and shipped["worst_after"] > shipped["worst_before"]
    assert shipped["worst_mds_after"] < shipped["worst_mds_before"]
    assert {"change_ci_low", "change_ci_high", "within_noise"} <= set(table.columns)  # the change's interval
    second = cands.iloc[1]["candidate"]  # a swap nobody merged yet: queued, run, shown
    at.selectbox(key="swap_choice").select(second).run()
    at.button(key="swap_go").click().run()
    store = open_store(db_path)
    n_methods = len(planner.load_study_spec(store, "demo").methods)
    units = 8 * n_methods + n_methods  # each task under each method, and the merges' hidden states
    assert any(f"Queued {units} units" in s.value for s in at.success), [s.value for s in at.success]
    assert jobs.jobs_frame(store, "demo")["status"].value_counts()["queued"] == units
    assert executors.run_worker(store, "demo") == {"done": units, "failed": 0}
    at = app("task_swap")
    table = next(df.value for df in at.dataframe if "worst_after" in df.value.columns)
    assert len(table) == 2 and table["worst_after"].notna().all() and table["change_ci_low"].notna().all()
    from mergelab.analysis import views

    theory = views.theory(store, "demo", "swap:default:wn_pos->vader_intensity")
    assert len(theory) == n_methods and (theory["delta_max"] >= theory["lower"]).all()


def test_statistics_page_states_each_claims_verdict(app, db_path):
    """The preregistered tests on the Statistics page come from analysis.hypotheses: on llm13 (three
    groups that share tasks) H1 cannot be combined, and the page says so instead of a verdict."""
    from mergelab.analysis import hypotheses

    at = app("statistics", study="llm13")
    text = " ".join(m.value for m in at.markdown)
    assert "The paper's claims, tested on this study" in [h.value for h in at.subheader]
    for sentence in hypotheses.sentences(hypotheses.hypothesis_tests(open_store(db_path), "llm13")):
        assert sentence in text
    assert "**H1** — MDS predicts the best merging loss (r < 0): not measured" in text


def test_the_overview_answers_the_three_claims(app, db_path):
    """Issue 23: the Overview answers H1–H3 in plain words, the same sentences as the Statistics
    page (one computation in analysis.hypotheses); a study with one group has no combined test and
    the Overview does not pretend otherwise."""
    from mergelab.analysis import hypotheses

    at = app("overview", study="llm13")
    text = " ".join(m.value for m in at.markdown)
    assert "The paper's claims, tested on this study" in [h.value for h in at.subheader]
    for sentence in hypotheses.sentences(hypotheses.hypothesis_tests(open_store(db_path), "llm13")):
        assert sentence in text
    demo = app("overview", study="demo")
    assert "The paper's claims, tested on this study" not in [h.value for h in demo.subheader]


def test_merge_loss_shows_forgetting_on_held_out_tasks(app, db_path):
    """Issue 26: forgetting (the merge against the base on tasks outside the group) on the Merge loss
    page, from protocol.forgetting; Eq. 1's table never shows those rows."""
    from mergelab.analysis import protocol, views
    from mergelab.storage.roles import held_out_name

    import degenerate

    store = open_store(db_path)
    degenerate.make(store, "held", groups={"g": ["a", "b", "c"]}, pool=["d"])
    store.add_results(
        "held",
        [
            {"group_name": "", "model": "base", "task": "d", "method": "base", "metric": "accuracy", "score": 40.0},
            {"group_name": held_out_name("g"), "model": "merged:g:LA", "task": "d", "method": "LA",
             "metric": "accuracy", "score": 30.0},
        ],
    )  # fmt: skip
    assert "d" not in set(views.loss_table(store, "held")["task"])
    at = app("merge_loss", study="held")
    assert any("Forgetting" in h.value for h in at.subheader)
    frames = [getattr(d.value, "data", d.value) for d in at.dataframe]
    table = next(f for f in frames if "retained" in f.columns)
    row = table[table["level"] == "task"].iloc[0]
    assert (row["task"], row["change"], row["retained"]) == ("d", -10.0, 0.75)
    assert len(protocol.forgetting(store, "held")) == 2

"""Evidence you can weigh (issue 21): per-row records, an interval on every loss, direction-aware and
dependence-aware statistics, reliability and power — each checked against an independent
computation (scipy or plain numpy written here) on fixtures with known rows."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy import stats as sps

from mergelab.analysis import grouping, predictors, protocol, stats, story, uncertainty, views
from mergelab.storage.store import Store

import degenerate

METHODS = ["LA", "TA", "TIES"]


# --- a study made of per-row records, no model: degenerate.records_study -------------------------------
records_study = degenerate.records_study


def _loss(m, e):
    return 100 * (m - e) / e


def _plain_bootstrap(fn, n_rows: int, n_boot: int = 20000, seed: int = 123) -> np.ndarray:
    """An independent bootstrap: its own generator, its own resampling, ``fn(idx)`` per resample."""
    rng = np.random.default_rng(seed)
    return np.array([fn(rng.integers(0, n_rows, n_rows)) for _ in range(n_boot)])


# --- 2. an interval on every loss ----------------------------------------------------------------------
@pytest.fixture()
def rec_store(tmp_path):
    store = Store(tmp_path / "e.db")
    quality = {"a": 0.2, "b": 0.5, "c": 0.6, "d": 0.7}
    truth = records_study(
        store, "ev", {"g": list(quality)}, merged_p=lambda g, m, t: quality[t] + 0.02 * METHODS.index(m)
    )
    return store, truth


def test_loss_interval_is_a_paired_bootstrap_over_rows(rec_store):
    store, truth = rec_store
    table = protocol.loss_intervals(store, "ev").set_index(["task", "method"])
    e, m = truth[("", "expert", "a")], truth[("g", "TIES", "a")]
    row = table.loc[("a", "TIES")]
    assert row["loss"] == pytest.approx(_loss(m.mean(), e.mean()))
    plain = _plain_bootstrap(lambda i: _loss(m[i].mean(), e[i].mean()), len(e))
    assert row["ci_low"] == pytest.approx(np.percentile(plain, 2.5), abs=1.5)
    assert row["ci_high"] == pytest.approx(np.percentile(plain, 97.5), abs=1.5)
    assert row["se"] == pytest.approx(plain.std(), rel=0.1)
    # unpaired resampling (expert and merge drawn apart) would be wider: pairing is what we do
    unpaired = _plain_bootstrap(lambda i: _loss(m[i].mean(), e[np.roll(i, 1) % len(e)].mean()), len(e), 4000)
    assert np.percentile(unpaired, 97.5) - np.percentile(unpaired, 2.5) > 0.0  # defined; no claim on size


def test_best_loss_takes_the_max_inside_every_resample(rec_store):
    store, truth = rec_store
    best = protocol.best_loss_intervals(store, "ev", "g").set_index("task")
    e = truth[("", "expert", "b")]
    ms = [truth[("g", m, "b")] for m in METHODS]
    assert best.loc["b", "best_loss"] == pytest.approx(max(_loss(m.mean(), e.mean()) for m in ms))
    plain = _plain_bootstrap(lambda i: max(_loss(m[i].mean(), e[i].mean()) for m in ms), len(e))
    assert best.loc["b", "ci_low"] == pytest.approx(np.percentile(plain, 2.5), abs=1.5)
    assert best.loc["b", "ci_high"] == pytest.approx(np.percentile(plain, 97.5), abs=1.5)
    assert best.loc["b", "boot_mean"] == pytest.approx(plain.mean(), abs=0.5)


def test_worst_loss_and_a_swap_change_resample_shared_tasks_once(tmp_path):
    store = Store(tmp_path / "s.db")
    p = {"a": 0.3, "b": 0.55, "c": 0.6, "d": 0.7, "e": 0.65}
    truth = records_study(
        store,
        "sw",
        {"g": ["a", "b", "c", "d"]},
        swaps={"swap:g:a->e": ("g", "a", "e")},
        merged_p=lambda g, m, t: p[t] - (0.1 if g == "g" and t == "b" else 0),
        methods=["LA"],
    )
    eff = protocol.swap_effects(store, "sw").iloc[0]
    n = 200

    def worst(group, tasks, i):
        return min(_loss(truth[(group, "LA", t)][i].mean(), truth[("", "expert", t)][i].mean()) for t in tasks)

    before_tasks, after_tasks = ["a", "b", "c", "d"], ["e", "b", "c", "d"]
    assert eff["worst_before"] == pytest.approx(worst("g", before_tasks, slice(None)))
    assert eff["worst_after"] == pytest.approx(worst("swap:g:a->e", after_tasks, slice(None)))
    # independent: one draw of rows per task, used by both groups (tasks drawn independently)
    rng = np.random.default_rng(5)
    diffs = []
    for _ in range(6000):
        idx = {t: rng.integers(0, n, n) for t in "abcde"}
        b = min(
            _loss(truth[("g", "LA", t)][idx[t]].mean(), truth[("", "expert", t)][idx[t]].mean()) for t in before_tasks
        )
        a = min(
            _loss(truth[("swap:g:a->e", "LA", t)][idx[t]].mean(), truth[("", "expert", t)][idx[t]].mean())
            for t in after_tasks
        )
        diffs.append(a - b)
    assert eff["change_ci_low"] == pytest.approx(np.percentile(diffs, 2.5), abs=2.0)
    assert eff["change_ci_high"] == pytest.approx(np.percentile(diffs, 97.5), abs=2.0)
    assert eff["within_noise"] == (eff["change_ci_low"] <= 0 <= eff["change_ci_high"])


def test_a_loss_without_rows_or_with_a_zero_expert_says_why(tmp_path):
    import degenerate

    store = Store(tmp_path / "z.db")
    degenerate.zero_expert_study(store)
    table = protocol.loss_intervals(store, "zero")
    assert table["ci_low"].isna().all()
    assert (table["ci_note"] == uncertainty.NO_RECORDS).all()  # rows written without records
    records_study(store, "zr", {"g": ["a", "b", "c"]}, expert_p={"b": 0.0})
    table = protocol.loss_intervals(store, "zr").set_index("task")
    assert table.loc["b", "ci_note"].iloc[0] == uncertainty.ZERO_EXPERT and table.loc["b", "ci_low"].isna().all()
    assert table.loc["a", "ci_low"].notna().all()


# --- 3. direction ---------------------------------------------------------------------------------------
def test_the_sign_blind_reproduction_now_says_opposite():
    """Issue 21's reproduction: a perfect *positive* MDS–loss relation is the opposite of the paper's."""
    frame = pd.DataFrame({"mds": [1, 2, 3, 4, 5, 6, 7, 8.0], "best_loss": [-80, -70, -60, -50, -40, -30, -20, -10.0]})
    note = story.chart_note("mds_vs_loss", frame=frame)
    assert "opposite to the paper's direction" in note and "significant in" not in note
    flipped = story.chart_note("mds_vs_loss", frame=frame.assign(best_loss=-frame["best_loss"]))
    assert "significant in the paper's direction" in flipped


def test_correlation_is_one_sided_in_the_declared_direction():
    rng = np.random.default_rng(1)
    x = rng.normal(size=12)
    y = -0.6 * x + rng.normal(size=12)
    c = stats.correlation(x, y, expect=-1)
    assert c.p_expected == pytest.approx(sps.pearsonr(x, y, alternative="less").pvalue)
    assert c.p_two_sided == pytest.approx(sps.pearsonr(x, y).pvalue)
    lo, hi = np.tanh(np.arctanh(c.r) + np.array([-1, 1]) * 1.959964 / math.sqrt(12 - 3))
    assert (c.ci_low, c.ci_high) == pytest.approx((lo, hi), abs=1e-6)
    assert c.as_expected and c.supports == (c.p_expected < 0.05)
    other = stats.correlation(x, -y, expect=-1)
    assert not other.as_expected and not other.supports and other.p_expected == pytest.approx(1 - c.p_expected)


def test_table5_reports_direction_and_never_counts_the_wrong_sign(tmp_path):
    store = Store(tmp_path / "d.db")
    tasks = list("abcdefgh")
    good = {t: 0.3 + 0.06 * i for i, t in enumerate(tasks)}  # a high → better loss
    records_study(
        store,
        "dir",
        {"g": tasks},
        merged_p=lambda g, m, t: good[t],
        n_rows=300,
        mds={"g": {t: 1 + i for i, t in enumerate(tasks)}},
    )  # higher MDS, *better* loss: r > 0
    t5 = protocol.table5(store, "dir").set_index("group")
    frame = protocol.mds_vs_loss(store, "dir", "g")
    want = sps.pearsonr(frame["mds"], frame["best_loss"], alternative="less")
    assert t5.loc["g", "r"] > 0 and t5.loc["g", "p_expected"] == pytest.approx(want.pvalue)
    assert t5.loc["g", "direction"] == "opposite to the paper's direction"
    verdict, text = story._verdict(t5.reset_index())
    assert verdict == "contradicts" and "opposite" in text


# --- 4. groups by role, dependence ------------------------------------------------------------------------
def test_swaps_are_a_role_and_never_a_group(tmp_path):
    store = Store(tmp_path / "g.db")
    records_study(
        store,
        "roles",
        {"r1": list("abcd"), "r2": list("efgh")},
        swaps={"swap:r1:a->e": ("r1", "a", "e")},
        mds={
            "r1": dict(zip("abcd", [1, 2, 3, 4.0])),
            "r2": dict(zip("efgh", [4, 3, 2, 1.0])),
            "swap:r1:a->e": dict(zip("ebcd", [1, 2, 3, 4.0])),
        },
    )
    assert set(store.groups("roles")) == {"r1", "r2"}
    assert store.swaps("roles")["swap:r1:a->e"].removed == "a"
    t5 = protocol.table5(store, "roles")
    assert list(t5["group"]) == ["r1", "r2", "combined", "pooled"]
    anova = protocol.anova(store, "roles").set_index("factor")
    assert anova.loc["task", "n"] == 2 * 4 * len(METHODS)  # the swap's rows are not in Table 3


def test_a_spec_written_with_swap_named_groups_reads_them_as_swaps():
    from mergelab.study.spec import parse_spec

    spec = {
        "name": "s",
        "base": "org/base",
        "architecture": "causal",
        "adapters": {t: f"org/{t}" for t in "abcde"},
        "tasks": {t: {"data": "org/d", "labels": ["x", "y"]} for t in "abcde"},
        "groups": {"g": ["a", "b", "c"], "swap:g:a->e": ["e", "b", "c"]},
    }
    parsed = parse_spec(spec)
    assert [(s.group, s.remove, s.add) for s in parsed.swaps] == [("g", "a", "e")]
    assert set(parsed.evidence_groups) == {"g"} and parsed.groups["swap:g:a->e"] == ["e", "b", "c"]
    again = parse_spec(yaml.safe_load(yaml.safe_dump(parsed.model_dump(mode="json"))))
    assert again.groups == parsed.groups and again.swaps == parsed.swaps


def test_a_version_2_store_gets_its_swaps_a_role(tmp_path):
    import sqlite3

    from mergelab.storage import schema

    path = tmp_path / "v2.db"
    con = sqlite3.connect(path)
    v2 = schema.SCHEMA.replace("role TEXT DEFAULT 'group', meta TEXT DEFAULT '',", "role TEXT DEFAULT 'group',")
    for statement in v2.split(";"):
        if statement.strip() and "row_records" not in statement:
            con.execute(statement)
    con.execute("INSERT INTO meta VALUES ('schema_version', '2')")
    con.execute("INSERT INTO studies VALUES ('s', 's', 'live', '', '', 0)")
    con.executemany(
        "INSERT INTO task_groups(study_id, name, tasks, role) VALUES ('s', ?, ?, 'group')",
        [("r2", '["a", "b"]'), ("swap:r2:a->c", '["c", "b"]')],
    )
    con.commit()
    con.close()
    store = Store(path)
    assert store.migrated_from == 2 and store.schema_version() == 4
    assert list(store.groups("s")) == ["r2"]
    swap = store.swaps("s")["swap:r2:a->c"]
    assert (swap.parent, swap.removed, swap.added) == ("r2", "a", "c")
    assert store.row_records("s").empty


def test_overlapping_groups_are_counted_and_never_combined(tmp_path):
    groups = {"r1": list("abcd"), "r2": list("cdef"), "r3": list("ghij"), "r4": list("klmn")}
    ov = grouping.overlaps(groups)
    assert ov.to_dict("records") == [{"group_a": "r1", "group_b": "r2", "shared": 2}]
    assert grouping.disjoint_groups(groups) == ["r1", "r3", "r4"]
    assert "r1/r2 2" in grouping.overlap_warning(groups)


def test_fisher_combination_equals_the_formula():
    rs, ns = np.array([-0.5, -0.7, 0.1]), np.array([8, 10, 8])
    got = stats.fisher_combine(rs, ns, expect=-1)
    z = (np.arctanh(rs) * (ns - 3)).sum() / (ns - 3).sum()
    se = 1 / math.sqrt((ns - 3).sum())
    assert got.r == pytest.approx(math.tanh(z)) and got.p_expected == pytest.approx(sps.norm.cdf(z / se))
    assert (got.ci_low, got.ci_high) == pytest.approx((math.tanh(z - 1.96 * se), math.tanh(z + 1.96 * se)))


def test_cluster_bootstrap_resamples_whole_tasks():
    rng = np.random.default_rng(0)
    tasks = np.repeat(np.arange(10), 3)  # each task in 3 groups
    x = rng.normal(size=10)[tasks] + 0.1 * rng.normal(size=30)
    y = -0.5 * x + rng.normal(size=10)[tasks]
    lo, hi = stats.cluster_bootstrap_r(x, y, tasks, n_boot=3000, seed=0)
    plain = []  # independent: concatenate each drawn task's rows
    gen = np.random.default_rng(99)
    for _ in range(3000):
        idx = np.concatenate([np.flatnonzero(tasks == t) for t in gen.integers(0, 10, 10)])
        if np.ptp(x[idx]) > 0:
            plain.append(np.corrcoef(x[idx], y[idx])[0, 1])
    assert lo == pytest.approx(np.percentile(plain, 2.5), abs=0.03)
    assert hi == pytest.approx(np.percentile(plain, 97.5), abs=0.03)
    naive = [np.corrcoef(x[i], y[i])[0, 1] for i in gen.integers(0, 30, (3000, 30))]
    naive_width = np.percentile(naive, 97.5) - np.percentile(naive, 2.5)
    assert naive_width < 0.8 * (hi - lo)  # rows of one task resampled apart look like more evidence than there is


# --- 5. reliability and power ------------------------------------------------------------------------------
def test_detectable_r_matches_pwr_and_a_simulation():
    assert stats.detectable_r(8, one_sided=False) == pytest.approx(0.834, abs=0.002)  # R: pwr.r.test(n=8)
    r = stats.detectable_r(8)
    rng = np.random.default_rng(0)
    hits = 0
    for _ in range(4000):
        x = rng.normal(size=8)
        y = r * x + math.sqrt(1 - r * r) * rng.normal(size=8)
        hits += sps.pearsonr(x, y, alternative="greater").pvalue < 0.05
    assert 0.76 < hits / 4000 < 0.87  # pwr's approximation, within simulation noise of 80 %
    assert stats.groups_needed(-0.5, 8) == math.ceil(((1.6449 + 0.8416) / math.atanh(0.5)) ** 2 / 5)


def test_reliability_is_the_share_of_spread_that_is_not_noise(rec_store):
    store, _ = rec_store
    frame = protocol.mds_vs_loss(store, "ev", "g")
    rel = uncertainty.reliability(frame, uncertainty.draws_for(store, "ev"))
    assert rel.n_rows == 200
    observed = frame["best_loss"].var(ddof=1)
    noise = (frame["se"] ** 2).mean()
    assert rel.reliability == pytest.approx(1 - noise / observed)
    true = observed - noise
    assert rel.rows_for(0.8) == math.ceil(rel.n_rows * noise * 0.8 / (0.2 * true))
    t5 = protocol.table5(store, "ev").set_index("group")
    assert t5.loc["g", "reliability"] == pytest.approx(rel.reliability)
    assert t5.loc["g", "detectable_r"] == pytest.approx(stats.detectable_r(4))


# --- 6. the predictor comparison ---------------------------------------------------------------------------
def test_permutation_null_equals_a_plain_loop():
    rng = np.random.default_rng(3)
    strata = np.repeat([0, 1, 2], 6)
    y = rng.normal(size=18)
    xs = rng.normal(size=(2, 18))
    xs[1, 4] = np.nan
    got = stats.permutation_null(xs, y, strata, n_perm=500, seed=7)
    assert got.shape == (500, 2)
    # the null of a predictor is that of |r| under shuffling within strata: compare its quantiles
    gen = np.random.default_rng(11)
    plain = []
    for _ in range(4000):
        yp = y.copy()
        for s in range(3):
            w = np.flatnonzero(strata == s)
            yp[w] = y[gen.permutation(w)]
        ok = np.isfinite(xs[1])
        plain.append(abs(np.corrcoef(xs[1][ok], yp[ok])[0, 1]))
    assert np.percentile(got[:, 1], 95) == pytest.approx(np.percentile(plain, 95), abs=0.06)


def test_comparison_names_a_predictor_only_above_the_familywise_bar(tmp_path):
    store = Store(tmp_path / "p.db")
    tasks = list("abcdefgh")
    q = {t: 0.3 + 0.05 * i for i, t in enumerate(tasks)}
    records_study(
        store,
        "pc",
        {"g": tasks},
        merged_p=lambda g, m, t: q[t],
        n_rows=400,
        mds={"g": {t: 9.0 - i for i, t in enumerate(tasks)}},
    )  # higher MDS, worse loss
    comp = predictors.predictor_comparison(store, "pc", n_boot=300, n_perm=300)
    row = comp.set_index("predictor").loc["MDS (published)"]
    assert row["r"] < -0.9 and row["direction"] == "in the expected direction"
    assert row["beats_familywise"] and predictors.best_predictor(comp)["predictor"] == "MDS (published)"
    assert "MDS (published)" in story.predictor_sentence(comp)
    noise = comp.assign(beats_familywise=False)
    assert predictors.best_predictor(noise) is None and "No predictor beats" in story.predictor_sentence(noise)


# --- 7. one implementation, one schema --------------------------------------------------------------------
def test_report_prints_each_table_once(rec_store):
    store, _ = rec_store
    out = protocol.summary(store, "ev", n_boot=100)
    assert sum(k.startswith("table5") for k in out) == 1 and sum("anova" in k for k in out) == 1
    assert not hasattr(views, "table5") and not hasattr(views, "anova")


# --- 8. TA is not LA -----------------------------------------------------------------------------------------
def test_task_arithmetic_is_not_linear_averaging():
    from mergelab.merging import registry

    ta = registry.get("TA").resolve(8, {})
    la = registry.get("LA").resolve(8, {})
    assert ta["lambda"] == registry.TA_LAMBDA == 0.3 and ta["lambda"] != 1 / 8
    assert registry.get("TA").coefficients(ta) != [w / sum(la["weight"]) for w in la["weight"]]
    assert registry.get("TA").revision > 1


def test_identical_methods_are_one_level(tmp_path):
    store = Store(tmp_path / "i.db")
    records_study(store, "same", {"g": list("abcd")}, methods=["LA", "TIES"])
    res = store.results("same")
    ta = res[res.method == "LA"].assign(method="TA", model=lambda d: d["model"].str.replace("LA", "TA"))
    store.add_results("same", ta)
    labels = grouping.identical_methods(views.loss_table(store, "same"))
    assert labels == {"LA": "LA = TA", "TIES": "TIES", "TA": "LA = TA"}
    anova = protocol.anova(store, "same").set_index("factor")
    assert anova.loc["method", "levels"] == 2 and "LA = TA" in anova.loc["method", "note"]


def test_admission_applies_the_preregistered_rule(tmp_path):
    store = Store(tmp_path / "adm.db")
    records_study(
        store, "adm", {"g": ["good", "weak", "low"]}, expert_p={"good": 0.8, "weak": 0.45, "low": 0.1}, n_rows=300
    )
    base = [
        {"group_name": "", "model": "base", "task": t, "method": "base", "metric": "accuracy", "score": s}
        for t, s in {"good": 40.0, "weak": 40.0, "low": 2.0}.items()
    ]
    store.add_results("adm", base)
    rng = np.random.default_rng(0)
    store.add_row_records(
        "adm",
        [
            {
                "group_name": "",
                "model": "base",
                "task": t,
                "method": "base",
                "row": i,
                "row_id": f"{t}-{i}",
                "score": 100.0 * (rng.random() < p),
            }
            for t, p in {"good": 0.4, "weak": 0.4, "low": 0.02}.items()
            for i in range(300)
        ],
    )
    table = protocol.admission(store, "adm").set_index("task")
    assert table.loc["good", "admitted"] and not table.loc["weak", "admitted"]
    assert "gain" in table.loc["weak", "why_not"]
    assert not table.loc["low", "admitted"] and "one row moves Eq. 1" in table.loc["low", "why_not"]
    assert table.loc["good", "points_per_row"] == pytest.approx(1e4 / (300 * table.loc["good", "expert_score"]))


def _comparison_row(**kw) -> dict:
    row = dict(
        level="task in group",
        predictor="MDS cosine L20 last",
        r=-0.74,
        ci_low=-0.90,
        ci_high=0.04,
        direction="in the expected direction",
        familywise_q95=0.70,
        beats_null=True,
        beats_familywise=True,
        groups_expected=0,
        groups_tested=0,
    )
    return {**row, **kw}


def test_a_predictor_above_the_bar_whose_interval_covers_zero_is_not_called_a_finding():
    """llm13 after the TA fix: one of 36 signals clears the family-wise permutation bar, but its
    task-cluster interval (tasks recur across the overlapping groups) covers 0. The sentence must say
    it is within noise, not that it tracks collapse."""
    text = story.predictor_sentence(pd.DataFrame([_comparison_row()]))
    assert "covers 0" in text and "within noise" in text and "not a finding" in text
    clear = story.predictor_sentence(pd.DataFrame([_comparison_row(ci_high=-0.2)]))
    assert "covers 0" not in clear and "within noise" not in clear


def test_normalized_scores_are_merged_over_expert_with_row_bootstrap_intervals(tmp_path):
    """MergeBench's normalized performance (merged ÷ expert per task, then averaged over the group and
    over each declared category), checked against a plain-numpy paired bootstrap over rows."""
    store = Store(tmp_path / "n.db")
    merged = {"a": 0.45, "b": 0.55, "c": 0.7}
    truth = degenerate.records_study(
        store,
        "ns",
        {"g": ["a", "b", "c"]},
        expert_p={"a": 0.9, "b": 0.6, "c": 0.7},
        merged_p=lambda g, m, t: merged[t],
        methods=("TIES",),
        n_rows=300,
    )
    draws = uncertainty.Draws(store, "ns", n_boot=2000)
    frame = uncertainty.normalized_scores(
        draws, views.loss_table(store, "ns"), {"hard": ["a", "b"], "none here": ["z"]}
    )
    assert list(frame["level"]) == ["task"] * 3 + ["group mean", "category: hard"]
    ratio = {t: truth[("g", "TIES", t)].mean() / truth[("", "expert", t)].mean() for t in "abc"}
    per_task = frame[frame.level == "task"].set_index("task")
    for t in "abc":
        assert per_task.loc[t, "normalized"] == pytest.approx(ratio[t])
    group = frame[frame.level == "group mean"].iloc[0]
    hard = frame[frame.level == "category: hard"].iloc[0]
    assert group["normalized"] == pytest.approx(np.mean(list(ratio.values())))
    assert hard["normalized"] == pytest.approx((ratio["a"] + ratio["b"]) / 2) and hard["n_tasks"] == 2
    # independent: resample each task's rows (expert and merge paired), the mean over tasks inside
    rng = np.random.default_rng(1)
    means = []
    for _ in range(4000):
        r = []
        for t in "abc":
            idx = rng.integers(0, 300, 300)
            r.append(truth[("g", "TIES", t)][idx].mean() / truth[("", "expert", t)][idx].mean())
        means.append(np.mean(r))
    low, high = np.percentile(means, [2.5, 97.5])
    assert group["ci_low"] == pytest.approx(low, abs=0.02) and group["ci_high"] == pytest.approx(high, abs=0.02)
    assert group["ci_low"] < group["normalized"] < group["ci_high"]


def test_the_strongest_signal_is_read_at_the_claims_level_first():
    """The shipped llm study: a pair-level conflict metric (r = −0.55, its task-resampled interval
    covering 0) had a larger |r| than the same metric per task in its group (r = −0.52, interval
    −0.73 to −0.18, all four disjoint groups the expected way), and the Overview called the signal
    'within noise, not a finding' while H2 said it predicts the loss. The task-in-group level is the
    claim's level (and the one the disjoint groups combine at): its strongest signal above the bar
    is the one stated; the pair level is read only when no task-level signal clears its bar."""
    task = _comparison_row(predictor="mean sign_change_ratio", r=-0.52, ci_low=-0.73, ci_high=-0.18,
                           groups_expected=4, groups_tested=4, familywise_q95=0.47)  # fmt: skip
    pair = _comparison_row(level="pair", predictor="sign_change_ratio", r=-0.55, ci_low=-0.91, ci_high=0.05,
                           familywise_q95=0.45)  # fmt: skip
    comp = pd.DataFrame([pair, task])
    best = predictors.best_predictor(comp)
    assert (best["level"], best["predictor"]) == ("task in group", "mean sign_change_ratio")
    text = story.predictor_sentence(comp)
    assert "mean sign_change_ratio** (task in group)" in text and "within noise" not in text
    weak_task = _comparison_row(r=-0.2, beats_familywise=False, beats_null=False)
    assert predictors.best_predictor(pd.DataFrame([pair, weak_task]))["level"] == "pair"
    only_pair = story.predictor_sentence(pd.DataFrame([pair, weak_task]))
    assert "pairs share tasks" in only_pair and "tasks recur across groups" not in only_pair


def test_table4_words_say_the_pairs_share_tasks():
    """Table 4's p-values treat the pairs as independent (as the paper does), but 28 pairs of 8 tasks
    share them: the sentences must say so beside the counts of significant cells."""
    t4 = pd.DataFrame(
        [
            {"metric": "sign_change_ratio", "method": "TA", "n": 28, "r": -0.55, "p_expected": 0.001,
             "direction": "in the expected direction"},
            {"metric": "hiddensim", "method": "TA", "n": 28, "r": 0.44, "p_expected": 0.009,
             "direction": "in the expected direction"},
        ]
    )  # fmt: skip
    text = " ".join(story.table4_sentences(t4, pd.DataFrame(columns=["method", "reliability"])))
    assert "**1 of 1**" in text
    assert "share tasks" in text and "8 tasks" in text and "overstate" in text

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from mergelab.analysis import equations
from mergelab.analysis.equations import AnalysisError


def _distances(points):
    diff = points[:, None, :] - points[None, :, :]
    return np.sqrt((diff**2).sum(-1))


point_sets = st.integers(3, 9).flatmap(
    lambda n: arrays(np.float64, (n, 4), elements=st.floats(-10, 10, allow_nan=False))
)


@settings(max_examples=60, deadline=None)
@given(point_sets)
def test_hiddensim_invariants(points):
    dist = _distances(points)
    off = dist[~np.eye(len(points), dtype=bool)]
    if np.isclose(off.max(), off.min(), rtol=1e-12, atol=0):
        with pytest.raises(AnalysisError):
            equations.hiddensim(dist)
        return
    sim = equations.hiddensim(dist)
    assert np.allclose(sim, sim.T)
    assert np.all((sim >= 0) & (sim <= 1))
    assert np.all(np.diag(sim) == 1)
    # the closest pair gets 1, the farthest 0
    iu = np.triu_indices(len(points), 1)
    assert sim[iu][np.argmin(dist[iu])] == pytest.approx(1.0)
    assert sim[iu][np.argmax(dist[iu])] == pytest.approx(0.0)
    scores = equations.mds(sim)
    assert np.all(scores >= 1 - 1e-12)
    # permutation equivariance of both Eq. 2 and Eq. 3
    perm = np.random.default_rng(0).permutation(len(points))
    sim_p = equations.hiddensim(dist[np.ix_(perm, perm)])
    assert np.allclose(sim_p, sim[np.ix_(perm, perm)])
    assert np.allclose(equations.mds(sim_p), scores[perm])


def test_hiddensim_worked_example():
    dist = np.array([[0, 1, 3], [1, 0, 2], [3, 2, 0]], dtype=float)
    sim = equations.hiddensim(dist)
    # max(D)=3, min(D)=1: sim(0,1)=(3-1)/2=1, sim(1,2)=(3-2)/2=0.5, sim(0,2)=0
    assert np.allclose(sim, [[1, 1, 0], [1, 1, 0.5], [0, 0.5, 1]])
    assert np.allclose(equations.mds(sim), [1 / 0.5, 1 / 0.75, 1 / 0.25])


def test_hiddensim_equal_distances_is_a_clear_error():
    dist = np.ones((4, 4)) - np.eye(4)
    with pytest.raises(AnalysisError, match="all pairwise distances are equal"):
        equations.hiddensim(dist)


@pytest.mark.parametrize(
    "bad, msg",
    [
        (np.ones((2, 3)), "square"),
        (np.array([[0.0, 1.0], [2.0, 0.0]]), "symmetric"),
        (np.array([[0.0, np.nan], [np.nan, 0.0]]), "NaN"),
        (np.zeros((1, 1)), "at least 2"),
    ],
)
def test_hiddensim_rejects_bad_matrices(bad, msg):
    with pytest.raises(AnalysisError, match=msg):
        equations.hiddensim(bad)


def test_mds_infinite_when_a_task_is_farthest_from_all():
    sim = np.array([[1, 0, 0], [0, 1, 1], [0, 1, 1.0]])
    assert np.isinf(equations.mds(sim)[0])


def test_merging_loss_eq1():
    assert equations.merging_loss(81.0, 82.7) == pytest.approx(-2.0556, abs=1e-3)
    assert np.allclose(equations.merging_loss([50, 100], [100, 100]), [-50, 0])
    assert equations.merging_loss(0.0, 86.1) == -100.0
    with pytest.raises(AnalysisError, match="expert's score is 0"):
        equations.merging_loss(1.0, 0.0)


@settings(max_examples=50, deadline=None)
@given(st.floats(0, 1e3), st.integers(1, 10_000))
def test_theorem1_bound_ordering(delta, d):
    lower, upper = equations.theorem1_bounds(delta, d)
    assert 0 <= lower <= upper <= delta**2 / 2 + 1e-9
    assert lower == pytest.approx(delta**2 / 4)


def test_theorem1_bounds_rejects_bad_input():
    with pytest.raises(AnalysisError):
        equations.theorem1_bounds(-1.0, 8)
    with pytest.raises(AnalysisError):
        equations.theorem1_bounds(1.0, 0)


def test_minimum_enclosing_ball_known_shapes():
    centre, radius, w = equations.minimum_enclosing_ball([[0, 0], [2, 0]])
    assert radius == pytest.approx(1.0) and np.allclose(centre, [1, 0])
    tri = np.array([[0, 0], [1, 0], [0.5, np.sqrt(3) / 2]])
    centre, radius, w = equations.minimum_enclosing_ball(tri)
    assert radius == pytest.approx(1 / np.sqrt(3), rel=1e-6)
    assert w.sum() == pytest.approx(1) and np.all(w >= 0)
    # an interior point does not change the ball
    _, r2, _ = equations.minimum_enclosing_ball(np.vstack([tri, [[0.5, 0.3]]]))
    assert r2 == pytest.approx(radius, rel=1e-6)


@settings(max_examples=25, deadline=None)
@given(st.integers(2, 7), st.integers(2, 12), st.integers(0, 10_000))
def test_jung_radius_inside_theorem1_interval(n, d, seed):
    states = np.random.default_rng(seed).normal(size=(n, 3, d))
    dist = equations.expert_distance_matrix(states)
    lower, upper = equations.theorem1_bounds(dist.max(), d)
    achieved = equations.jung_radius(states)
    factor = d / (2 * (d + 1))
    assert lower - 1e-6 <= achieved <= factor * equations.per_input_diameter_sq(states) + 1e-6
    assert upper <= factor * equations.per_input_diameter_sq(states) + 1e-9
    # every merge obeys the converse, e.g. the plain average of the experts' states
    _, worst = equations.distortion(states.mean(axis=0), states)
    assert worst >= lower - 1e-9


def test_distortion_shapes_and_values():
    experts = np.stack([np.zeros((2, 3)), np.ones((2, 3))])
    per, worst = equations.distortion(np.full((2, 3), 0.5), experts)
    assert np.allclose(per, [0.75, 0.75]) and worst == pytest.approx(0.75)
    with pytest.raises(AnalysisError):
        equations.distortion(np.zeros((3, 3)), experts)


def test_theorem1_upper_bound_gap_is_real():
    """The proof's step Δ_x ≤ Δ fails: with 3 experts whose farthest pair changes from input to
    input, the per-input Jung construction exceeds d/(2(d+1))·Δ²."""
    states = np.array([[[0.0], [1.0]], [[2.0], [0.0]], [[1.0], [2.0]]])  # 3 experts, 2 inputs, d=1
    report = equations.theorem1_report(states, merged_states=states.mean(axis=0))
    assert report["delta"] ** 2 == pytest.approx(2.5)  # pairs: 2.5, 1.0, 2.5
    assert report["upper"] == pytest.approx(0.625)  # d/(2(d+1)) = 1/4
    assert report["jung_distortion"] == pytest.approx(1.0)  # range 2 on both inputs: r = 1
    assert report["jung_distortion"] > report["upper"] + 0.3
    assert report["upper_per_input"] == pytest.approx(1.0)
    assert report["delta_max"] >= report["lower"]

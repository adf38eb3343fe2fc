import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from mergelab.io.adapters import load_adapter_set
from mergelab.merging import conflicts

from tinymodels import make_causal_base, make_lora


@pytest.fixture(scope="module")
def aset(tmp_path_factory):
    root = tmp_path_factory.mktemp("conf")
    base = make_causal_base(root / "base")
    a = make_lora(base, root / "a", 0)
    b = make_lora(base, root / "b", 1, r=6)
    neg = root / "neg"  # a's exact opposite: flip the sign of every B
    shutil.copytree(a, neg)
    state = load_file(neg / "adapter_model.safetensors")
    save_file({k: (-v if "lora_B" in k else v) for k, v in state.items()}, neg / "adapter_model.safetensors")
    twin = root / "twin"
    shutil.copytree(a, twin)
    return load_adapter_set(base, {"a": a, "b": b, "neg": neg, "twin": twin})


def _get(frame, x, y, name):
    return frame.query("task_a == @x and task_b == @y and name == @name")["value"].item()


def test_extremes(aset):
    f = conflicts.conflict_metrics(aset)
    assert len(f) == 6 * 4
    assert _get(f, "a", "twin", "magnitude_change_ratio") == pytest.approx(0)
    assert _get(f, "a", "twin", "sign_change_ratio") == pytest.approx(0)
    assert _get(f, "a", "twin", "task_vector_cosine") == pytest.approx(1)
    assert _get(f, "a", "neg", "magnitude_change_ratio") == pytest.approx(1)
    assert _get(f, "a", "neg", "sign_change_ratio") == pytest.approx(1)
    assert _get(f, "a", "neg", "conflicting_magnitude_change_ratio") == pytest.approx(1)
    assert _get(f, "a", "neg", "task_vector_cosine") == pytest.approx(-1)


def test_streamed_equals_whole_vector(aset):
    f = conflicts.conflict_metrics(aset)
    by = {a.name: torch.cat([a.delta(m).reshape(-1).double() for m in aset.module_keys]) for a in aset.adapters}
    x, y = by["a"], by["b"]
    opp = x * y < 0
    mag = (x.abs() + y.abs()).sum()
    assert _get(f, "a", "b", "magnitude_change_ratio") == pytest.approx(float((x - y).abs().sum() / mag))
    assert _get(f, "a", "b", "sign_change_ratio") == pytest.approx(float(opp.double().mean()))
    assert _get(f, "a", "b", "conflicting_magnitude_change_ratio") == pytest.approx(
        float((x - y).abs()[opp].sum() / mag)
    )
    assert _get(f, "a", "b", "task_vector_cosine") == pytest.approx(float(x @ y / (x.norm() * y.norm())))

"""A method is its registration on the command line too (issues 24, 25): each method's parameters are
parsed by its own declaration once ``--method`` is known, every registered method merges from the CLI
with each of its parameters at a non-default value, a parameter may share a command flag's name."""

from __future__ import annotations

import pytest
import torch

from mergelab import cli
from mergelab.merging import registry

from tinymodels import make_causal_base, make_lora

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli-methods")
    base = make_causal_base(root / "base")
    return base, [make_lora(base, root / f"a{i}", i) for i in range(2)]


def _merge(models, tmp_path, *extra) -> int:
    base, adapters = models
    return cli.main(
        [
            "merge",
            "--base",
            str(base),
            "--adapters",
            *map(str, adapters),
            "--out",
            str(tmp_path / "out"),
            "--device",
            "cpu",
            *extra,
        ]
    )


def _non_default(p: registry.Param):
    """A valid value other than the parameter's default, as command-line words."""
    if p.kind is bool:
        return ["false" if p.default else "true"]
    if p.default:
        value = p.default / 2
    else:
        lo, hi = p.minimum or 0.0, p.maximum if p.maximum is not None else 2.0
        value = (lo + hi) / 2
    value = p.kind(value) if p.kind is int else round(value, 4)
    return [str(value), str(value)] if p.per_adapter else [str(value)]


CASES = [(m.name, p) for m in registry.METHODS.values() for p in m.params]


@pytest.mark.parametrize("method,param", CASES, ids=[f"{m}-{p.name}" for m, p in CASES])
def test_every_method_merges_with_each_parameter_at_a_non_default_value(models, tmp_path, method, param):
    from mergelab.cli.method_params import flag

    words = _non_default(param)
    assert _merge(models, tmp_path, "--method", method, flag(param), *words) == 0
    assert (tmp_path / "out").is_dir()
    # the same value through --param NAME=VALUE
    assert _merge(models, tmp_path, "--method", method, "--param", f"{param.name}={','.join(words)}") == 0


@pytest.mark.parametrize(
    "args",
    [
        ["--method", "knots", "--density", "0.5"],
        ["--method", "core_ties", "--density", "0"],
        ["--method", "ties", "--density", "0.5", "0.3"],
        ["--method", "TA", "--lambda", "0.5"],
    ],
)
def test_the_same_flag_means_each_methods_own_parameter(models, tmp_path, args):
    assert _merge(models, tmp_path, *args) == 0


@pytest.mark.parametrize(
    "args,message",
    [
        (["--method", "knots", "--density", "1.5"], "KnOTS: density = 1.5 is outside [0.0, 1.0]"),
        (["--method", "knots", "--density", "nan"], "KnOTS: density must be a finite number"),
        (["--method", "ties", "--t", "0.3"], "TIES does not take --t"),
        (["--method", "tsv", "--param", "density=0.2"], "TSV-M: --param takes NAME=VALUE with NAME one of ['lambda']"),
        (["--method", "ties", "--density"], "--density needs a value"),
        (["--method", "della", "--epsilon", "0.6"], "DELLA: density ± epsilon must lie inside (0, 1)"),
    ],
)
def test_a_wrong_parameter_is_one_line_naming_the_method(models, tmp_path, capsys, args, message):
    capsys.readouterr()
    assert _merge(models, tmp_path, *args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err


def test_slerp_of_three_refuses_t(models, tmp_path, capsys):
    base, adapters = models
    capsys.readouterr()
    code = cli.main(
        [
            "merge",
            "--base",
            str(base),
            "--adapters",
            *map(str, adapters),
            str(adapters[0]),
            "--method",
            "slerp",
            "--t",
            "0.3",
            "--out",
            str(tmp_path / "o"),
            "--device",
            "cpu",
            "--ignore-base-name",
        ]
    )
    assert code == 2 and "t applies to 2 adapters" in capsys.readouterr().err


def test_a_method_may_name_a_parameter_like_a_command_flag(models, tmp_path, capsys):
    """A toy method with parameters named rank and out: every command still starts; they are
    reached by --param, and --rank / --out stay the command's."""

    def merge(deltas, values, ctx):
        return torch.stack(deltas).mean(0) * values["rank"] / 4

    registry.register(
        registry.Method(
            "toy_rank",
            "Toy rank",
            "mean × rank / 4",
            merge=merge,
            params=(
                registry.Param("rank", float, 4.0, "a rank", minimum=0.0),
                registry.Param("out", float, 1.0, "unused", minimum=0.0),
            ),
        )
    )
    try:
        capsys.readouterr()
        assert cli.main(["methods"]) == 0 and "toy_rank" in capsys.readouterr().out
        cli.build_parser()  # no argparse conflict
        assert _merge(models, tmp_path, "--method", "toy_rank", "--param", "rank=2") == 0
        assert _merge(models, tmp_path, "--method", "toy_rank", "--format", "adapter", "--rank", "4") == 0
    finally:
        registry.unregister("toy_rank")

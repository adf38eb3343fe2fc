"""Commands on studies: run, worker, report, train, and the bundled studies' builders (demo)."""

from __future__ import annotations

import importlib.util
import json
import sys
import time
from pathlib import Path

from .common import check_ray_address, finish_line, grants, open_store
from .progress import event_printer


def cmd_run(args) -> int:
    from ..storage import jobs
    from ..study import executors, planner
    from ..study.spec import parse_spec

    spec = parse_spec(Path(args.spec))
    executor = args.executor or spec.executor
    address = args.address or spec.ray_address
    if executor == "ray":  # an unreachable cluster fails here, before the store is touched
        check_ray_address(address, "--address" if args.address else "ray_address")
    store = open_store(args.db)
    spec, counts = planner.prepare_spec(store, spec, grants=grants(args), replace=args.replace)
    if args.recompute:
        n = jobs.requeue(store, spec.name, [u["unit_key"] for u in planner.plan_units(spec)])
        print(
            f"--recompute: {n} units queued again; their stored results are replaced one by one as each finishes",
            file=sys.stderr,
        )
    if args.retry_failed:
        n = jobs.retry_failed(store, spec.name) + jobs.requeue_cancelled(store, spec.name)
        print(f"--retry-failed: {n} failed or cancelled units queued again", file=sys.stderr)
    status = jobs.status_counts(store, spec.name)
    print(
        f"study {spec.name!r}: {counts['new']} new units, {counts['existing']} already planned "
        f"({status.get('done', 0)} done); store {store.path}",
        file=sys.stderr,
    )
    on_event, state = event_printer()
    state["total"] = int(status.get("queued", 0) + status.get("running", 0))
    started = time.time()
    out = executors.run_worker(
        store,
        spec.name,
        device=args.device,
        grants=grants(args),
        on_event=on_event,
        executor=executor,
        address=address,
        actors=args.actors,
    )
    if "bar" in state:
        state["bar"].close()
    if state.get("actors"):
        print(
            "units per Ray actor: " + ", ".join(f"{a} {n}" for a, n in sorted(state["actors"].items())), file=sys.stderr
        )
    if state.get("timing"):
        print(
            "time by unit kind (count, seconds in all, mean, largest resident memory at a unit's end):", file=sys.stderr
        )
        for kind, (n, secs, rss) in state["timing"].items():
            print(f"  {kind:14s} {n:5d} {secs:9.1f} s {secs / n:7.2f} s  {rss:7.0f} MB", file=sys.stderr)
    return finish_line(store, spec.name, out, time.time() - started)


def cmd_worker(args) -> int:
    from ..storage import jobs
    from ..study import executors

    if args.executor == "ray":
        check_ray_address(args.address, "--address")
    store = open_store(args.db)
    lock = None
    if args.dashboard:  # the one worker the dashboard starts per store: a second one stops here
        lock = jobs.dashboard_lock(store)
        if lock is None:
            print("the dashboard's worker for this store is already running", file=sys.stderr)
            return 0
    on_event, state = event_printer()
    started = time.time()
    out = executors.run_worker(
        store,
        args.study,
        device=args.device,
        grants=grants(args),
        stop_when_empty=not args.forever,
        on_event=on_event,
        executor=args.executor or "local",
        address=args.address,
        actors=args.actors,
    )
    if "bar" in state:
        state["bar"].close()
    for reason in state.get("refused", []):
        print(f"not run: {reason}", file=sys.stderr)
    if args.study:
        return finish_line(store, args.study, out, time.time() - started)
    print(f"worker finished: {out['done']} done, {out['failed']} failed", file=sys.stderr)
    return 1 if out["failed"] or state.get("refused") else 0


def _stored_study(args, command: str) -> tuple:
    """(store, study name) from ``SPEC`` or ``--study``, or one clear error."""
    if args.spec:
        from ..study.spec import parse_spec  # not imported for --study: `report` from its cache is ~0.5 s

        study = parse_spec(Path(args.spec)).name
    elif args.study:
        study = args.study
    else:
        raise ValueError(f"name the study: mergelab {command} STUDY.yaml, or mergelab {command} --study NAME")
    store = open_store(args.db)
    if not store.has_study(study):
        raise ValueError(f"study {study!r} is not in the store {store.path}; run it first")
    return store, study


def cmd_swap(args) -> int:
    from ..analysis import protocol, story, views

    store, study = _stored_study(args, "swap")
    groups = store.groups(study)
    if args.group is not None and args.group not in groups:
        raise ValueError(f"--group {args.group!r} is not a group of {study}: {', '.join(groups) or 'none'}")
    group = args.group or protocol.worst_group(store, study)
    if group is None:
        raise ValueError(f"no group of {study} has a merged score for every task yet: name one with --group")
    known = set(views.spec_dict(store, study).get("tasks") or {})
    for t in args.candidates or []:
        if t not in known:
            raise ValueError(f"--candidates: {t!r} is not a task of {study}")
    if len(groups[group]) < 3:
        raise ValueError(f"{group} has {len(groups[group])} tasks: MDS needs at least 3 to rank a swap")
    pool = protocol.swap_pool(store, study, group, args.candidates)
    if not views.has_states(store, study, [*groups[group], *pool]):
        raise ValueError(f"hidden states of {group}'s tasks and the candidates are not stored yet: run the study first")
    advice = protocol.swap_advice(store, study, group, pool=args.candidates)
    task, worst, collapsed = story.worst_task(store, study, group)
    removed, now = advice.attrs["removed"], advice.attrs["current_worst_mds"]
    print(
        f"{group}: worst best-loss {worst:+.1f} % ({task}{', collapsed' if collapsed else ''}); "
        f"take out {removed} (highest MDS, {now:.2f}); {len(advice)} candidates ranked by the new "
        "group's worst MDS, best first",
        file=sys.stderr,
    )
    print(advice.to_csv(index=False), end="")
    return 0


def cmd_report(args) -> int:
    from ..storage.report_cache import cached_report

    store, study = _stored_study(args, "report")
    if args.format == "lm-eval":
        from ..analysis.lm_eval_results import documents
        from ..storage.lm_eval_files import write_lm_eval

        if not args.out:
            raise ValueError("--format lm-eval writes files: give --out FOLDER")
        written = write_lm_eval(documents(store, study), Path(args.out))
        models = len({p.parent for p in written})
        print(f"wrote {len(written)} lm-eval files for {models} models under {args.out}", file=sys.stderr)
        return 0
    if args.no_cache:
        text = _report_text(store, study, args.format)
    else:
        text, _ = cached_report(store, study, args.format, lambda: _report_text(store, study, args.format))
    sys.stdout.write(text)
    return 0


def _report_text(store, study: str, fmt: str) -> str:
    """The whole report of ``study`` as ``mergelab report --format fmt`` prints it."""
    from ..analysis import hypotheses, protocol

    summary = protocol.summary(store, study)
    summary["hypotheses"] = hypotheses.hypothesis_tests(
        store, study, t5=summary["table5"], swaps=summary.get("swaps"), comparison=summary.get("predictors")
    )
    if fmt == "markdown":
        from ..analysis.markdown_report import document

        return document(study, summary, summary["hypotheses"])
    if fmt == "json":
        clean = {k: v.astype(object).where(v.notna(), None).to_dict(orient="records") for k, v in summary.items()}
        return json.dumps(clean, indent=2, default=float) + "\n"
    return "".join(f"# {name}\n{frame.to_csv(index=False, na_rep='undefined')}\n" for name, frame in summary.items())


def cmd_train(args) -> int:
    from tqdm import tqdm

    from ..study.spec import parse_spec
    from ..study.train import TrainConfig, train_study

    spec = parse_spec(Path(args.spec), adapters_exist=False)
    config = TrainConfig(
        rank=args.rank,
        alpha=args.alpha or 2 * args.rank,
        targets=args.targets,
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
    )
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
            print(
                f"{task}: {res['steps']} steps in {res['seconds']} s, loss {res['loss_first_10']:.3f} → "
                f"{res['loss_last_10']:.3f}",
                file=sys.stderr,
            )

    train_study(spec, args.tasks, config, force=args.force, on_task=on_task, progress_for=progress_for)
    return 0


def cmd_demo(args) -> int:
    from ..config import DATA_DIR

    demo = DATA_DIR / "demo"
    if args.demo_command == "build-data":
        from ..study.bundled.demo_tasks import build

        made = build(demo / "tasks", seed=args.seed)
        for name, m in made.items():
            print(f"{name}: {m['rows']} labels {m['labels']}")
        return 0
    if args.demo_command == "snapshot":
        from ..storage.snapshot import export

        store = open_store(args.db)
        if not store.has_study(args.study):
            raise ValueError(f"study {args.study!r} is not in the store {store.path}")
        out = Path(args.out) if args.out else DATA_DIR / args.study / "results"
        spec_path = Path(args.spec) if args.spec else DATA_DIR / args.study / "study.yaml"
        if not spec_path.is_file():
            raise ValueError(f"no study spec at {spec_path}: give --spec, so only the planned units ship")
        from ..study import planner
        from ..study.spec import parse_spec

        planned = {u["unit_key"] for u in planner.plan_units(parse_spec(spec_path))}
        export(store, args.study, out, units=planned)
        print(f"wrote {out} (results.csv, pair_metrics.csv, jobs.csv, states/)")
        return 0
    if args.demo_command == "build-llm-data":
        from ..study.bundled.llm_pool import LEGACY_DIR_NAME
        from ..study.bundled.llm_pool import build as build_llm

        for name, m in build_llm(
            DATA_DIR / "llm" / "tasks", seed=args.seed, legacy_dir=DATA_DIR / LEGACY_DIR_NAME / "tasks"
        ).items():
            print(f"{name}: {m['kind']}, rows {m['rows']}")
        return 0
    if args.demo_command == "train":
        from ..study.bundled.demo_train import train_all

        train_all(demo / "tasks", demo / "adapters", seed=args.seed, only=args.tasks)
        return 0
    raise ValueError(f"unknown demo command {args.demo_command!r}")


def cmd_dashboard(args) -> int:
    """Open the dashboard on the store (the bundled studies load into it the first time)."""
    import os
    import subprocess

    from ..config import APP_ROOT, default_db_path

    if importlib.util.find_spec("streamlit") is None:  # looked up, never imported: the engine stays UI-free
        raise ValueError("the dashboard needs Streamlit: pip install 'mergelab[dashboard]'")
    if not (APP_ROOT / "app.py").is_file():
        raise ValueError(
            f"the dashboard's files are not in {APP_ROOT}: install MergeLab from its wheel or run "
            "from a checkout (streamlit run app.py)"
        )
    db = Path(args.db).resolve() if args.db else default_db_path()
    env = {**os.environ, "MERGELAB_DB": str(db)}
    print(f"MergeLab dashboard at http://{args.address}:{args.port} (store {db}); Ctrl-C stops it", file=sys.stderr)
    return subprocess.call(
        [
            sys.executable,
            "-m",
            "streamlit",
            "run",
            str(APP_ROOT / "app.py"),
            "--server.address",
            args.address,
            "--server.port",
            str(args.port),
            "--server.headless",
            "true",
        ],
        cwd=APP_ROOT,
        env=env,
    )

"""The command line's words: every command, its options and the function that runs it."""

from __future__ import annotations

import argparse

from ..merging import registry
from . import merge_commands as merging
from . import method_params
from . import study_commands as studies
from .common import Parser, positive_int


def _executor_flags(p) -> None:
    p.add_argument(
        "--executor",
        choices=["local", "ray"],
        help="run units here (local) or on a Ray cluster (default: the study's `executor:`, else local)",
    )
    p.add_argument(
        "--address",
        help="the Ray cluster: auto (a cluster started with `ray start` on this "
        "machine) or ray://host:10001; none starts a local one",
    )
    p.add_argument("--actors", type=positive_int, help="Ray actors (default: one per GPU, else one per CPU)")


def _grant_flags(p) -> None:
    p.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="allow a study that sets trust_remote_code: true to run Python from its base folder",
    )
    p.add_argument(
        "--allow-pickle",
        action="store_true",
        help="allow a study that sets allow_pickle: true to load pickle (.bin) weights",
    )


DESCRIPTION = "`mergelab` command line. Bad input prints one clear line and exits 2 — never a traceback."


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = Parser(prog="mergelab", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"mergelab {__version__}")
    parser.add_argument(
        "--log-level",
        choices=["debug", "info", "warning", "error"],
        default="warning",
        help="how much of the library's log to show on stderr (workers started by the dashboard "
        "log at info into worker.log)",
    )
    parser.add_argument(
        "--threads",
        metavar="N",
        help="intra-op CPU threads for this command and the workers it starts (default: $MERGELAB_THREADS, "
        "else $OMP_NUM_THREADS, else the cores this process may use: affinity and cgroup quota); idle "
        "threads wait passively unless $OMP_WAIT_POLICY says otherwise",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    def base_args(p, from_mergekit: bool = False):
        p.add_argument("--base", required=not from_mergekit, help="base model: hub id, local folder or .gguf file")
        p.add_argument("--adapters", nargs="+", required=not from_mergekit, help="PEFT LoRA folders or hub ids")
        p.add_argument(
            "--method",
            default=None,
            dest="method_given",
            help=f"one of {sorted(registry.METHODS)} or {sorted(registry.PAPER_METHODS)} (default ties)",
        )
        p.add_argument("--seed", type=int, default=0, help="seed for random methods (DARE, DELLA)")
        p.add_argument(
            "--param",
            action="append",
            metavar="NAME=VALUE",
            help="a parameter of the method (any; its own flags, listed below, work too)",
        )
        p.epilog = method_params.epilog()
        p.formatter_class = argparse.RawDescriptionHelpFormatter

    m = sub.add_parser("merge", help="merge adapters in adapter space and save the result")
    base_args(m, from_mergekit=True)
    m.add_argument(
        "--from-mergekit",
        metavar="YAML",
        help="take base, adapters, method and parameters from a mergekit config (models as base+adapter)",
    )
    m.add_argument("--out", required=True, help="output folder")
    m.add_argument("--format", choices=["model", "adapter"], default="model")
    m.add_argument("--rank", type=positive_int, default=16, help="rank of the saved adapter (--format adapter)")
    m.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
    m.add_argument("--allow-pickle", action="store_true", help="also read .bin pickle weights")
    m.add_argument(
        "--ignore-base-name", action="store_true", help="accept adapters whose recorded base name differs from --base"
    )
    m.set_defaults(func=merging.cmd_merge)

    e = sub.add_parser("export-mergekit", help="write the equivalent mergekit YAML (base+adapter)")
    base_args(e)
    e.add_argument("--out", help="YAML file (default: stdout)")
    e.set_defaults(func=merging.cmd_export)

    c = sub.add_parser("conflicts", help="the paper's four parameter-conflict metrics, per pair")
    c.add_argument("--base", required=True)
    c.add_argument("--adapters", nargs="+", required=True)
    c.add_argument("--format", choices=["csv", "json"], default="csv")
    c.add_argument("--allow-pickle", action="store_true")
    c.add_argument("--ignore-base-name", action="store_true")
    c.set_defaults(func=merging.cmd_conflicts)

    r = sub.add_parser("run", help="validate a study spec, enqueue its units and run them here")
    r.add_argument("spec", help="study YAML")
    r.add_argument("--db", help="store file (default: $MERGELAB_DB or .mergelab/mergelab.db)")
    r.add_argument("--device", default="auto")
    r.add_argument(
        "--recompute",
        action="store_true",
        help="run every unit again, finished ones included (e.g. the shipped demo results)",
    )
    r.add_argument("--retry-failed", action="store_true", help="queue failed and cancelled units again")
    r.add_argument(
        "--replace",
        action="store_true",
        help="a study of this name is stored with another spec: discard it (rows, jobs, states)",
    )
    _grant_flags(r)
    _executor_flags(r)
    r.set_defaults(func=studies.cmd_run)

    w = sub.add_parser("worker", help="claim and run queued units from the store")
    w.add_argument("--db")
    w.add_argument("--study", help="only this study's units")
    w.add_argument("--device", default="auto")
    w.add_argument("--forever", action="store_true", help="keep polling when the queue is empty")
    w.add_argument("--dashboard", action="store_true", help=argparse.SUPPRESS)  # the dashboard's one worker
    _grant_flags(w)
    _executor_flags(w)
    w.set_defaults(func=studies.cmd_worker)

    rp = sub.add_parser("report", help="merging loss, HiddenSim, MDS and p-values of a study")
    rp.add_argument("spec", nargs="?", help="study YAML (or use --study)")
    rp.add_argument("--study")
    rp.add_argument("--db")
    rp.add_argument(
        "--format",
        choices=["csv", "json", "markdown", "lm-eval"],
        default="csv",
        help="csv / json: the tables on stdout; markdown: the findings as one document on stdout (the "
        "paper's claims tested, Table 5, experts vs base, swaps, signals); lm-eval: lm-evaluation-harness "
        "result files per model (results_<time>.json, samples_<task>_<time>.jsonl) under --out",
    )
    rp.add_argument("--out", help="folder for --format lm-eval")
    rp.add_argument(
        "--no-cache",
        action="store_true",
        help="recompute even if this report of these very rows and this code was kept (in cache/ beside "
        "the store; any new row, state file or code change recomputes anyway)",
    )
    rp.set_defaults(func=studies.cmd_report)

    sw = sub.add_parser(
        "swap",
        help="which task to take out of a group and what to put in, ranked by hidden states (no merge)",
        description="The Task swap page's advice: the group's highest-MDS task and every replacement "
        "ranked by the new group's worst MDS (CSV on stdout, best first). Verify one by adding "
        "`swaps: [{group, remove, add}]` to the spec and running it.",
    )
    sw.add_argument("spec", nargs="?", help="study YAML (or use --study)")
    sw.add_argument("--study")
    sw.add_argument("--db")
    sw.add_argument("--group", help="default: the group whose worst best-loss is the lowest")
    sw.add_argument(
        "--candidates", nargs="+", help="tasks to rank (default: the spec's pool, else the other groups' tasks)"
    )
    sw.set_defaults(func=studies.cmd_swap)

    tr = sub.add_parser("train", help="train one LoRA adapter per task of a causal study (where its spec points)")
    tr.add_argument("spec", help="study YAML")
    tr.add_argument("--tasks", nargs="+", help="only these tasks")
    tr.add_argument("--steps", type=positive_int, default=150)
    tr.add_argument("--rank", type=positive_int, default=8)
    tr.add_argument("--alpha", type=positive_int, help="LoRA alpha (default 2 × rank)")
    tr.add_argument("--targets", nargs="+", default=["q_proj", "k_proj", "v_proj", "o_proj"])
    tr.add_argument("--batch-size", type=positive_int, default=16)
    tr.add_argument("--lr", type=float, default=1e-3)
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--force", action="store_true", help="retrain adapters that exist")
    tr.set_defaults(func=studies.cmd_train)

    d = sub.add_parser("demo", help="rebuild the bundled demo study (data, adapters)")
    dsub = d.add_subparsers(dest="demo_command", required=True)
    sn = dsub.add_parser("snapshot", help="write a finished study's rows and states as shippable files")
    sn.add_argument("study")
    sn.add_argument("--db")
    sn.add_argument("--out", help="folder (default: data/<study>/results)")
    sn.add_argument(
        "--spec",
        help="the study's YAML (default: data/<study>/study.yaml): only its planned units ship, never "
        "units a method revision superseded",
    )
    sn.set_defaults(func=studies.cmd_demo)
    b2 = dsub.add_parser(
        "build-llm-data",
        help="write data/llm/tasks/*.jsonl (the LLM study's 37 candidate tasks) from wordnet, fortunes, VADER, cmudict",
    )
    b2.add_argument("--seed", type=int, default=0)
    b2.set_defaults(func=studies.cmd_demo)
    b = dsub.add_parser("build-data", help="write data/demo/tasks/*.jsonl from wordnet, fortunes, VADER")
    b.add_argument("--seed", type=int, default=0)
    t = dsub.add_parser("train", help="train one LoRA adapter per demo task on MiniLM (CPU)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--tasks", nargs="+", help="only these tasks")
    for p in (b, t):
        p.set_defaults(func=studies.cmd_demo)

    db = sub.add_parser("dashboard", help="open the dashboard (a Streamlit server on this machine)")
    db.add_argument("--db", help="store file (default: $MERGELAB_DB, else the checkout's or your data folder's)")
    db.add_argument("--port", type=positive_int, default=8501)
    db.add_argument(
        "--address",
        default="127.0.0.1",
        help="where the server listens (127.0.0.1: this machine only; 0.0.0.0 exposes it to your network)",
    )
    db.set_defaults(func=studies.cmd_dashboard)

    sub.add_parser("methods", help="list merge methods and their parameters").set_defaults(func=merging.cmd_methods)
    sub.add_parser("paper", help="recompute the paper's statistics from data/paper").set_defaults(
        func=merging.cmd_paper
    )
    return parser

"""Commands on adapters, no study needed: merge, export-mergekit, conflicts, methods, paper."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ..merging import registry
from .common import adapter_names, exists_or_hub_id, output_folder
from .progress import module_bar


def _from_mergekit(args) -> None:
    """Fill --base, --adapters, --method and its parameters from a mergekit YAML (flags given on the
    command line as well win)."""
    from ..io.yaml_files import read_yaml_file
    from ..merging.mergekit_bridge import MergekitImportError, from_mergekit

    path = Path(args.from_mergekit)
    try:
        merge = from_mergekit(read_yaml_file(path, "mergekit config"))
    except MergekitImportError as exc:
        raise MergekitImportError(f"{path}: {exc}") from None
    args.base = args.base or merge["base"]
    args.adapters = args.adapters or merge["adapters"]
    if args.method_given is None:
        args.method = merge["method"]
        args.method_params = {**merge["params"], **args.method_params}
    print(
        f"from {path}: {registry.get(args.method).label} of {len(args.adapters)} adapters on {args.base}",
        file=sys.stderr,
    )


def cmd_merge(args) -> int:
    from ..io.adapters import load_adapter_set
    from ..merging import merge
    from ..merging.device import pick_device

    if args.from_mergekit:
        _from_mergekit(args)
    elif not (args.base and args.adapters):
        raise ValueError("give --base and --adapters, or --from-mergekit merge.yaml")
    params = args.method_params
    registry.get(args.method).resolve(len(args.adapters), params)  # bad parameters: before any loading
    output_folder(args.out)
    aset = load_adapter_set(
        args.base,
        adapter_names(args.adapters),
        allow_pickle=args.allow_pickle,
        check_base_name=not args.ignore_base_name,
    )
    device = pick_device(args.device)
    print(
        f"merging {len(aset.adapters)} adapters × {len(aset.module_keys)} modules with "
        f"{registry.get(args.method).label} on {device}",
        file=sys.stderr,
    )
    result = merge.merge(aset, args.method, params, device=str(device), progress=module_bar("merge"))
    if args.format == "model":
        out = merge.save_model(result, args.out, progress=module_bar("write"))
        print(f"wrote model folder {out}")
    else:
        report = merge.save_adapter(result, args.out, rank=args.rank)
        capped = report["capped"]
        note = (
            (
                f"; {len(capped)} modules are smaller than rank {args.rank} and keep rank "
                f"{', '.join(map(str, sorted(set(capped.values()))))} (rank_pattern)"
            )
            if capped
            else ""
        )
        print(
            f"wrote LoRA adapter {args.out} (rank {args.rank}{note}); relative reconstruction error "
            f"max {report['max']:.3g}, mean {report['mean']:.3g}"
        )
    return 0


def cmd_export(args) -> int:
    from ..merging.mergekit_bridge import mergekit_yaml

    exists_or_hub_id(args.base, "base")
    for a in args.adapters:
        exists_or_hub_id(a, "adapter")
    text = mergekit_yaml(args.base, args.adapters, args.method, args.method_params)
    if args.out:
        out = Path(args.out)
        if not out.parent.is_dir():
            raise ValueError(f"cannot write {out}: the folder {out.parent} does not exist")
        out.write_text(text)
        print(f"wrote {args.out}; run: mergekit-yaml {args.out} OUT --lora-merge-cache CACHE", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


def cmd_conflicts(args) -> int:
    from ..io.adapters import load_adapter_set
    from ..merging import conflicts

    aset = load_adapter_set(
        args.base,
        adapter_names(args.adapters),
        allow_pickle=args.allow_pickle,
        check_base_name=not args.ignore_base_name,
    )
    frame = conflicts.conflict_metrics(aset, progress=module_bar("conflicts"))
    wide = frame.pivot_table(index=["task_a", "task_b"], columns="name", values="value").reset_index()
    sys.stdout.write(
        wide.to_csv(index=False) if args.format == "csv" else wide.to_json(orient="records", indent=2) + "\n"
    )
    return 0


def cmd_methods(args) -> int:
    for m in registry.METHODS.values():
        params = ", ".join(f"{p.name}={p.default if p.default is not None else '1/n'}" for p in m.params)
        print(f"{m.name:16s} {m.label:24s} {params}\n{'':16s} {m.description}")
    return 0


def cmd_paper(args) -> int:
    from ..analysis import paper

    tables = paper.load_tables()
    out = {
        "table5": paper.table5_recomputed(tables).to_dict(orient="records"),
        "table3": paper.table3_recomputed(tables).to_dict(orient="records"),
        "checks": paper.consistency_checks(tables).to_dict(orient="records"),
    }
    print(json.dumps(out, indent=2, default=float))
    return 0

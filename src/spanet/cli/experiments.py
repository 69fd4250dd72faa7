"""Subcommands: ablation (the paper's Tables 2 and 3 as rows × seeds)."""

from __future__ import annotations

import argparse
from pathlib import Path

from spanet.config import yaml_scalar
from spanet.errors import SpanetError
from spanet.run_dir import ABLATION_JSON, ABLATION_TABLE
from spanet.training.ablation import ROW_GROUPS, ROWS, format_markdown, run_ablation, run_variants

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    rows_help = "; ".join(f"{key}: {row.label}" for key, row in ROWS.items())
    parser = subparsers.add_parser(
        "ablation",
        help="run the paper's ablation rows (Table 2, Table 3) with several seeds and write a table",
        description=(
            "Train each ablation row with N seeds and write OUTPUT/ablation.md and OUTPUT/ablation.json "
            "(rank-1 / mAP mean ± std, in the paper's layout). Finished runs are skipped when started again. "
            "Without --data-root, the synthetic 'demo' dataset is generated under OUTPUT/data."
        ),
        epilog=f"Rows: {rows_help}. Groups: {', '.join(ROW_GROUPS)}.",
    )
    parser.add_argument("--config", type=Path, required=True, metavar="FILE", help="training config (YAML)")
    parser.add_argument("--rows", nargs="+", default=["all"], metavar="ROW", help="rows or groups (default: all)")
    parser.add_argument("--seeds", type=int, default=2, metavar="N", help="seeds per row (default: 2)")
    parser.add_argument("--output", type=Path, required=True, metavar="DIR", help="where runs and tables go")
    parser.add_argument("--dataset", default="synthetic", metavar="NAME", help="dataset name (default: synthetic)")
    parser.add_argument("--data-root", type=Path, metavar="DIR", help="dataset folder (default: OUTPUT/data, generated)")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="config override, repeatable"
    )
    parser.add_argument(
        "--variant", dest="variants", action="append", nargs="+", default=[], metavar="ITEM",
        help="LABEL [KEY=VALUE ...]: run every row again under this variant (a label, then config overrides), "
        "e.g. --variant paper --variant official model.attention=l1 loss.weighting=official (repeatable; results "
        "in OUTPUT/LABEL/)",
    )
    parser.set_defaults(func=_run_ablation)


def _run_ablation(args: argparse.Namespace) -> int:
    from spanet.outputs import guard_folder

    guard_folder(args.output, option="--output", inputs=[args.config, args.data_root])
    data_root = args.data_root
    if data_root is None:
        if args.dataset != "synthetic":
            raise SpanetError(f"--data-root is required for --dataset {args.dataset}")
        data_root = args.output / "data"
        from spanet.data.datasets import SYNTH_MANIFEST

        if not (data_root / SYNTH_MANIFEST).exists():
            from spanet.synth.generate import SYNTH_PRESETS, generate_dataset

            generate_dataset(data_root, **SYNTH_PRESETS["demo"])
    overrides = [f"data.dataset={yaml_scalar(args.dataset)}", f"data.root={yaml_scalar(str(data_root))}", *args.overrides]
    if args.variants:
        variants = {label: extra for label, *extra in args.variants}
        if len(variants) != len(args.variants):
            raise SpanetError("--variant: every variant needs its own label")
        combined = run_variants(config_path=args.config, rows=args.rows, seeds=args.seeds, output_dir=args.output,
                                variants=variants, overrides=overrides)  # fmt: skip
        print((args.output / ABLATION_TABLE).read_text() if combined else "")
        print(f"written: {args.output / ABLATION_TABLE} and {args.output / ABLATION_JSON}")
        return 0
    result = run_ablation(
        config_path=args.config, rows=args.rows, seeds=args.seeds, output_dir=args.output, overrides=overrides
    )
    print(format_markdown(result))
    print(f"written: {args.output / ABLATION_TABLE} and {args.output / ABLATION_JSON}")
    return 0

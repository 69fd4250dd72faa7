"""The paper's ablations (Table 2 and Table 3) as a runner: rows × seeds → one Markdown + JSON table.

Each run is an ordinary training run (`spanet.training.loop.train`) whose model switches come from the row, so an ablation
is exactly as faithful as `spanet train`. A cell (row × settings) lives in `runs/<row>/<digest>/seed<N>/`, where the
digest hashes every resolved setting that can change its numbers (`settings_digest`): finished runs leave
`result.json` and are skipped when the runner is started again with the same settings, so a long ablation can be
interrupted and continued, while changed `--set` values train new cells and never reuse numbers trained with others.
"""

from __future__ import annotations

import dataclasses
import json
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from spanet.config import Config, load_config
from spanet.errors import SpanetError
from spanet.outputs import write_json, write_text
from spanet.run_dir import ABLATION_JSON, ABLATION_TABLE, LAST_CHECKPOINT, RESULT_FILE
from spanet.training.settings import settings_digest

__all__ = ["AblationRow", "ROWS", "ROW_GROUPS", "resolve_rows", "run_ablation", "run_variants", "format_markdown"]


@dataclass(frozen=True)
class AblationRow:
    key: str
    table: int
    label: str  # as the paper's table names the row
    flags: dict[str, bool]
    paper: tuple[float, float]  # the paper's (rank-1, mAP) in % on Market-1501


def _flags(*, parts: bool, ds: bool, sa1: bool, sa2: bool) -> dict[str, bool]:
    return {"parts": parts, "deep_supervision": ds, "sa_parts": sa1, "sa_ds": sa2}


# Table 2 (Market-1501, no random erasing, no re-ranking) and Table 3 (the full model ± SA, with random erasing).
ROWS: dict[str, AblationRow] = {
    row.key: row
    for row in (
        AblationRow("backbone", 2, "Backbone", _flags(parts=False, ds=False, sa1=False, sa2=False), (84.8, 67.0)),
        AblationRow("sa1", 2, "Backbone + SA1", _flags(parts=False, ds=False, sa1=True, sa2=False), (87.4, 68.1)),
        AblationRow("ds", 2, "Backbone + DS", _flags(parts=False, ds=True, sa1=False, sa2=False), (86.2, 68.3)),
        AblationRow("ds-sa2", 2, "Backbone + DS + SA2", _flags(parts=False, ds=True, sa1=False, sa2=True), (86.6, 68.8)),
        AblationRow(
            "ds-sa1-sa2", 2, "Backbone + DS + SA1 + SA2", _flags(parts=False, ds=True, sa1=True, sa2=True), (87.1, 69.4)
        ),
        AblationRow("p-ds", 2, "Backbone + P + DS", _flags(parts=True, ds=True, sa1=False, sa2=False), (91.7, 77.0)),
        AblationRow(
            "p-ds-sa2", 2, "Backbone + P + DS + SA2", _flags(parts=True, ds=True, sa1=False, sa2=True), (92.4, 78.2)
        ),
        AblationRow(
            "p-ds-sa1-sa2", 2, "Backbone + P + DS + SA1 + SA2", _flags(parts=True, ds=True, sa1=True, sa2=True), (92.6, 78.3)
        ),
        AblationRow("with-sa", 3, "+SA (full model)", _flags(parts=True, ds=True, sa1=False, sa2=True), (93.3, 81.7)),
        AblationRow("without-sa", 3, "-SA (full model)", _flags(parts=True, ds=True, sa1=False, sa2=False), (92.5, 79.6)),
    )
}
ROW_GROUPS: dict[str, tuple[str, ...]] = {
    "table2": tuple(k for k, r in ROWS.items() if r.table == 2),
    "table3": tuple(k for k, r in ROWS.items() if r.table == 3),
}
ROW_GROUPS["all"] = ROW_GROUPS["table2"] + ROW_GROUPS["table3"]


def resolve_rows(names: Sequence[str]) -> list[str]:
    """Expand group names (table2, table3, all) and check row keys, keeping order and dropping repeats."""
    keys: list[str] = []
    for name in names:
        expanded = ROW_GROUPS.get(name, (name,))
        for key in expanded:
            if key not in ROWS:
                valid = ", ".join([*ROW_GROUPS, *ROWS])
                raise SpanetError(f"unknown ablation row {name!r}; valid rows and groups: {valid}")
            if key not in keys:
                keys.append(key)
    return keys


def _cell_config(*, config_path: Path | None, overrides: Sequence[str], row: AblationRow, seed: int) -> Config:
    """The resolved config of one (row, seed) run: the user's config and overrides, then the row's switches."""
    row_overrides = [f"model.{name}={str(value).lower()}" for name, value in row.flags.items()]
    if row.table == 2:
        row_overrides.append("data.erasing_p=0")  # §5.3: Table 2 is trained without random erasing
    config = load_config(config_path, [*overrides, *row_overrides, f"train.seed={seed}"])
    if config.train.eval_every == 0:  # the table needs the final metrics: evaluate the last epoch at least
        config = dataclasses.replace(config, train=dataclasses.replace(config.train, eval_every=config.optim.epochs))
    return config


def _finished(result_file: Path, *, digest: str) -> dict | None:
    """A finished run's result, if it was trained with the settings of `digest` (a copied or older folder is not)."""
    if not result_file.is_file():
        return None
    try:
        result = json.loads(result_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return result if isinstance(result, dict) and result.get("settings") == digest else None


def _run_one(*, config: Config, digest: str, run_dir: Path) -> dict:
    from spanet.training.loop import TrainingDiverged, train

    result_file = run_dir / RESULT_FILE
    finished = _finished(result_file, digest=digest)
    if finished is not None:
        return finished
    try:
        resume = (run_dir / LAST_CHECKPOINT).exists()  # continue a run; a run that never saved a checkpoint starts anew
        summary = train(config, output_dir=run_dir, resume=resume, overwrite=not resume)
    except TrainingDiverged as exc:
        # A row that diverges is a result of the ablation, not a reason to stop the other rows.
        print(f"[ablation] {run_dir}: {exc}", flush=True)
        result = {"rank1": None, "mAP": None, "diverged": str(exc), "settings": digest}
        write_json(result_file, result)
        return result
    final = summary["final_metrics"]
    if not final:
        raise SpanetError(f"run {run_dir} finished without evaluation metrics; delete the folder and run again")
    result = {"rank1": float(final["rank1"]), "mAP": float(final["mAP"]), "settings": digest}
    write_json(result_file, result)
    return result


def run_ablation(
    *,
    config_path: Path | None,
    rows: Sequence[str],
    seeds: int,
    output_dir: Path,
    overrides: Sequence[str] = (),
) -> dict:
    """Train every (row, seed) pair and return the table as a dict (also written as JSON and Markdown)."""
    if seeds < 1:
        raise SpanetError(f"seeds must be at least 1, got {seeds}")
    keys = resolve_rows(rows)
    table: dict[str, dict] = {}
    for index, key in enumerate(keys, start=1):
        row = ROWS[key]
        per_seed, digests = [], set()
        for seed in range(seeds):
            print(f"[ablation] row {index}/{len(keys)} {row.label!r}, seed {seed + 1}/{seeds}", flush=True)
            config = _cell_config(config_path=config_path, overrides=overrides, row=row, seed=seed)
            digest = settings_digest(config)
            digests.add(digest)
            run_dir = output_dir / "runs" / key / digest / f"seed{seed}"
            per_seed.append(_run_one(config=config, digest=digest, run_dir=run_dir))
        table[key] = {
            "label": row.label,
            "settings": sorted(digests),  # one digest: every seed was trained with the same settings
            "table": row.table,
            "flags": row.flags,
            "paper": {"rank1": row.paper[0], "mAP": row.paper[1]},
            "diverged_seeds": [seed for seed, r in enumerate(per_seed) if r.get("diverged")],
            **{metric: _summary([100.0 * r[metric] for r in per_seed if r[metric] is not None]) for metric in ("rank1", "mAP")},
        }
    result = {"seeds": seeds, "config": str(config_path) if config_path else None, "overrides": list(overrides), "rows": table}
    write_json(output_dir / ABLATION_JSON, result)
    write_text(output_dir / ABLATION_TABLE, format_markdown(result))
    return result


def run_variants(
    *,
    config_path: Path | None,
    rows: Sequence[str],
    seeds: int,
    output_dir: Path,
    variants: dict[str, Sequence[str]],
    overrides: Sequence[str] = (),
) -> dict:
    """The same rows and seeds once per variant (label -> extra `section.key=value` overrides, applied after
    `overrides` and before the row's switches), each into OUTPUT/<label>/; one combined table in OUTPUT/ablation.md.

    E.g. {"paper": [], "official": ["model.attention=l1", "loss.weighting=official"]} runs Tables 2 and 3 under both
    readings of the paper on the same data."""
    if not variants:
        raise SpanetError("--variant: give at least one LABEL [KEY=VALUE ...]")
    for label in variants:
        if not label or "/" in label or label.startswith(".") or "=" in label:
            raise SpanetError(f"--variant label {label!r} must be a plain folder name (e.g. paper, official)")
    results = {
        label: run_ablation(config_path=config_path, rows=rows, seeds=seeds, output_dir=output_dir / label,
                            overrides=[*overrides, *extra])  # fmt: skip
        for label, extra in variants.items()
    }
    combined = {"seeds": seeds, "variants": {label: {"overrides": list(extra)} for label, extra in variants.items()},
                "results": results}  # fmt: skip
    sections = [
        f"## Variant `{label}` ({' '.join(variants[label]) or 'the config as it is'})\n\n{format_markdown(result)}"
        for label, result in results.items()
    ]
    write_json(output_dir / ABLATION_JSON, combined)
    write_text(output_dir / ABLATION_TABLE, "\n".join(sections))
    return combined


def _summary(values: list[float]) -> dict:
    """Mean ± sample std over the seeds that trained (None when every seed diverged; the std is None, undefined,
    with one seed: not 0)."""
    if not values:
        return {"values": [], "mean": None, "std": None}
    std = statistics.stdev(values) if len(values) > 1 else None
    return {"values": values, "mean": statistics.fmean(values), "std": std}


def _cell(summary: dict, *, seeds: int, diverged: int) -> str:
    if summary["mean"] is None:
        return f"diverged ({diverged}/{seeds})"
    spread = "(1 seed, no spread)" if summary["std"] is None else f"± {summary['std']:.1f}"
    text = f"{summary['mean']:.1f} {spread}"
    return text + (f" ({diverged}/{seeds} diverged)" if diverged else "")


def format_markdown(result: dict) -> str:
    """The tables in the paper's layout: one row per configuration, rank-1 and mAP as mean ± std over seeds."""
    lines: list[str] = []
    for table_number, title in ((2, "Table 2: components"), (3, "Table 3: the full model with and without SA")):
        rows = {k: r for k, r in result["rows"].items() if r["table"] == table_number}
        if not rows:
            continue
        lines += [
            f"### {title} ({result['seeds']} seed{'s' if result['seeds'] > 1 else ''} each)",
            "",
            "| configuration | P | DS | SA1 | SA2 | rank-1 (%) | mAP (%) | paper rank-1 / mAP (Market-1501) |",
            "|---|:-:|:-:|:-:|:-:|---:|---:|---:|",
        ]
        for row in rows.values():
            flags = row["flags"]
            marks = ["✓" if flags[name] else "" for name in ("parts", "deep_supervision", "sa_parts", "sa_ds")]
            counts = {"seeds": result["seeds"], "diverged": len(row.get("diverged_seeds", []))}
            lines.append(
                f"| {row['label']} | {' | '.join(marks)} | {_cell(row['rank1'], **counts)} | "
                f"{_cell(row['mAP'], **counts)} | {row['paper']['rank1']} / {row['paper']['mAP']} |"
            )
        lines.append("")
    return "\n".join(lines)

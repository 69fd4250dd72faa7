"""Table 3 (+SA vs -SA on the full model) as paired differences per reading, from `scripts/table3_readings.sh` output.

    python scripts/table3_paired.py runs/t3 --json docs/ablation-table3-readings.json [--cam-images 25]

For every reading, the +SA and -SA runs of the same seed form a pair (same seed = same initialisation of the shared
layers, same batches, same augmentation draws); the table gives the mean of the per-seed differences (+SA − -SA) with
a 95 % t-interval over those differences (n − 1 degrees of freedom), next to the mean ± sample std of each side. Also
per reading: the last-epoch training cross-entropies of the three DS heads (ds1/ds2/ds3), the effective number of
attention positions `1/Σ A²` as a fraction of H·W at the last epoch (from the training log), the CAM spread of each
model (`spanet.viz.cam`: area at ≥ half the maximum, normalised entropy; `--cam-images` training images, every 40th,
explaining the true class) and the wall minutes per run.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from scipy import stats

# reading -> (+SA folder, -SA folder) under OUT, as scripts/table3_readings.sh writes them
READINGS: dict[str, tuple[str, str]] = {
    "paper literal (softmax of the channel sum)": ("paper/runs/with-sa", "paper/runs/without-sa"),
    "softmax of the channel mean (softmax_mean)": ("softmax_mean/runs/with-sa", "paper/runs/without-sa"),
    "official code's recipe": ("official_recipe/runs/with-sa", "official_recipe/runs/without-sa"),
    "today's official column (L1 only)": ("l1/runs/with-sa", "paper/runs/without-sa"),
}
DS_TERMS = ("ds1", "ds2", "ds3")
CAM_HEADS = ("stage1", "stage2", "stage3", "global")


def read_run(run_dir: Path) -> dict | None:
    """result.json + the last epoch of log.jsonl + wall seconds (config.yaml written at the start, result.json at
    the end); None when the run has not finished."""
    result_file = run_dir / "result.json"
    if not result_file.exists():
        return None
    result = json.loads(result_file.read_text())
    epochs = [r for r in map(json.loads, (run_dir / "log.jsonl").read_text().splitlines()) if r["type"] == "epoch"]
    last = epochs[-1] if epochs else {}
    return {
        "rank1": None if result.get("rank1") is None else 100 * result["rank1"],
        "mAP": None if result.get("mAP") is None else 100 * result["mAP"],
        "diverged": result.get("diverged"),
        "last_epoch": last.get("epoch"),
        "ds_ce": {k: last["terms"][k] for k in DS_TERMS if k in last.get("terms", {})},
        "attention_fraction": {k: v["fraction"] for k, v in (last.get("attention") or {}).items()},
        "wall_s": result_file.stat().st_mtime - (run_dir / "config.yaml").stat().st_mtime,
    }


def cam_spread_of(checkpoint: Path, images: list[Path]) -> dict[str, dict[str, float]]:
    """Mean CAM spread per head over `images`, explaining each image's true class."""
    import numpy as np

    from spanet.checkpoint import checkpoint_input_size, load_model
    from spanet.data.images import read_image
    from spanet.data.transforms import eval_transform
    from spanet.viz.cam import cam_spread, image_cams, train_labels_by_pid, upsample

    model, ckpt = load_model(checkpoint, map_location="cpu")
    labels, _ = train_labels_by_pid(ckpt)
    size = checkpoint_input_size(ckpt, path=checkpoint)
    transform = eval_transform(size)
    per_head: dict[str, list[dict[str, float]]] = {head: [] for head in CAM_HEADS}
    for path in images:
        pid = int(path.name.split("_")[0])
        cams = image_cams(model, transform(read_image(path)), target=labels[pid] if labels else None)
        for head in CAM_HEADS:
            if head in cams.heads:
                per_head[head].append(cam_spread(upsample(cams.heads[head].cam, size=size)))
    return {
        head: {key: float(np.mean([r[key] for r in rows])) for key in ("area_above_half", "entropy")}
        for head, rows in per_head.items()
        if rows
    }


def paired(plus: list[float], minus: list[float]) -> dict:
    diffs = [p - m for p, m in zip(plus, minus)]
    n = len(diffs)
    if n == 0:
        return {"n": 0, "diffs": [], "mean": None, "ci95": None}
    mean = statistics.fmean(diffs)
    if n < 2:
        return {"n": n, "diffs": diffs, "mean": mean, "ci95": None}
    half = stats.t.ppf(0.975, n - 1) * statistics.stdev(diffs) / n**0.5
    return {"n": n, "diffs": diffs, "mean": mean, "sd": statistics.stdev(diffs), "ci95": [mean - half, mean + half]}


def spread(values: list[float]) -> str:
    return f"{statistics.fmean(values):.1f} ± {statistics.stdev(values) if len(values) > 1 else 0.0:.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out", type=Path, help="the OUT folder of scripts/table3_readings.sh")
    parser.add_argument("--json", type=Path, help="write every per-seed number here")
    parser.add_argument("--cam-images", type=int, default=0,
                        help="at most this many training images (every 40th) for the CAM spread (0: skip)")
    args = parser.parse_args()
    images = sorted((args.out / "data" / "bounding_box_train").glob("*.jpg"))[::40][: args.cam_images]
    cam_cache: dict[Path, dict] = {}
    report: dict[str, dict] = {}
    for reading, (plus_dir, minus_dir) in READINGS.items():
        if not (args.out / plus_dir).is_dir():
            continue  # a reading this OUT did not train (scripts/table3_crowd.sh trains three)
        plus_seeds, minus_seeds = seed_dirs(args.out / plus_dir), seed_dirs(args.out / minus_dir)
        pairs = []
        for seed in sorted(plus_seeds):
            if seed not in minus_seeds:
                continue
            plus, minus = read_run(plus_seeds[seed]), read_run(minus_seeds[seed])
            if plus is None or minus is None:
                continue
            if images:
                for side, folder in (("plus", plus_seeds[seed]), ("minus", minus_seeds[seed])):
                    ckpt = folder / "last.pt"
                    cam_cache.setdefault(ckpt, cam_spread_of(ckpt, images))
                    (plus if side == "plus" else minus)["cam"] = cam_cache[ckpt]
            pairs.append({"seed": seed, "with_sa": plus, "without_sa": minus})
        trained = [p for p in pairs if p["with_sa"]["rank1"] is not None and p["without_sa"]["rank1"] is not None]
        entry = {"with_sa_dir": plus_dir, "without_sa_dir": minus_dir, "pairs": pairs,
                 "diverged": [p["seed"] for p in pairs if p not in trained]}  # fmt: skip
        for metric in ("rank1", "mAP"):
            entry[metric] = paired([p["with_sa"][metric] for p in trained], [p["without_sa"][metric] for p in trained])
        report[reading] = entry
    budget = cpu_budget(args.out / "times.tsv")
    print_tables(report)
    print(f"\n{budget['runs']} trainings, {budget['wall_min']:.0f} min wall, "
          f"{budget['cpu_min']:.0f} CPU-min (user + sys)")
    if args.json:
        record = {"readings": report, "cam_images": [p.name for p in images], "budget": budget}
        args.json.write_text(json.dumps(record, indent=1) + "\n")


def seed_dirs(row_dir: Path) -> dict[int, Path]:
    """seed -> run folder of one ablation row: `ROW/DIGEST/seedN` (cells keyed by their settings) or the older
    `ROW/seedN`. Two digests with the same seed mean two settings in one output folder: refused."""
    found: dict[int, Path] = {}
    for folder in sorted([*row_dir.glob("seed*"), *row_dir.glob("*/seed*")]):
        if not folder.is_dir() or not folder.name[4:].isdigit():
            continue
        seed = int(folder.name[4:])
        if seed in found:
            raise SystemExit(f"{row_dir}: seed {seed} was trained under two settings ({found[seed]}, {folder}); "
                             "give each setting its own output folder")  # fmt: skip
        found[seed] = folder
    return found


def cpu_budget(times_file: Path) -> dict:
    """Totals of OUT/times.tsv (label, seeds, start, end, user s, sys s per `spanet ablation` call)."""
    rows = [line.split("\t") for line in times_file.read_text().splitlines() if line.strip()]
    calls = [{"label": r[0], "seeds": int(r[1]), "wall_s": int(r[3]) - int(r[2]), "cpu_s": float(r[4]) + float(r[5])}
             for r in rows]  # fmt: skip
    runs = len([*times_file.parent.glob("*/runs/*/seed*/result.json"),
                *times_file.parent.glob("*/runs/*/*/seed*/result.json")])  # every training these calls finished
    return {"calls": calls, "runs": runs, "wall_min": sum(c["wall_s"] for c in calls) / 60,
            "cpu_min": sum(c["cpu_s"] for c in calls) / 60}  # fmt: skip


def print_tables(report: dict[str, dict]) -> None:
    print("| reading | seeds | +SA rank-1 / mAP | −SA rank-1 / mAP | Δ rank-1 [95 % CI] | Δ mAP [95 % CI] |")
    print("|---|---:|---:|---:|---:|---:|")
    for reading, e in report.items():
        trained = [p for p in e["pairs"] if p["seed"] not in e["diverged"]]
        if not trained:
            print(f"| {reading} | 0 | | | | |")
            continue
        sides = {
            side: " / ".join(spread([p[side][m] for p in trained]) for m in ("rank1", "mAP"))
            for side in ("with_sa", "without_sa")
        }
        deltas = []
        for metric in ("rank1", "mAP"):
            d = e[metric]
            ci = f" [{d['ci95'][0]:+.1f}, {d['ci95'][1]:+.1f}]" if d["ci95"] else ""
            deltas.append(f"{d['mean']:+.1f}{ci}")
        note = f" ({len(e['diverged'])} diverged)" if e["diverged"] else ""
        cells = [sides["with_sa"], sides["without_sa"], *deltas]
        print(f"| {reading} | {len(trained)}{note} | " + " | ".join(cells) + " |")

    print("\n| reading | side | last-epoch CE ds1 / ds2 / ds3 | attention positions / H·W (ds1 / ds2 / ds3) | "
          "CAM area ≥ ½ max (stage 1 / 2 / 3 / global) | CAM entropy (stage 1 / 2 / 3 / global) | minutes per run |")
    print("|---|---|---|---|---|---|---:|")
    for reading, e in report.items():
        for side, label in (("with_sa", "+SA"), ("without_sa", "−SA")):
            runs = [p[side] for p in e["pairs"] if p[side]["ds_ce"]]
            if not runs:
                continue
            ce = " / ".join(f"{statistics.fmean(r['ds_ce'][k] for r in runs):.2f}" for k in DS_TERMS)
            fractions = [r["attention_fraction"] for r in runs if r["attention_fraction"]]
            att = "—"
            if fractions:
                att = " / ".join(f"{statistics.fmean(f[k] for f in fractions):.3f}" for k in DS_TERMS)
            cams = [r["cam"] for r in runs if "cam" in r]
            area = entropy = "—"
            if cams:
                area = " / ".join(f"{statistics.fmean(c[h]['area_above_half'] for c in cams):.3f}" for h in CAM_HEADS)
                entropy = " / ".join(f"{statistics.fmean(c[h]['entropy'] for c in cams):.2f}" for h in CAM_HEADS)
            minutes = statistics.fmean(r["wall_s"] for r in runs) / 60
            print(f"| {reading} | {label} | {ce} | {att} | {area} | {entropy} | {minutes:.1f} |")


if __name__ == "__main__":
    main()

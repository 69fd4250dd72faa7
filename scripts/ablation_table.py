"""Tables 2 and 3 side by side for several readings of the paper, from `spanet ablation` output folders.

    python scripts/ablation_table.py paper=runs/abl/paper official=runs/abl/official sum=runs/abl/sum

Each LABEL=DIR is the --output of one `spanet ablation` run (its runs/<row>/<settings digest>/seed<N>/result.json
files). Rows without
any SA layer do not depend on the attention or its pooling, so they are trained once, in the first folder, and
shown there only. Cells: mean ± sample standard deviation over the seeds of rank-1 / mAP (%), the number of seeds
when it is not the most common one, and how many seeds diverged.
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import Counter
from pathlib import Path

from spanet.training.ablation import ROWS


def cell(folder: Path, key: str) -> tuple[str, int]:
    row = folder / "runs" / key  # cells keyed by their settings: ROW/DIGEST/seedN (older outputs: ROW/seedN)
    files = sorted([*row.glob("seed*/result.json"), *row.glob("*/seed*/result.json")])
    if len({p.parent.parent for p in row.glob("*/seed*/result.json")}) > 1:
        raise SystemExit(f"{row} holds runs of several settings; give each setting its own --output")
    results = [json.loads(p.read_text()) for p in files]
    if not results:
        return "not run", 0
    trained = [r for r in results if r.get("rank1") is not None]
    diverged = len(results) - len(trained)
    if not trained:
        return f"diverged ({diverged}/{len(results)})", len(results)

    def spread(values: list[float]) -> str:
        std = statistics.stdev(values) if len(values) > 1 else 0.0
        return f"{statistics.mean(values):.1f} ± {std:.1f}"

    text = f"{spread([100 * r['rank1'] for r in trained])} / {spread([100 * r['mAP'] for r in trained])}"
    if diverged:
        text += f", diverged {diverged}/{len(results)}"
    return text, len(results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("readings", nargs="+", metavar="LABEL=DIR", help="a label and a `spanet ablation` --output")
    args = parser.parse_args()
    readings = dict(item.split("=", 1) for item in args.readings)
    first = next(iter(readings))
    cells: dict[tuple[str, str], tuple[str, int]] = {}
    for key, row in ROWS.items():
        has_sa = row.flags["sa_parts"] or row.flags["sa_ds"]
        for label, folder in readings.items():
            if has_sa or label == first:
                cells[(key, label)] = cell(Path(folder), key)
    usual = Counter(n for _, n in cells.values() if n).most_common(1)[0][0] if cells else 0
    for table in (2, 3):
        print(f"\n| configuration | P | DS | SA1 | SA2 | " + " | ".join(readings) + " | paper (Market-1501) |")
        print("|---|:-:|:-:|:-:|:-:|" + "---:|" * (len(readings) + 1))
        for key, row in ROWS.items():
            if row.table != table:
                continue
            marks = " | ".join("✓" if row.flags[k] else "" for k in ("parts", "deep_supervision", "sa_parts", "sa_ds"))
            texts = []
            for label in readings:
                text, seeds = cells.get((key, label), ("same runs (no SA)", 0))
                texts.append(text + (f" ({seeds} seeds)" if seeds and seeds != usual else ""))
            print(f"| {row.label} | {marks} | " + " | ".join(texts) + f" | {row.paper[0]} / {row.paper[1]} |")


if __name__ == "__main__":
    main()

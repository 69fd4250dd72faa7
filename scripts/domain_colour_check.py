"""A model-free check of how well a synthetic domain's people can be matched across its cameras by colour alone.

    python scripts/domain_colour_check.py --seeds 0 1

Renders each variant's training split (100 people, 6 cameras, 10 pictures each; test split tiny, unused), describes
each crop by a 216-bin colour histogram of its centre, optionally subtracts each camera's mean (`--centre`), and
reports the share of crops whose nearest crop from another camera is the same person. Variants: domain a, domain b,
and domain b with one of a's settings put back (its colour casts, its body sizes, its backgrounds), to see which of
b's differences makes its people hard to match. Training crops only: no test split is looked at.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import numpy as np
from PIL import Image

import spanet.synth.domain as domains
from spanet.synth.generate import generate_dataset


def variants() -> dict[str, domains.Domain]:
    a, b = domains.DOMAINS["a"], domains.DOMAINS["b"]
    return {
        "a": a,
        "b": b,
        "b with a's colour casts": dataclasses.replace(b, colour_casts=a.colour_casts),
        "b with a's body sizes": dataclasses.replace(b, width_scales=a.width_scales, height_scales=a.height_scales),
        "b with a's backgrounds": dataclasses.replace(b, wall=a.wall, floor_grey=a.floor_grey, textures=a.textures),
    }


def histograms(folder: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(N, 216) square-rooted colour histograms of the crops' centres, their identities and cameras."""
    rows, ids, cams = [], [], []
    for path in sorted(folder.glob("*.jpg")):
        levels = np.asarray(Image.open(path).convert("RGB").resize((32, 64)), dtype=np.int64)[8:56, 6:26] // 43
        counts = np.bincount((levels[..., 0] * 36 + levels[..., 1] * 6 + levels[..., 2]).ravel(), minlength=216)
        rows.append(np.sqrt(counts / counts.sum()))
        ids.append(int(path.name[:4]))
        cams.append(int(path.name.split("_c")[1][0]))
    return np.array(rows), np.array(ids), np.array(cams)


def cross_camera_rank1(x: np.ndarray, ids: np.ndarray, cams: np.ndarray, *, centre: bool) -> float:
    if centre:
        x = x - np.stack([x[cams == c].mean(0) for c in cams])
    d = ((x[:, None] - x[None]) ** 2).sum(-1)  # (N, N)
    d[cams[:, None] == cams[None]] = np.inf
    return float((ids[d.argmin(1)] == ids).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--work", type=Path, default=Path("bench/colour_check"))
    args = parser.parse_args()
    original_b = domains.DOMAINS["b"]
    for seed in args.seeds:
        for name, domain in variants().items():
            out = args.work / f"seed{seed}" / name.replace(" ", "_").replace("'", "")
            if not (out / "spanet_synth.json").is_file():
                domains.DOMAINS["b"] = domain if domain.name == "b" else original_b
                generate_dataset(out, train_ids=100, test_ids=2, cameras=6, images_per_id=10, distractors=0, junk=0,
                                 seed=seed, progress=False, domain=domain.name, overwrite=True)  # fmt: skip
                domains.DOMAINS["b"] = original_b
            x, ids, cams = histograms(out / "bounding_box_train")
            raw, centred = (cross_camera_rank1(x, ids, cams, centre=c) for c in (False, True))
            print(f"seed {seed}  {name:28s} cross-camera rank-1 by colour: {100 * raw:5.1f} %, camera-centred {100 * centred:5.1f} %")


if __name__ == "__main__":
    main()

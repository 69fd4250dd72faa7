"""Ranked lists (borders by match kind, seeded query choice), CMC/training curves and CAM grids are written."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from spanet.data.datasets import Sample
from spanet.errors import SpanetError
from spanet.viz.figures import MATCH_COLORS, CamRow, draw_cam_grid, draw_matches, draw_ranked_lists, plot_cmc, plot_training_curves


def _samples(folder: Path, specs: list[tuple[int, int]], prefix: str) -> list[Sample]:
    folder.mkdir(parents=True, exist_ok=True)
    samples = []
    for i, (pid, camid) in enumerate(specs):
        path = folder / f"{prefix}{i}.jpg"
        Image.new("RGB", (32, 64), (40, 40, 200)).save(path)  # plain blue: never confused with a border colour
        samples.append(Sample(str(path), pid, camid))
    return samples


def _has_colour(path: Path, rgb: tuple[int, int, int], *, min_pixels: int = 50) -> bool:
    pixels = np.asarray(Image.open(path).convert("RGB")).astype(int)
    close = np.abs(pixels - np.array(rgb)).sum(axis=-1) <= 12
    return int(close.sum()) >= min_pixels


def test_ranked_list_marks_true_false_and_junk(tmp_path: Path) -> None:
    query = _samples(tmp_path / "q", [(1, 0)], "q")
    # gallery: same id other camera (true), same id same camera (junk), another id (false)
    gallery = _samples(tmp_path / "g", [(1, 1), (1, 0), (2, 1)], "g")
    distmat = np.array([[0.1, 0.2, 0.3]])
    (path,) = draw_ranked_lists(distmat, query, gallery, out_dir=tmp_path / "out", top_k=3, num_queries=1)
    assert path.name == "ranked_q00000.png"
    for kind in ("true", "false", "junk"):
        assert _has_colour(path, MATCH_COLORS[kind]), kind
    # only true matches: no red border anywhere
    (only_true,) = draw_ranked_lists(distmat[:, :1], query, gallery[:1], out_dir=tmp_path / "out2", top_k=3)
    assert _has_colour(only_true, MATCH_COLORS["true"])
    assert not _has_colour(only_true, MATCH_COLORS["false"])


def test_ranked_lists_are_seeded(tmp_path: Path) -> None:
    query = _samples(tmp_path / "q", [(i, 0) for i in range(12)], "q")
    gallery = _samples(tmp_path / "g", [(i, 1) for i in range(12)], "g")
    distmat = np.random.default_rng(0).random((12, 12))
    names = [[p.name for p in draw_ranked_lists(distmat, query, gallery, out_dir=tmp_path / f"o{k}", top_k=2,
                                                 num_queries=4, seed=seed)] for k, seed in enumerate((3, 3, 4))]
    assert len(names[0]) == 4
    assert names[0] == names[1]
    assert names[0] != names[2]
    with pytest.raises(SpanetError, match="distance matrix"):
        draw_ranked_lists(distmat[:, :5], query, gallery, out_dir=tmp_path / "bad")


def test_curves_and_cam_grid(tmp_path: Path) -> None:
    assert plot_cmc({"plain": [0.5, 0.7, 0.9]}, out_path=tmp_path / "cmc.png").is_file()
    with pytest.raises(SpanetError):
        plot_cmc({"plain": []}, out_path=tmp_path / "none.png")
    records = [{"type": "step", "epoch": 1, "step": s, "loss": 3.0 - s * 0.1, "lr": 0.1, "terms": {"ds1": 1.0}}
               for s in range(5)] + [{"type": "eval", "epoch": 1, "rank1": 0.5, "mAP": 0.3}]
    assert set(plot_training_curves(records, out_dir=tmp_path / "curves")) == {"losses", "lr", "eval"}
    assert plot_training_curves([{"type": "epoch", "epoch": 1}], out_dir=tmp_path / "empty") == {}
    image = np.zeros((64, 32, 3), dtype=np.uint8)
    cam = np.linspace(0, 1, 64 * 32).reshape(64, 32)
    out = draw_cam_grid(image, [CamRow("stage 1", (cam, None), ("a", "b"))], column_titles=("with SA", "without SA"),
                        out_path=tmp_path / "grid.png", title="t")
    row = CamRow("stage 2", (cam, cam), ("", ""))
    taller = draw_cam_grid(image, [row, row], column_titles=("with SA", "without SA"), out_path=tmp_path / "g2.png")
    with Image.open(out) as one, Image.open(taller) as two:
        assert one.width == two.width and two.height > one.height  # rows = stages, columns fixed
    with pytest.raises(SpanetError, match="columns"):
        draw_cam_grid(image, [CamRow("s", (cam,))], column_titles=("a", "b"), out_path=tmp_path / "x.png")


def test_draw_matches_of_a_gallery_search(tmp_path: Path) -> None:
    from spanet.deploy.index import GalleryIndex, IndexParams

    query = tmp_path / "q.jpg"
    Image.new("RGB", (20, 40), (255, 0, 0)).save(query)
    index = GalleryIndex.build(np.eye(3, dtype=np.float32), [str(query), "gone1.jpg", "gone2.jpg"], params=IndexParams())
    matches = index.search(np.eye(3, dtype=np.float32)[:1], top_k=3)[0]
    out = draw_matches(str(query), matches, out_path=tmp_path / "pic" / "q.png", thumb=(16, 32))
    with Image.open(out) as picture:
        assert picture.size[0] == 4 * (16 + 6) + 6

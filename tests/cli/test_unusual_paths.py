"""Good behaviours of issue 15 kept good: non-ASCII and space-holding paths go through extract -> index -> search
unchanged, and a gallery path that would break the one-path-per-line index file is refused, not written."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from builders import make_checkpoint, make_images
from spanet.cli import main
from spanet.deploy.index import GalleryIndex, choose_params
from spanet.errors import SpanetError


def test_unicode_and_spaces_in_paths_survive_extract_index_and_search(tmp_path: Path, capsys) -> None:
    folder = tmp_path / "données 画像" / "caméra 1"
    images = make_images(folder, count=3, seed=2)
    checkpoint = make_checkpoint(tmp_path / "modèle ü.pt")
    feats, index, results = tmp_path / "é feats.npz", tmp_path / "índice", tmp_path / "résultats.json"
    assert main(["extract", "--checkpoint", str(checkpoint), str(folder), "--out", str(feats), "--quiet",
                 "--device", "cpu", "--kind", "global"]) == 0  # fmt: skip
    assert main(["index", "build", str(feats), "--out", str(index)]) == 0
    assert main(["search", "--checkpoint", str(checkpoint), "--index", str(index), str(images[1]), "--top-k", "1",
                 "--json", str(results), "--quiet", "--device", "cpu"]) == 0  # fmt: skip
    (record,) = json.loads(results.read_text(encoding="utf-8"))
    assert record["query"] == str(images[1]) and record["matches"][0]["path"] == str(images[1])
    assert "error" not in capsys.readouterr().err


def test_a_gallery_path_with_a_line_break_is_refused(tmp_path: Path) -> None:
    features = np.random.default_rng(0).standard_normal((2, 8)).astype(np.float32)
    gallery = GalleryIndex.build(features, ["a.jpg", "b\nc.jpg"], params=choose_params(2, 8, kind="flat"))
    with pytest.raises(SpanetError, match="line break"):
        gallery.save(tmp_path / "index")
    assert not (tmp_path / "index" / "paths.txt").exists()

"""collect_images: files, folders and glob patterns become image paths; an item that matches nothing is an error."""

from __future__ import annotations

from pathlib import Path

import pytest

from builders import make_images, write_images
from spanet.data.images import collect_images
from spanet.errors import SpanetError




def test_collect_images_files_folders_globs(tmp_path: Path) -> None:
    images = make_images(tmp_path / "images", count=5)
    root = images[0].parent.parent
    (root / "notes.txt").write_text("not an image")
    # folders are searched recursively and only image files count
    assert sorted(collect_images([root])) == sorted(images)
    assert sorted(collect_images([str(root / "**" / "*.jpg")])) == sorted(images)
    # explicit files keep their order; duplicates are dropped
    assert collect_images([images[3], images[1], images[3]]) == [images[3], images[1]]
    with pytest.raises(SpanetError, match="not a file, folder or glob"):
        collect_images([tmp_path / "missing.jpg"])
    with pytest.raises(SpanetError, match="matches no image"):
        collect_images([str(tmp_path / "*.png")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(SpanetError, match="holds no images"):
        collect_images([tmp_path / "empty"])


def test_collect_images_order_and_duplicates(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    paths = write_images(tmp_path / "d", ["b.jpg", "a.jpg"])
    (tmp_path / "d" / "notes.txt").write_text("x")
    assert collect_images([tmp_path / "d"]) == sorted(paths)
    assert collect_images([str(tmp_path / "d" / "a.*"), paths[0]]) == [paths[1], paths[0]]
    with pytest.raises(SpanetError, match="missing\\*\\.jpg matches no image"):
        collect_images([tmp_path / "missing*.jpg"])
    # the same file spelled relative and absolute is one image, kept as first given (relative stays relative)
    monkeypatch.chdir(tmp_path)
    assert collect_images(["./d/a.jpg", paths[1], "d"]) == [Path("d/a.jpg"), Path("d/b.jpg")]

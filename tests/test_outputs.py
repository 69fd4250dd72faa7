"""`spanet.outputs`: the one guarded, atomic way every command writes an output (issue 29)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from spanet.cli import main
from spanet.errors import SpanetError
from spanet.features import save_features
from spanet.outputs import FEATURES_FILE_KIND, JSON_FILE, guard_file, guard_folder, is_checkpoint, write_json, write_text


def _features(path: Path, count: int) -> Path:
    rng = np.random.default_rng(count)
    return save_features(path, features=rng.normal(size=(count, 8)).astype(np.float32),
                         paths=[f"img{i}.jpg" for i in range(count)], info={"feature_dim": 8})  # fmt: skip


def test_checkpoints_are_recognised_by_suffix_and_by_content(tmp_path: Path) -> None:
    torch.save({"w": torch.ones(2)}, tmp_path / "weights.bin")
    assert is_checkpoint(tmp_path / "weights.bin") and is_checkpoint(tmp_path / "not_yet.pt")
    assert not is_checkpoint(_features(tmp_path / "f.npz", 3))  # also a zip archive, but not torch's


def test_an_input_is_never_an_output_even_through_a_symlink(tmp_path: Path) -> None:
    data = tmp_path / "calib.csv"
    data.write_text("path,label\n")
    (tmp_path / "link.json").symlink_to(data)
    with pytest.raises(SpanetError, match="is also an input"):
        guard_file(tmp_path / "link.json", option="--out", kind=JSON_FILE, inputs=[data])
    with pytest.raises(SpanetError, match="is also an input"):
        guard_folder(tmp_path / "sub" / ".." / "calib.csv", option="--out", inputs=[data])


def test_other_kinds_are_refused_own_kind_needs_overwrite_and_is_kept(tmp_path: Path) -> None:
    notes = tmp_path / "notes.json"
    notes.write_text("my notes, not JSON")
    with pytest.raises(SpanetError, match="is not a JSON file"):
        guard_file(notes, option="--json", kind=JSON_FILE, overwrite=True)
    old = write_json(tmp_path / "m.json", {"rank1": 0.5})
    with pytest.raises(SpanetError, match="--overwrite"):
        guard_file(old, option="--json", kind=JSON_FILE)
    guard_file(old, option="--json", kind=JSON_FILE, overwrite=True)
    assert json.loads(old.read_text()) == {"rank1": 0.5}  # still in place until the new one replaces it
    write_json(old, {"rank1": 0.7})
    (kept,) = tmp_path.glob("m.json.replaced-*")
    assert json.loads(kept.read_text()) == {"rank1": 0.5} and json.loads(old.read_text()) == {"rank1": 0.7}


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp_file(tmp_path: Path) -> None:
    path = write_text(tmp_path / "a.json", "{}")
    from spanet.outputs import atomic_path

    with pytest.raises(RuntimeError), atomic_path(path) as tmp:
        tmp.write_text("half")
        raise RuntimeError("disk full")
    assert path.read_text() == "{}" and sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]


def test_bad_parents_are_one_line_errors(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("x")
    for guard in (lambda p: guard_file(p, option="--out", kind=JSON_FILE), lambda p: guard_folder(p, option="--out")):
        with pytest.raises(SpanetError, match="is a file, not a folder"):
            guard(tmp_path / "afile" / "run")
        with pytest.raises(SpanetError, match="cannot be written"):
            guard(Path("/proc/run"))
    with pytest.raises(SpanetError, match=r"must end in \.npz"):
        guard_file(tmp_path / "f.json", option="--out", kind=FEATURES_FILE_KIND)


def test_index_build_and_extract_never_silently_replace_their_output(tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    """Bug: `index build --out` and `extract --out` silently replaced an existing index / features file (a 31-vector
    index became a 15-vector one)."""
    big, small = _features(tmp_path / "big.npz", 31), _features(tmp_path / "small.npz", 15)
    index = tmp_path / "index"
    assert main(["index", "build", str(big), "--out", str(index)]) == 0
    before = (index / "paths.txt").read_text()
    assert main(["index", "build", str(small), "--out", str(index)]) == 2
    assert "already holds an index folder; pass --overwrite" in capsys.readouterr().err
    assert (index / "paths.txt").read_text() == before
    assert main(["index", "build", str(small), "--out", str(index), "--overwrite"]) == 0
    (aside,) = tmp_path.glob("index.replaced-*")
    assert (aside / "paths.txt").read_text() == before and len((index / "paths.txt").read_text().splitlines()) == 15

    kept = big.read_bytes()
    assert main(["extract", "--checkpoint", str(tmp_path / "model.pt"), "--out", str(big), str(tmp_path)]) == 2
    assert "already holds a features file; pass --overwrite" in capsys.readouterr().err
    assert big.read_bytes() == kept

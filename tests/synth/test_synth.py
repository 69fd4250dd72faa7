"""The synthetic dataset: Market-1501 layout and names, honest counts, determinism, cross-camera matches, CLI."""

from __future__ import annotations

import hashlib
import json
import re
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from spanet.cli import main
from spanet.errors import SpanetError
from spanet.data.datasets import SYNTH_MANIFEST
from spanet.synth.generate import SYNTH_PRESETS, generate_dataset

MARKET_NAME = re.compile(r"^(-1|\d{4})_c(\d)s(\d)_(\d{6})_(\d{2})\.jpg$")
SPLITS = {"train": "bounding_box_train", "query": "query", "gallery": "bounding_box_test"}
SMALL = dict(train_ids=4, test_ids=3, cameras=3, images_per_id=5, height=64, width=32, distractors=3, junk=2)


def _parse(folder: Path) -> list[tuple[int, int]]:
    """(pid, camera) for every file, failing on any name that is not Market-1501 style."""
    records = []
    for path in sorted(folder.iterdir()):
        match = MARKET_NAME.match(path.name)
        assert match, f"not a Market-1501 name: {path.name}"
        records.append((int(match.group(1)), int(match.group(2))))
    return records


def _hashes(root: Path) -> dict[str, str]:
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def test_layout_names_and_image_size(tiny_market: Path) -> None:
    assert sorted(p.name for p in tiny_market.iterdir()) == sorted([*SPLITS.values(), SYNTH_MANIFEST])
    for folder in SPLITS.values():
        records = _parse(tiny_market / folder)
        assert records, f"{folder} is empty"
        assert all(1 <= camera <= SYNTH_PRESETS["tiny"]["cameras"] for _, camera in records)
    sample = next((tiny_market / "query").iterdir())
    with Image.open(sample) as image:
        assert image.format == "JPEG" and image.mode == "RGB"
        assert image.size == (SYNTH_PRESETS["tiny"]["width"], SYNTH_PRESETS["tiny"]["height"])


def test_manifest_counts_equal_files_on_disk(tiny_market: Path) -> None:
    manifest = json.loads((tiny_market / SYNTH_MANIFEST).read_text())
    junk = 0
    for split, folder in SPLITS.items():
        records = _parse(tiny_market / folder)
        junk += sum(pid == -1 for pid, _ in records)
        kept = [(pid, camera) for pid, camera in records if pid != -1]
        expected = {
            "images": len(kept),
            "ids": len({pid for pid, _ in kept}),
            "cameras": len({camera for _, camera in kept}),
        }
        assert manifest[split] == expected, split
    assert manifest["junk_images"] == junk == SYNTH_PRESETS["tiny"]["junk"]
    assert manifest["options"]["train_ids"] == SYNTH_PRESETS["tiny"]["train_ids"]


def test_identities_split_like_market(tiny_market: Path) -> None:
    preset = SYNTH_PRESETS["tiny"]
    train = {pid for pid, _ in _parse(tiny_market / "bounding_box_train")}
    query = _parse(tiny_market / "query")
    gallery = _parse(tiny_market / "bounding_box_test")
    gallery_ids = {pid for pid, _ in gallery}
    assert train == set(range(1, preset["train_ids"] + 1))
    first_test = preset["train_ids"] + 1
    assert {pid for pid, _ in query} == set(range(first_test, first_test + preset["test_ids"]))
    assert not train & gallery_ids and not train & {pid for pid, _ in query}
    assert sum(pid == 0 for pid, _ in gallery) == preset["distractors"]
    assert sum(pid == -1 for pid, _ in gallery) == preset["junk"]
    assert 0 not in train and -1 not in train
    assert len(query) == len(set(query)), "one query per identity and camera"
    gallery_cameras = defaultdict(set)
    for pid, camera in gallery:
        gallery_cameras[pid].add(camera)
    for pid, camera in query:
        assert gallery_cameras[pid] - {camera}, f"query {pid} in camera {camera} has no cross-camera match"


def test_same_seed_same_bytes_other_seed_differs(tmp_path: Path) -> None:
    first = _hashes(Path(generate_dataset(tmp_path / "a", **SMALL, seed=3, progress=False).out_dir))
    second = _hashes(Path(generate_dataset(tmp_path / "b", **SMALL, seed=3, progress=False).out_dir))
    other = _hashes(Path(generate_dataset(tmp_path / "c", **SMALL, seed=4, progress=False).out_dir))
    assert first == second
    images = {name: digest for name, digest in first.items() if name.endswith(".jpg")}
    other_images = {name: digest for name, digest in other.items() if name.endswith(".jpg")}
    assert images and set(images.values()).isdisjoint(other_images.values())


def test_images_are_varied_pictures(tiny_market: Path) -> None:
    """Not blank, and pictures of one person differ (jitter, viewpoint, camera)."""
    paths = sorted((tiny_market / "bounding_box_train").glob("0001_*.jpg"))
    arrays = [np.asarray(Image.open(path), dtype=np.float32) for path in paths]
    assert len(arrays) >= 2
    assert all(array.std() > 10 for array in arrays)
    assert np.abs(arrays[0] - arrays[1]).mean() > 5


def test_regenerating_a_previous_output_replaces_it(tmp_path: Path) -> None:
    generate_dataset(tmp_path, **{**SMALL, "junk": 5}, progress=False)
    summary = generate_dataset(tmp_path, **SMALL, progress=False)
    junk_files = list((tmp_path / "bounding_box_test").glob("-1_*.jpg"))
    assert len(junk_files) == summary.junk_images == SMALL["junk"]


def test_refuses_foreign_non_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(SpanetError, match=re.escape(str(tmp_path))):
        generate_dataset(tmp_path, **SMALL, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]
    generate_dataset(tmp_path, **SMALL, progress=False, overwrite=True)
    assert (tmp_path / "notes.txt").read_text() == "mine"
    assert (tmp_path / SYNTH_MANIFEST).is_file()


@pytest.mark.parametrize("bad", [{"cameras": 1}, {"images_per_id": 3}, {"train_ids": 0}, {"cameras": 10}])
def test_rejects_impossible_options(tmp_path: Path, bad: dict) -> None:
    with pytest.raises(SpanetError, match="invalid synth options"):
        generate_dataset(tmp_path / "out", **{**SMALL, **bad}, progress=False)


def test_cli_flags_override_preset(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "synth"
    code = main(["synth", str(out), "--preset", "tiny", "--train-ids", "3", "--cameras", "2", "--junk", "1",
                 "--height", "64", "--width", "32", "--no-progress"])
    assert code == 0
    manifest = json.loads((out / SYNTH_MANIFEST).read_text())
    assert manifest["options"]["train_ids"] == 3 and manifest["options"]["cameras"] == 2
    assert manifest["options"]["test_ids"] == SYNTH_PRESETS["tiny"]["test_ids"]
    assert manifest["train"]["ids"] == 3 and manifest["train"]["cameras"] == 2
    printed = capsys.readouterr().out
    assert str(out) in printed and "images/s" in printed
    assert re.search(rf"train\s+{manifest['train']['images']}\s+3\s+2", printed)


def test_cli_non_empty_folder_is_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "photo.jpg").write_bytes(b"x")
    assert main(["synth", str(tmp_path), "--preset", "tiny", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "--overwrite" in err and str(tmp_path) in err and "\n" not in err


def test_crowd_and_occlusion_change_identity_pictures_only_and_are_recorded(tmp_path: Path) -> None:
    plain = _hashes(generate_dataset(tmp_path / "plain", **SMALL, progress=False).out_dir)
    crowded_dir = generate_dataset(tmp_path / "crowd", **SMALL, crowd=1.0, progress=False).out_dir
    crowded = _hashes(crowded_dir)
    again = _hashes(generate_dataset(tmp_path / "again", **SMALL, crowd=1.0, progress=False).out_dir)
    assert crowded == again  # still deterministic
    identity = [name for name in plain if name.endswith(".jpg") and Path(name).name[:4] not in ("-1_c", "0000")]
    others = [name for name in plain if name.endswith(".jpg") and name not in identity]
    assert identity and others
    assert all(plain[name] != crowded[name] for name in identity)  # every identity picture has a companion
    assert all(plain[name] == crowded[name] for name in others)  # distractors and junk are untouched
    manifest = json.loads((crowded_dir / SYNTH_MANIFEST).read_text())
    assert manifest["options"]["crowd"] == 1.0 and "occlusion" not in manifest["options"]
    assert "crowd" not in json.loads((tmp_path / "plain" / SYNTH_MANIFEST).read_text())["options"]

    never = _hashes(generate_dataset(tmp_path / "never", **SMALL, occlusion=0.0, progress=False).out_dir)
    always = _hashes(generate_dataset(tmp_path / "always", **SMALL, occlusion=1.0, progress=False).out_dir)
    jpgs = [name for name in plain if name.endswith(".jpg")]
    # the cameras' own 0.15-0.45 occlude some pictures: switching occluders off or on for all changes some of them
    assert any(never[name] != plain[name] for name in jpgs) and any(always[name] != plain[name] for name in jpgs)
    assert all(never[name] != always[name] for name in jpgs)


@pytest.mark.parametrize("bad", [{"crowd": 1.5}, {"crowd": -0.1}, {"occlusion": 2.0}])
def test_rejects_crowd_or_occlusion_outside_zero_one(tmp_path: Path, bad: dict) -> None:
    with pytest.raises(SpanetError, match="crowd and occlusion"):
        generate_dataset(tmp_path / "out", **{**SMALL, **bad}, progress=False)


def test_cli_crowd_and_occlusion_flags(tmp_path: Path) -> None:
    out = tmp_path / "synth"
    assert main(["synth", str(out), "--preset", "tiny", "--crowd", "0.5", "--occlusion", "0.7", "--no-progress"]) == 0
    options = json.loads((out / SYNTH_MANIFEST).read_text())["options"]
    assert (options["crowd"], options["occlusion"]) == (0.5, 0.7)

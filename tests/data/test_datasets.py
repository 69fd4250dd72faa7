"""Dataset readers: layouts, conventions (junk, distractors, relabelling) and clear errors on bad input."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch
from PIL import Image

from spanet.data.datasets import (
    DATASET_NAMES,
    DatasetCountWarning,
    ReidDataset,
    Sample,
    dataset_statistics,
    load_dataset,
)
from spanet.data.images import ImageDataset, read_image
from builders import MARKET_DIRS, MARKET_FILES, write_image, write_market
from spanet.errors import SpanetError

def write_msmt(root: Path) -> Path:
    """A tiny MSMT17_V1 layout: train/ and test/ with per-id subfolders, and the four list files."""
    lists = {
        "list_train.txt": ["0000/0000_000_01_0303morning_0015_0.jpg 0", "0000/0000_001_02_0303morning_0016_0.jpg 0",
                           "0005/0005_000_03_0303noon_0001_0.jpg 5"],
        "list_val.txt": ["0007/0007_000_15_0303noon_0002_1.jpg 7"],
        "list_query.txt": ["0000/0000_000_04_0303morning_0001_0.jpg 0", "0001/0001_000_05_0303morning_0002_0.jpg 1"],
        "list_gallery.txt": ["0000/0000_001_06_0303morning_0003_0.jpg 0", "0001/0001_001_04_0303morning_0004_0.jpg 1",
                             "0001/0001_002_07_0303morning_0005_0.jpg 1"],
    }
    for list_name, lines in lists.items():
        image_dir = root / ("train" if list_name in ("list_train.txt", "list_val.txt") else "test")
        for line in lines:
            write_image(image_dir / line.split()[0])
        (root / list_name).write_text("\n".join(lines) + "\n")
    return root


def test_market_layout_conventions(tmp_path: Path) -> None:
    ds = load_dataset("market1501", write_market(tmp_path / "any_name"))
    assert isinstance(ds, ReidDataset)
    # Train ids relabelled in sorted order of the originals: 3 -> 0, 7 -> 1, 12 -> 2.
    by_name = {Path(s.path).name: s for s in ds.train}
    assert by_name["0003_c1s1_000003_00.jpg"].pid == 0
    assert by_name["0007_c2s1_000002_00.jpg"].pid == 1
    assert by_name["0012_c2s1_000005_00.jpg"].pid == 2
    assert ds.num_train_ids == 3
    # Cameras 0-based; query/gallery keep original ids; junk dropped; distractor 0 kept in the gallery.
    assert by_name["0007_c2s1_000002_00.jpg"].camid == 1
    assert sorted(s.pid for s in ds.query) == [21, 22]
    assert sorted(s.pid for s in ds.gallery) == [0, 21, 22, 22]
    assert all(Path(s.path).is_absolute() and Path(s.path).is_file() for s in ds.train + ds.query + ds.gallery)
    assert ds.problems == () and ds.skipped == ()


def test_statistics_shape_counts_distractor_as_id(tmp_path: Path) -> None:
    stats = dataset_statistics(load_dataset("market1501", write_market(tmp_path)))
    assert stats == {
        "train": {"images": 5, "ids": 3, "cameras": 3},
        "query": {"images": 2, "ids": 2, "cameras": 2},
        "gallery": {"images": 4, "ids": 3, "cameras": 3},
    }


def test_reading_is_deterministic(tmp_path: Path) -> None:
    root = write_market(tmp_path)
    assert load_dataset("market1501", root) == load_dataset("market1501", root)


def test_parent_folder_with_usual_name(tmp_path: Path) -> None:
    write_market(tmp_path / "Market-1501-v15.09.15")
    with warnings.catch_warnings(record=True):  # a tiny "official" folder: the count warning is tested below
        warnings.simplefilter("always")
        ds = load_dataset("market1501", tmp_path)
    assert ds.root.name == "Market-1501-v15.09.15"
    assert len(ds.train) == 5


def test_full_real_dataset_count_mismatch_warns(tmp_path: Path) -> None:
    write_market(tmp_path / "Market-1501-v15.09.15")
    with pytest.warns(DatasetCountWarning, match="12936"):
        ds = load_dataset("market1501", tmp_path)
    assert "train has 5 images, expected 12936 (the published market1501 statistics)" in ds.problems


def test_custom_folder_is_not_compared_with_published_counts(tmp_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error", DatasetCountWarning)
        ds = load_dataset("market1501", write_market(tmp_path / "my_cameras"))
    assert ds.problems == ()


def test_synth_summary_counts_are_compared(tmp_path: Path) -> None:
    root = write_market(tmp_path)
    stats = dataset_statistics(load_dataset("synthetic", root))
    (root / "spanet_synth.json").write_text(json.dumps({"options": {"seed": 0}, **stats}))
    assert load_dataset("synthetic", root).problems == ()
    stats["gallery"]["images"] += 1
    (root / "spanet_synth.json").write_text(json.dumps(stats))
    with pytest.warns(DatasetCountWarning):
        ds = load_dataset("synthetic", root)
    assert ds.problems == (f"gallery has 4 images, expected 5 ({root / 'spanet_synth.json'})",)
    (root / "spanet_synth.json").write_text(json.dumps({"complete": False, "options": {}}))
    with pytest.warns(DatasetCountWarning, match="did not finish"):
        load_dataset("synthetic", root)


def test_tiny_synthetic_dataset_matches_its_summary(request: pytest.FixtureRequest) -> None:
    tiny_market = request.getfixturevalue("tiny_market")
    ds = load_dataset("synthetic", tiny_market)
    assert ds.problems == ()
    summary = json.loads((tiny_market / "spanet_synth.json").read_text())
    stats = dataset_statistics(ds)
    for split in ("train", "query", "gallery"):
        for key in summary[split]:
            assert stats[split][key] == summary[split][key]
    assert {s.pid for s in ds.train} == set(range(ds.num_train_ids))


def test_missing_folder_names_expected_layout(tmp_path: Path) -> None:
    write_market(tmp_path, {"train": MARKET_FILES["train"], "gallery": MARKET_FILES["gallery"]})
    with pytest.raises(SpanetError, match="missing query") as info:
        load_dataset("market1501", tmp_path)
    assert "bounding_box_train, query, bounding_box_test" in str(info.value)
    with pytest.raises(SpanetError, match="not a folder"):
        load_dataset("market1501", tmp_path / "nowhere")


def test_unparseable_file_names_listed(tmp_path: Path) -> None:
    bad = [f"person{i}.jpg" for i in range(7)]
    write_market(tmp_path, {**MARKET_FILES, "train": MARKET_FILES["train"] + bad})
    with pytest.raises(SpanetError, match="7 image file names") as info:
        load_dataset("market1501", tmp_path)
    message = str(info.value)
    assert "person0.jpg" in message and "(and 2 more)" in message and "0002_c1s1_000451_03.jpg" in message


def test_png_files_with_market_names_are_blamed_on_their_format_not_their_names(tmp_path: Path) -> None:
    """Poor: check-data said the .png files "do not follow the naming" although only their format differed."""
    pngs = {split: [name.replace(".jpg", ".png") for name in names] for split, names in MARKET_FILES.items()}
    write_market(tmp_path, pngs)
    with pytest.raises(SpanetError, match=r"are \.png files, but market1501 file names end in \.jpg") as info:
        load_dataset("market1501", tmp_path)
    assert "naming" not in str(info.value) and "0007_c1s1_000001_00.png" in str(info.value)


def test_non_image_files_are_ignored(tmp_path: Path) -> None:
    root = write_market(tmp_path)
    (root / "bounding_box_test" / "Thumbs.db").write_bytes(b"\x00\x01")
    (root / "query" / "._0021_c1s1_000010_00.jpg").write_bytes(b"mac resource fork")
    assert len(load_dataset("market1501", root).gallery) == 4


def test_camera_zero_is_unparseable(tmp_path: Path) -> None:
    write_market(tmp_path, {**MARKET_FILES, "query": ["0021_c0s1_000010_00.jpg"]})
    with pytest.raises(SpanetError, match="0021_c0s1_000010_00.jpg"):
        load_dataset("market1501", tmp_path)


def test_empty_split_after_junk(tmp_path: Path) -> None:
    write_market(tmp_path, {**MARKET_FILES, "query": ["-1_c1s1_000010_00.jpg"]})
    with pytest.raises(SpanetError, match="query split .* has no images"):
        load_dataset("market1501", tmp_path)


def test_unknown_dataset_lists_valid_names(tmp_path: Path) -> None:
    with pytest.raises(SpanetError) as info:
        load_dataset("market", tmp_path)
    assert all(name in str(info.value) for name in DATASET_NAMES)


def test_corrupt_image_error_names_file(tmp_path: Path) -> None:
    root = write_market(tmp_path)
    broken = root / "query" / "0022_c2s1_000011_00.jpg"
    broken.write_bytes(broken.read_bytes()[:40])  # truncated JPEG
    ds = load_dataset("market1501", root)  # names parse; images are not decoded by default
    with pytest.raises(SpanetError, match="0022_c2s1_000011_00.jpg"):
        ImageDataset(ds.query, lambda image: image)[1]
    with pytest.raises(SpanetError, match="0022_c2s1_000011_00.jpg"):
        load_dataset("market1501", root, verify_images=True)


def test_skip_corrupt_leaves_files_out_and_counts_them(tmp_path: Path) -> None:
    root = write_market(tmp_path)
    (root / "bounding_box_test" / "0021_c2s1_000012_00.jpg").write_bytes(b"not a jpeg at all")
    ds = load_dataset("market1501", root, skip_corrupt=True)
    assert len(ds.gallery) == 3
    assert [Path(p).name for p in ds.skipped] == ["0021_c2s1_000012_00.jpg"]


def test_other_market_format_namings(tmp_path: Path) -> None:
    duke = write_market(tmp_path / "duke", {"train": ["0001_c2_f0046182.jpg"], "query": ["0005_c8_f0000001.jpg"],
                                            "gallery": ["0005_c1_f0000002.jpg", "0000_c3_f0000003.jpg"]})
    ds = load_dataset("dukemtmc", duke)
    assert [(s.pid, s.camid) for s in ds.query] == [(5, 7)]
    cuhk = write_market(tmp_path / "cuhk03-np" / "detected",
                        {"train": ["0001_c1_1.png", "0001_c2_2.png"], "query": ["0003_c1_1.png"],
                         "gallery": ["0003_c2_4.png"]})
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        ds = load_dataset("cuhk03_detected", tmp_path / "cuhk03-np")  # parent of detected/
    assert ds.root == cuhk.resolve() and len(ds.train) == 2 and ds.problems  # official name: tiny counts flagged
    with pytest.raises(SpanetError, match="dukemtmc naming"):  # Market names are not Duke names
        load_dataset("dukemtmc", write_market(tmp_path / "market"))


def test_msmt17_lists(tmp_path: Path) -> None:
    ds = load_dataset("msmt17", write_msmt(tmp_path / "anything"))
    # Train = list_train + list_val; ids 0, 5, 7 relabelled 0, 1, 2; camera = third `_` field, 1-based.
    assert sorted((s.pid, s.camid) for s in ds.train) == [(0, 0), (0, 1), (1, 2), (2, 14)]
    assert sorted((s.pid, s.camid) for s in ds.query) == [(0, 3), (1, 4)]
    assert dataset_statistics(ds)["gallery"] == {"images": 3, "ids": 2, "cameras": 3}


def test_msmt17_bad_line_and_missing_file(tmp_path: Path) -> None:
    root = write_msmt(tmp_path / "MSMT17_V1")
    (root / "list_query.txt").write_text("0000/0000_000_04_0303morning_0001_0.jpg\n")
    with pytest.raises(SpanetError, match=r"list_query.txt:1"):
        load_dataset("msmt17", tmp_path)
    (root / "list_query.txt").write_text("0009/0009_000_04_0303morning_0001_0.jpg 9\n")
    with pytest.raises(SpanetError, match="0009_000_04_0303morning_0001_0.jpg"):
        load_dataset("msmt17", tmp_path)


def test_msmt17_missing_lists_named(tmp_path: Path) -> None:
    with pytest.raises(SpanetError, match="list_train.txt"):
        load_dataset("msmt17", tmp_path)


def test_read_image_converts_to_rgb(tmp_path: Path) -> None:
    path = tmp_path / "gray.png"
    Image.new("L", (8, 16), 200).save(path)
    image = read_image(path)
    assert image.mode == "RGB" and image.size == (8, 16)
    with pytest.raises(SpanetError, match="not found"):
        read_image(tmp_path / "missing.jpg")


def test_image_dataset_items(tmp_path: Path) -> None:
    write_image(tmp_path / "a.png", size=(8, 16))
    dataset = ImageDataset([Sample(str(tmp_path / "a.png"), 4, 1)], lambda image: torch.zeros(image.size))
    tensor, pid, camid, index = dataset[0]
    assert tensor.shape == (8, 16) and (pid, camid, index) == (4, 1, 0) and len(dataset) == 1

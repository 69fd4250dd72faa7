"""`spanet check-data`: the table, the --json shape, exit codes, and one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from spanet.cli import main
from spanet.data.datasets import DATASET_NAMES, dataset_statistics, load_dataset
from builders import write_market


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["check-data", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_table_and_exit_zero(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, "--dataset", "market1501", "--data-root", str(write_market(tmp_path)))
    assert code == 0
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines() if line.split()[:1] in
            (["train"], ["query"], ["gallery"])}
    assert rows == {"train": ["5", "3", "3"], "query": ["2", "2", "2"], "gallery": ["4", "3", "3"]}
    assert "no problems found" in out


def test_json_is_exactly_the_statistics(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = write_market(tmp_path)
    code, out, _ = _run(capsys, "--dataset", "market1501", "--data-root", str(root), "--json")
    assert code == 0
    assert json.loads(out) == dataset_statistics(load_dataset("market1501", root))


def test_synthetic_counts_equal_generator_summary(capsys: pytest.CaptureFixture[str],
                                                  request: pytest.FixtureRequest) -> None:
    root = request.getfixturevalue("tiny_market")
    code, out, _ = _run(capsys, "--dataset", "synthetic", "--data-root", str(root), "--json")
    summary = json.loads((root / "spanet_synth.json").read_text())
    assert code == 0
    assert json.loads(out) == {split: summary[split] for split in ("train", "query", "gallery")}


def test_count_mismatch_is_a_problem(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = write_market(tmp_path)
    stats = dataset_statistics(load_dataset("market1501", root))
    stats["train"]["ids"] = 4
    (root / "spanet_synth.json").write_text(json.dumps(stats))
    code, out, _ = _run(capsys, "--dataset", "synthetic", "--data-root", str(root), "--json")
    assert code == 1
    assert json.loads(out)["problems"] == [f"train has 3 ids, expected 4 ({root / 'spanet_synth.json'})"]
    code, out, _ = _run(capsys, "--dataset", "synthetic", "--data-root", str(root))
    assert code == 1 and "1 problem(s):" in out and "train has 3 ids, expected 4" in out


def test_corrupt_image_stops_or_is_skipped(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = write_market(tmp_path)
    broken = root / "bounding_box_train" / "0012_c2s1_000005_00.jpg"
    broken.write_bytes(b"\xff\xd8 truncated")
    args = ("--dataset", "market1501", "--data-root", str(root))
    code, out, err = _run(capsys, *args)
    assert code == 2 and out == "" and err.count("\n") == 1 and str(broken) in err
    code, out, _ = _run(capsys, *args, "--no-verify-images")
    assert code == 0 and "images not decoded" in out
    code, out, _ = _run(capsys, *args, "--skip-corrupt")
    assert code == 0 and "skipped 1 corrupt image(s)" in out and str(broken) in out
    code, out, _ = _run(capsys, *args, "--skip-corrupt", "--json")
    result = json.loads(out)
    assert result["skipped_corrupt"] == [str(broken)] and result["train"]["images"] == 4


def test_missing_folder_and_unknown_dataset_are_one_line_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = _run(capsys, "--dataset", "market1501", "--data-root", str(tmp_path))
    assert code == 2 and err.startswith("error: no Market-1501") and "bounding_box_train" in err
    assert err.count("\n") == 1
    code, _, err = _run(capsys, "--dataset", "imagenet", "--data-root", str(tmp_path))
    assert code == 2 and all(name in err for name in DATASET_NAMES)


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    import spanet

    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0 and capsys.readouterr().out.strip() == f"spanet {spanet.__version__}"


def test_a_dataset_where_no_query_can_be_scored_is_reported_before_any_work(tmp_path: Path, capsys) -> None:
    """Every query's id appears in the gallery only under the query's own camera: the protocol skips them all."""
    files = {
        "train": ["0007_c1s1_000001_00.jpg", "0007_c2s1_000002_00.jpg", "0003_c1s1_000003_00.jpg"],
        "query": ["0021_c1s1_000010_00.jpg", "0022_c2s1_000011_00.jpg"],
        "gallery": ["0021_c1s1_000012_00.jpg", "0022_c2s1_000013_00.jpg", "0000_c1s1_000015_00.jpg"],
    }
    root = write_market(tmp_path / "data", files)
    code, out, _ = _run(capsys, "--dataset", "market1501", "--data-root", str(root))
    assert code == 1 and "no query has a true match in another camera" in out
    code = main(["train", "--dataset", "market1501", "--data-root", str(root), "--output", str(tmp_path / "run"),
                 "--device", "cpu", "--set", "model.backbone=resnet18"])  # fmt: skip
    assert code == 2 and "no query has a true match" in capsys.readouterr().err
    assert not (tmp_path / "run" / "last.pt").exists()


def test_an_error_from_a_loader_worker_is_one_line() -> None:
    """torch re-raises a worker's SpanetError with the worker traceback folded into the message."""
    from spanet.cli import one_line
    from spanet.errors import SpanetError

    folded = SpanetError(
        "Caught SpanetError in DataLoader worker process 0.\nOriginal Traceback (most recent call last):\n"
        '  File "x.py", line 1, in f\n    raise SpanetError(...)\n'
        "spanet.errors.SpanetError: cannot read image /d/a.jpg (OSError: truncated); the file is corrupt"
    )
    assert one_line(folded) == "cannot read image /d/a.jpg (OSError: truncated); the file is corrupt"
    assert one_line(SpanetError("plain message")) == "plain message"


def test_a_corrupt_image_read_in_a_real_worker_gives_one_line(tmp_path: Path) -> None:
    from torch.utils.data import DataLoader

    from spanet.cli import one_line
    from spanet.data.datasets import Sample
    from spanet.data.images import ImageDataset
    from spanet.errors import SpanetError

    broken = tmp_path / "0001_c1s1_000001_00.jpg"
    broken.write_bytes(b"\xff\xd8\xff not really a jpeg")
    loader = DataLoader(ImageDataset([Sample(str(broken), 1, 0)], transform=lambda image: 0), num_workers=1)
    with pytest.raises(SpanetError) as info:
        next(iter(loader))
    message = one_line(info.value)
    assert message.startswith(f"cannot read image {broken}") and "\n" not in message

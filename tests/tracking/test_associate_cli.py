"""synth-video -> associate end to end on a tiny setting, through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from builders import make_checkpoint
from spanet.cli import main
from spanet.tracking.mot import read_tracks


@pytest.fixture(scope="module")
def footage(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("video") / "footage"
    assert main(["synth-video", str(out), "--cameras", "2", "--people", "10", "--seconds", "3", "--fps", "5",
                 "--size", "160x96", "--seed", "1"]) == 0  # fmt: skip
    return out


def test_synth_video_then_associate(footage: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    checkpoint = make_checkpoint(tmp_path / "model.pt")
    sequences = [footage / "cam1", footage / "cam2"]
    tracks = [s / "gt" / "gt.txt" for s in sequences]
    out = tmp_path / "assoc"
    code = main(["associate", "--sequences", *map(str, sequences), "--tracks", *map(str, tracks), "--checkpoint",
                 str(checkpoint), "--out", str(out), "--crops-per-track", "3", "--device", "cpu"])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    assert "derived from this footage" in printed  # no threshold given: the rule, and it says so
    assert "features centred per camera" in printed
    for sequence, gt in zip(sequences, tracks):
        written, given = read_tracks(out / f"{sequence.name}.txt"), read_tracks(gt)
        assert len(written) == len(given)
        np.testing.assert_array_equal(np.sort(written.frames), np.sort(given.frames))
    summary = json.loads((out / "association.json").read_text())
    rows = summary["tracks"]
    assert len(rows) == sum(len(read_tracks(t).track_ids()) for t in tracks)
    assert {r["global_id"] for r in rows} == set(range(1, 1 + len({r["global_id"] for r in rows})))
    page = (out / "index.html").read_text()
    assert page.count("<tr>") == 1 + len({r["global_id"] for r in rows})
    assert len(list((out / "thumbs").glob("*.jpg"))) == len(rows)


def test_associate_refuses_a_users_folder(footage: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    checkpoint = make_checkpoint(tmp_path / "model.pt")
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    seq = footage / "cam1"
    code = main(["associate", "--sequences", str(seq), "--tracks", str(seq / "gt" / "gt.txt"), "--checkpoint",
                 str(checkpoint), "--out", str(out), "--device", "cpu"])  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err
    assert "not written by `spanet associate`" in err and len(err.strip().splitlines()) == 1
    assert (out / "notes.txt").read_text() == "keep me"


def test_associate_refuses_a_spanet_calibrate_file(footage: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """`spanet calibrate` thresholds are image-feature distances (parts: 0-24), not track distances (0-4)."""
    calibration = tmp_path / "calibration.json"
    calibration.write_text(json.dumps({"threshold": 1.8, "metric": "euclidean", "feature_kind": "parts"}))
    seq = footage / "cam1"
    code = main(["associate", "--sequences", str(seq), "--tracks", str(seq / "gt" / "gt.txt"), "--checkpoint",
                 str(make_checkpoint(tmp_path / "model.pt")), "--out", str(tmp_path / "out"), "--calibration",
                 str(calibration), "--device", "cpu"])  # fmt: skip
    assert code == 2 and "`spanet calibrate` file" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_disjoint_views_keep_tracks_at_the_same_moment_apart(footage: Path, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture) -> None:  # fmt: skip
    import shutil

    checkpoint = make_checkpoint(tmp_path / "model.pt")
    sequences = [footage / "cam1", footage / "cam2"]
    base = ["associate", "--tracks", *(str(s / "gt" / "gt.txt") for s in sequences), "--checkpoint", str(checkpoint),
            "--crops-per-track", "2", "--device", "cpu", "--threshold", "4", "--disjoint-views"]  # fmt: skip
    assert main([*base, "--sequences", *map(str, sequences), "--out", str(tmp_path / "assoc")]) == 0
    summary = json.loads((tmp_path / "assoc" / "association.json").read_text())
    assert summary["disjoint_views"] is True
    rows = summary["tracks"]  # the widest cut merges all it may: still no id at two places at once
    for i, a in enumerate(rows):
        for b in rows[i + 1 :]:
            if a["first"] <= b["last"] and b["first"] <= a["last"]:
                assert a["global_id"] != b["global_id"], (a, b)
    other = tmp_path / "cam2"  # the same camera said to run at another frame rate: frame N is not one moment
    shutil.copytree(sequences[1], other)
    ini = other / "seqinfo.ini"
    ini.write_text("\n".join("frameRate=7" if line.startswith("frameRate") else line
                             for line in ini.read_text().splitlines()) + "\n")  # fmt: skip
    capsys.readouterr()
    assert main([*base, "--sequences", str(sequences[0]), str(other), "--out", str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err
    assert "frame rates differ" in err and len(err.strip().splitlines()) == 1

"""MOTChallenge reading: every bad input is one error naming the file (and the line)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from spanet.errors import SpanetError
from spanet.tracking.mot import read_sequence, read_tracks, write_tracks


def make_sequence(root: Path, *, frames: int = 3, size: tuple[int, int] = (80, 60), ini: bool = True) -> Path:
    (root / "img1").mkdir(parents=True)
    for n in range(1, frames + 1):
        Image.new("RGB", size, (n * 40, 90, 30)).save(root / "img1" / f"{n:06d}.jpg")
    if ini:
        (root / "seqinfo.ini").write_text(
            f"[Sequence]\nname={root.name}\nimDir=img1\nframeRate=5\nseqLength={frames}\n"
            f"imWidth={size[0]}\nimHeight={size[1]}\nimExt=.jpg\n"
        )
    return root


def test_sequence_from_ini_or_from_frames(tmp_path: Path) -> None:
    with_ini = read_sequence(make_sequence(tmp_path / "camA"))
    assert (with_ini.name, with_ini.length, with_ini.width, with_ini.height) == ("camA", 3, 80, 60)
    bare = read_sequence(make_sequence(tmp_path / "camB", frames=2, size=(50, 40), ini=False))
    assert (bare.name, bare.length, bare.width, bare.height, bare.extension) == ("camB", 2, 50, 40, ".jpg")
    assert bare.frame_path(2).is_file()


def test_empty_sequence_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "empty" / "img1").mkdir(parents=True)
    with pytest.raises(SpanetError, match="empty sequence"):
        read_sequence(tmp_path / "empty")


def test_round_trip_with_new_ids(tmp_path: Path) -> None:
    path = tmp_path / "t.txt"
    path.write_text("2,7,10,5,20,30,0.9,-1,-1,-1\n1,7,11.5,5,20,30,1,-1,-1,-1\n\n1,3,40 ,10,10,20\n")
    tracks = read_tracks(path)
    assert tracks.track_ids() == [3, 7] and len(tracks) == 3
    out = write_tracks(tmp_path / "o.txt", tracks, ids=np.array([1, 1, 2]))
    assert out.read_text().splitlines() == [
        "1,1,11.50,5,20,30,1,-1,-1,-1", "1,2,40,10,10,20,1,-1,-1,-1", "2,1,10,5,20,30,0.90,-1,-1,-1",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("1,2,3", "expected 'frame, id, x, y, w, h"),
        ("1,a,3,4,5,6", "not a number"),
        ("0,1,3,4,5,6", "frame must be an integer >= 1"),
        ("1.5,1,3,4,5,6", "frame must be an integer >= 1"),
        ("1,1,3,4,0,6", "zero or negative size"),
        ("1,1,300,4,5,6", "outside the 80x60 frame"),
        ("1,1,-30,4,5,6", "outside the 80x60 frame"),
        ("9,1,3,4,5,6", "frame 9 does not exist"),
        ("1,1,nan,4,5,6", "box x, y, w, h must be finite"),  # was blamed on the frame and id
        ("1,1,3,4,inf,6", "box x, y, w, h must be finite"),
        ("nan,1,3,4,5,6", "frame must be an integer >= 1"),
    ],
)
def test_bad_track_line_names_file_and_line(tmp_path: Path, line: str, message: str) -> None:
    sequence = read_sequence(make_sequence(tmp_path / "cam"))
    path = tmp_path / "tracks.txt"
    path.write_text(f"1,1,3,4,5,6,1,-1,-1,-1\n{line}\n")
    with pytest.raises(SpanetError, match=message) as info:
        read_tracks(path, sequence=sequence)
    assert str(info.value).startswith(f"{path}:2:")


def test_an_empty_track_file_is_warned_about(tmp_path: Path) -> None:
    """Poor: associate accepted an empty track file without a word."""
    path = tmp_path / "tracks.txt"
    path.write_text("# no boxes\n\n")
    with pytest.warns(UserWarning, match="holds no boxes"):
        assert len(read_tracks(path)) == 0


def test_missing_frame_file_inside_the_length(tmp_path: Path) -> None:
    sequence = read_sequence(make_sequence(tmp_path / "cam"))
    sequence.frame_path(2).unlink()
    path = tmp_path / "tracks.txt"
    path.write_text("2,1,3,4,5,6\n")
    with pytest.raises(SpanetError, match=r"tracks.txt:1: frame 2 does not exist"):
        read_tracks(path, sequence=sequence)

"""Own data: folder-per-identity and CSV layouts, camera sources, splits, protocols and one-line errors."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from spanet.data.datasets import dataset_statistics, load_dataset
from spanet.data.own import write_split_list
from spanet.data.protocol import split_query_gallery
from spanet.data.datasets import Sample
from spanet.errors import SpanetError
from builders import write_image, write_own_data


def _folders(root: Path, spec: dict[str, list[str]]) -> Path:
    for identity, names in spec.items():
        for i, name in enumerate(names):
            write_image(root / identity / name, shade=10 * i)
    return root


def test_folders_with_market_camera_tags(tiny_market: Path, tmp_path: Path) -> None:
    ds = load_dataset("folders", write_own_data(tiny_market, tmp_path / "f", layout="folders", cameras=True))
    stats = dataset_statistics(ds)
    assert ds.protocol == "cross-camera" and stats["train"]["cameras"] == 3
    assert stats["train"]["ids"] + stats["query"]["ids"] == 14  # 8 + 6 synthetic identities, split by identity
    assert {s.pid for s in ds.query} == {s.pid for s in ds.gallery}
    assert not {Path(s.path).parent.name for s in ds.train} & {Path(s.path).parent.name for s in ds.query}
    for q in ds.query:  # Market rule: every query has a true match from another camera
        assert any(g.pid == q.pid and g.camid != q.camid for g in ds.gallery)
    assert len({(q.pid, q.camid) for q in ds.query}) == len(ds.query)


def test_folders_without_cameras_one_query_per_identity(tiny_market: Path, tmp_path: Path) -> None:
    ds = load_dataset("folders", write_own_data(tiny_market, tmp_path / "f", layout="folders", cameras=False))
    assert ds.protocol == "no-camera" and {s.camid for s in ds.query + ds.gallery} == {0}
    assert len(ds.query) == len({s.pid for s in ds.query}) == len({s.pid for s in ds.gallery})


def test_split_is_seeded_and_written_back_exactly(tiny_market: Path, tmp_path: Path) -> None:
    root = write_own_data(tiny_market, tmp_path / "f", layout="folders", cameras=True)
    first, again = load_dataset("folders", root), load_dataset("folders", root)
    other = load_dataset("folders", root, split_seed=1)
    assert first.query == again.query and first.train == again.train
    assert {s.pid for s in other.query} != {s.pid for s in first.query}
    assert len({s.pid for s in load_dataset("folders", root, test_fraction=0.25).query}) == 4  # round(0.25·14)
    listed = load_dataset("list", write_split_list(first, tmp_path / "split.csv"))
    assert (listed.train, listed.query, listed.gallery) == (first.train, first.query, first.gallery)


def test_cameras_csv_and_train_test_sub_roots(tmp_path: Path) -> None:
    spec = {f"train/p{i}": ["a.jpg", "b.jpg"] for i in range(2)} | {f"test/q{i}": ["a.png", "b.png"] for i in range(2)}
    root = _folders(tmp_path / "d", spec)
    rows = ["path,camera"] + [f"{ident}/{n},{'door' if n[0] == 'a' else 'lift'}" for ident, names in spec.items()
                              for n in names]
    (root / "cameras.csv").write_text("\n".join(rows) + "\n")
    ds = load_dataset("folders", root)
    assert ds.split_source == "split given by the data" and ds.protocol == "cross-camera"
    assert {Path(s.path).parent.name for s in ds.train} == {"p0", "p1"}
    assert [(Path(s.path).parent.name, s.camid) for s in ds.query] == [("q0", 0), ("q1", 0)]
    (root / "cameras.csv").write_text("path,camera\ntrain/p0/a.jpg,door\n")
    with pytest.raises(SpanetError, match="are not in .*cameras.csv"):
        load_dataset("folders", root)


def test_csv_with_split_column_and_relative_paths(tmp_path: Path) -> None:
    for name in ("x/1.jpg", "x/2.jpg", "x/3.jpg", "x/4.jpg", "x/5.jpg", "x/6.jpg"):
        write_image(tmp_path / name)
    (tmp_path / "l.csv").write_text("x/1.jpg,7,0,train\nx/2.jpg,8,1,train\nx/3.jpg,3,0,query\n"
                                    "x/4.jpg,3,1,gallery\nx/5.jpg,4,1,gallery\nx/6.jpg,-1,1,gallery\n")
    ds = load_dataset("list", tmp_path / "l.csv")
    assert [s.pid for s in ds.train] == [0, 1] and [s.pid for s in ds.gallery] == [3, 4]  # junk -1 dropped
    assert ds.query[0].path == str((tmp_path / "x/3.jpg").resolve())


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"a": ["1.jpg", "2.jpg"]}, "only 1 identities"),
        ({k: ["1_c1.jpg", "2_c1.jpg"] for k in "abcdef"}, "one camera"),
        ({**{k: ["1.jpg", "2.jpg"] for k in "abcde"}, "f": ["1.jpg"]}, "single image"),
    ],
)
def test_degenerate_data_fails_in_one_line(tmp_path: Path, spec: dict[str, list[str]], message: str) -> None:
    root = _folders(tmp_path / "d", spec)
    with pytest.raises(SpanetError, match=message) as info:
        # split seed 3 puts identity f in the test half for the single-image case
        load_dataset("folders", root, split_seed=3)
    assert "\n" not in str(info.value)


def test_no_valid_query_and_bad_csv_rows(tmp_path: Path) -> None:
    with pytest.raises(SpanetError, match="no valid query"):
        _check_no_query()
    write_image(tmp_path / "a.jpg")
    (tmp_path / "bad.csv").write_text("a.jpg,seven,0\n")
    with pytest.raises(SpanetError, match="1 rows of .* are not path,pid,camid"):
        load_dataset("list", tmp_path / "bad.csv")
    (tmp_path / "missing.csv").write_text("b.jpg,1,0\n")
    with pytest.raises(SpanetError, match="do not exist"):
        load_dataset("list", tmp_path / "missing.csv")


def _check_no_query() -> None:
    from spanet.data.protocol import check_splits

    gallery = [Sample("a", 1, 0), Sample("b", 1, 1), Sample("c", 2, 0), Sample("d", 2, 1)]
    check_splits([], [], gallery, pool=[], protocol="cross-camera", where="here")


def test_market_rule_keeps_a_cross_camera_match_for_every_query() -> None:
    samples = [Sample("a", 1, 0), Sample("b", 1, 1), Sample("c", 2, 0), Sample("d", 2, 0), Sample("e", 2, 2),
               Sample("f", 3, 0), Sample("g", 3, 0)]
    query, gallery = split_query_gallery(samples, cameras=True)
    # id 1: a (cam 0) is the query, b stays as its match; id 2: e would leave c no other-camera match; id 3: one camera
    assert [s.path for s in query] == ["a", "c"]
    assert [s.path for s in gallery] == ["b", "d", "e", "f", "g"]
    query, gallery = split_query_gallery(samples, cameras=False)
    assert [s.path for s in query] == ["a", "c", "f"]

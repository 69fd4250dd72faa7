"""Your own crops: a folder per identity (`folders`) or a CSV list (`list`), turned into train / query / gallery.

Most people's data is not in a benchmark layout and often has no camera ids. Two layouts cover it:

- `folders`: `ROOT/<identity>/*.jpg` (any file names), or `ROOT/train/<identity>/…` + `ROOT/test/<identity>/…`.
  Camera ids come from `ROOT/cameras.csv` (`path,camera`, paths relative to ROOT), else from a Market-style `_cN`
  in every file name, else there are none.
- `list`: a CSV file `path,pid,camid[,split]` (a header row is optional; paths relative to the file; an empty camid
  means unknown; split is train / test / query / gallery).

Without a given split, identities are split with a seeded generator (`test_fraction` of them go to test); the split
used can be written back as a `list` CSV (`write_split_list`) so a run can be repeated exactly. The test identities
become query and gallery by `split_query_gallery`: the Market rule with camera ids, one query per identity without.
"""

from __future__ import annotations

import csv
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path


from spanet.data.samples import ReidDataset, Sample, first_items, relabel_train
from spanet.data.images import IMAGE_EXTENSIONS, drop_corrupt
from spanet.data.names import camera_from_name
from spanet.data.protocol import CROSS_CAMERA, NO_CAMERA, check_splits, split_identities, split_query_gallery
from spanet.errors import SpanetError
from spanet.run_dir import SPLIT_FILE

__all__ = ["load_own_dataset", "write_split_list", "save_split_list", "SPLIT_LIST_NAME"]

SPLIT_LIST_NAME = SPLIT_FILE  # in a run or eval folder: the split used, readable with `--dataset list`
CAMERAS_FILE = "cameras.csv"
_SPLIT_NAMES = ("train", "test", "query", "gallery")


@dataclass(frozen=True)
class _Raw:
    """Samples as read, each with the split its source gave it ("" = not given), before the identity split."""

    samples: list[Sample]
    splits: list[str]
    has_cameras: bool


def load_own_dataset(
    name: str,
    root: str | Path,
    *,
    test_fraction: float = 0.5,
    split_seed: int = 0,
    skip_corrupt: bool = False,
    verify_images: bool = False,
    progress: bool = False,
) -> ReidDataset:
    """Read a `folders` or `list` dataset and split it; degenerate data raises one `SpanetError` line."""
    if not 0.0 < test_fraction < 1.0:
        raise SpanetError(f"--test-fraction must be between 0 and 1 (exclusive), got {test_fraction}")
    path = Path(root).expanduser()
    if name == "folders":
        if not path.is_dir():
            raise SpanetError(f"--data-root {path} is not a folder; point it at a folder with one sub-folder per identity")
        path = path.resolve()
        raw = _read_folders(path)
    else:
        if not path.is_file():
            raise SpanetError(f"--data-root {path} is not a file; point it at a CSV with columns path,pid,camid[,split]")
        path = path.resolve()
        raw = _read_csv(path)
    skipped: list[str] = []
    if skip_corrupt or verify_images:
        kept, skipped = drop_corrupt({"all": raw.samples}, skip=skip_corrupt, progress=progress)
        gone = set(skipped)
        pairs = [(s, sp) for s, sp in zip(raw.samples, raw.splits) if s.path not in gone]
        raw = _Raw([s for s, _ in pairs], [sp for _, sp in pairs], raw.has_cameras)
    train, query, gallery, pool, source = _assign_splits(raw, test_fraction=test_fraction, seed=split_seed, where=path)
    protocol = CROSS_CAMERA if raw.has_cameras else NO_CAMERA
    check_splits(train, query, gallery, pool=pool, protocol=protocol, where=str(path))
    return ReidDataset(
        name=name, root=path, train=relabel_train(train), query=tuple(query), gallery=tuple(gallery),
        skipped=tuple(skipped), protocol=protocol, split_source=source,
    )  # fmt: skip


def write_split_list(dataset: ReidDataset, path: str | Path) -> Path:
    """Write the dataset's train / query / gallery as a `list` CSV (absolute paths): `--dataset list` reads it back."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    no_camera = dataset.protocol == NO_CAMERA
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "pid", "camid", "split"])
        for split, samples in (("train", dataset.train), ("query", dataset.query), ("gallery", dataset.gallery)):
            for s in samples:
                writer.writerow([s.path, s.pid, "" if no_camera else s.camid, split])
    return path


def save_split_list(dataset: ReidDataset, folder: str | Path) -> Path | None:
    """For own data (`folders`, `list`), write `folder/split.csv`; benchmarks have a fixed split and get nothing."""
    if dataset.name not in ("folders", "list"):
        return None
    return write_split_list(dataset, Path(folder) / SPLIT_LIST_NAME)


def _assign_splits(
    raw: _Raw, *, test_fraction: float, seed: int, where: Path
) -> tuple[list[Sample], list[Sample], list[Sample], list[Sample], str]:
    """Train / query / gallery / test pool from the given splits, or a seeded identity split when none was given."""
    given = {sp for sp in raw.splits if sp}
    if given and "" in raw.splits:
        raise SpanetError(f"{where}: some images have a split and some do not; give every row a split or none")
    if not raw.samples:
        raise SpanetError(f"{where} holds no images; expected one sub-folder of .jpg/.png crops per identity")
    if not given:
        train_ids, _ = split_identities({s.pid for s in raw.samples}, test_fraction=test_fraction, seed=seed)
        splits = ["train" if s.pid in train_ids else "test" for s in raw.samples]
        source = f"seeded identity split (seed {seed}, test fraction {test_fraction:g})"
    else:
        splits, source = raw.splits, "split given by the data"
    by_split: dict[str, list[Sample]] = defaultdict(list)
    for sample, split in zip(raw.samples, splits):
        by_split[split].append(sample)
    query, gallery = list(by_split["query"]), list(by_split["gallery"])
    if by_split["test"]:
        more_query, more_gallery = split_query_gallery(by_split["test"], cameras=raw.has_cameras)
        query += more_query
        gallery += more_gallery
    return by_split["train"], query, gallery, by_split["test"], source


def _images_in(folder: Path) -> list[Path]:
    return sorted(
        p for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS
    )  # fmt: skip


def _identity_folders(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def _read_folders(root: Path) -> _Raw:
    """`root/<identity>/*` or `root/{train,test}/<identity>/*`; identity ids from the folder names."""
    sub_roots = (root / "train").is_dir() and (root / "test").is_dir()
    pools = [("train", root / "train"), ("test", root / "test")] if sub_roots else [("", root)]
    entries: list[tuple[Path, str, str]] = []  # (image, identity name, split)
    for split, pool in pools:
        for folder in _identity_folders(pool):
            entries += [(image, folder.name, split) for image in _images_in(folder)]
    if not entries:
        raise SpanetError(
            f"no images in identity sub-folders of {root}; expected {root}/<identity>/*.jpg "
            f"(or {root}/train/<identity>/ and {root}/test/<identity>/)"
        )
    pids = _identity_numbers(sorted({name for _, name, _ in entries}))
    cameras = _cameras(root, [image for image, _, _ in entries])
    samples = [
        Sample(str(image), pids[name], 0 if cameras is None else cameras[i])
        for i, (image, name, _) in enumerate(entries)
    ]  # fmt: skip
    return _Raw(samples, [split for _, _, split in entries], cameras is not None)


def _identity_numbers(names: list[str]) -> dict[str, int]:
    """Numeric folder names keep their number (so ids in results match the folders); otherwise 1, 2, … by name."""
    if all(name.isdigit() for name in names) and len({int(n) for n in names}) == len(names):
        return {name: int(name) for name in names}
    return {name: number for number, name in enumerate(names, start=1)}


def _cameras(root: Path, images: list[Path]) -> list[int] | None:
    """Camera id per image from cameras.csv, else from `_cN` in every file name, else None (no camera ids)."""
    table = root / CAMERAS_FILE
    if table.is_file():
        listed = _read_camera_table(table)
        missing = [str(image) for image in images if image.resolve() not in listed]
        if missing:
            raise SpanetError(f"{len(missing)} images are not in {table}: {first_items(missing)}; add a path,camera row each")
        labels = {name: number for number, name in enumerate(sorted(set(listed.values())))}
        return [labels[listed[image.resolve()]] for image in images]
    numbers = [camera_from_name(image.name) for image in images]
    if all(n is not None and n >= 1 for n in numbers):
        return [n - 1 for n in numbers]
    return None


def _read_camera_table(table: Path) -> dict[Path, str]:
    listed: dict[Path, str] = {}
    with open(table, newline="", encoding="utf-8") as handle:
        for number, row in enumerate(csv.reader(handle), start=1):
            if not row or (number == 1 and [c.strip().lower() for c in row[:2]] == ["path", "camera"]):
                continue
            if len(row) != 2 or not row[1].strip():
                raise SpanetError(f"{table}:{number}: expected `path,camera`, got {','.join(row)!r}")
            listed[(table.parent / row[0].strip()).resolve()] = row[1].strip()
    return listed


def _read_csv(path: Path) -> _Raw:
    """`path,pid,camid[,split]` rows; a header row names the columns (then camid may be left out)."""
    with open(path, newline="", encoding="utf-8") as handle:
        rows = [(n, row) for n, row in enumerate(csv.reader(handle), start=1) if any(c.strip() for c in row)]
    columns = ["path", "pid", "camid", "split"]
    if rows and rows[0][1][0].strip().lower() == "path":
        columns = [c.strip().lower() for c in rows[0][1]]
        rows = rows[1:]
        if not {"path", "pid"} <= set(columns) or not set(columns) <= {"path", "pid", "camid", "split"}:
            raise SpanetError(f"{path}: header {','.join(columns)!r} must name path,pid and optionally camid,split")
    samples, splits, bad, missing = [], [], [], []
    for number, row in rows:
        record = dict(zip(columns, (cell.strip() for cell in row)))
        try:
            pid = int(record["pid"])
            camid = int(record["camid"]) if record.get("camid") else -1
            split = record.get("split", "").lower()
            if len(row) > len(columns) or pid < -1 or camid < -1 or split not in ("", *_SPLIT_NAMES):
                raise ValueError
        except (KeyError, ValueError):
            bad.append(f"{path}:{number}: {','.join(row)!r}")
            continue
        image = path.parent / record["path"]
        if not image.is_file():
            missing.append(str(image))
        elif pid != -1:  # -1 marks junk, as in the benchmarks
            samples.append(Sample(str(image.resolve()), pid, camid))
            splits.append(split)
    if bad:
        raise SpanetError(
            f"{len(bad)} rows of {path} are not path,pid,camid[,split] (integer ids, split one of "
            f"{'/'.join(_SPLIT_NAMES)}): {first_items(bad)}"
        )
    if missing:
        raise SpanetError(f"{len(missing)} images listed in {path} do not exist: {first_items(missing)}")
    known = {s.camid != -1 for s in samples}
    if len(known) > 1:
        raise SpanetError(f"{path}: some rows have a camid and some do not; give every row a camera or none")
    has_cameras = known == {True}
    if not has_cameras:
        samples = [Sample(s.path, s.pid, 0) for s in samples]
    return _Raw(samples, splits, has_cameras)

"""Reading re-ID datasets from disk into train / query / gallery lists of `Sample`s.

Market-1501, DukeMTMC-reID, CUHK03-NP and the synthetic set share one layout (`bounding_box_train/`,
`bounding_box_test/`, `query/`) and differ only in folder names and the file-name pattern, so ONE reader handles
them, parameterised by a `MarketFormat`. MSMT17 lists its images in `list_*.txt` files and has its own small reader.

Conventions (the Market-1501 protocol, used for every dataset): junk images (id -1) are dropped; distractors
(id 0) stay in the gallery as negatives; camera ids are 0-based; training ids are relabelled 0..N-1 in order of
their original ids, so classifier outputs are deterministic; query and gallery keep their original ids.
See docs/datasets.md for the layouts and the expected statistics.
"""

from __future__ import annotations

import json
import re
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

from spanet.data.images import IMAGE_EXTENSIONS, drop_corrupt
from spanet.data.names import MARKET_EXAMPLE, MARKET_PATTERN
from spanet.data.protocol import NO_CAMERA
from spanet.data.samples import ReidDataset, Sample, first_items, relabel_train
from spanet.errors import SpanetError

__all__ = [
    "SYNTH_MANIFEST",
    "Sample",
    "ReidDataset",
    "MarketFormat",
    "DATASET_NAMES",
    "EXPECTED_STATISTICS",
    "DatasetCountWarning",
    "OWN_LAYOUTS",
    "load_dataset",
    "count_valid_queries",
    "require_valid_queries",
    "NO_VALID_QUERY",
    "dataset_statistics",
]

SPLITS = ("train", "query", "gallery")
SYNTH_MANIFEST = "spanet_synth.json"  # written by `spanet synth` beside the images it renders


class DatasetCountWarning(UserWarning):
    """A full real dataset whose image/id counts differ from the published ones (incomplete copy, wrong split)."""


@dataclass(frozen=True)
class MarketFormat:
    """How one Market-layout dataset differs from another: where it usually lives and how its files are named."""

    folders: tuple[str, ...]  # usual folder names below --data-root; a match means "the full real dataset"
    pattern: str  # regex with named groups `pid` (may be -1) and `camid` (1-based), matched against the file name
    example: str  # a valid file name, shown in error messages
    aliases: tuple[str, ...] = ()  # also searched below --data-root, but not taken as the full real dataset
    train_dir: str = "bounding_box_train"
    query_dir: str = "query"
    gallery_dir: str = "bounding_box_test"


@dataclass(frozen=True)
class ListFormat:
    """MSMT17: images listed in text files (`relative/path.jpg label`), camera number in the file name."""

    folders: tuple[str, ...]
    train_dirs: tuple[str, ...]  # alternatives: V1 uses train/, V2 mask_train_v2/
    test_dirs: tuple[str, ...]
    train_lists: tuple[str, ...] = ("list_train.txt", "list_val.txt")
    query_list: str = "list_query.txt"
    gallery_list: str = "list_gallery.txt"


_MARKET = MarketFormat(folders=("Market-1501-v15.09.15",), pattern=MARKET_PATTERN, example=MARKET_EXAMPLE)
_FORMATS: dict[str, MarketFormat | ListFormat] = {
    "market1501": _MARKET,
    "dukemtmc": MarketFormat(
        folders=("DukeMTMC-reID",),
        pattern=r"(?P<pid>-1|\d+)_c(?P<camid>\d+)_f\d+\.jpe?g",
        example="0001_c2_f0046182.jpg",
    ),
    "cuhk03_labeled": MarketFormat(
        folders=("cuhk03-np/labeled",),
        pattern=r"(?P<pid>-1|\d+)_c(?P<camid>\d+)_\d+\.(?:png|jpe?g)",
        example="0001_c1_1.png",
        aliases=("labeled",),  # --data-root pointing at cuhk03-np/
    ),
    "cuhk03_detected": MarketFormat(
        folders=("cuhk03-np/detected",),
        pattern=r"(?P<pid>-1|\d+)_c(?P<camid>\d+)_\d+\.(?:png|jpe?g)",
        example="0001_c1_1.png",
        aliases=("detected",),
    ),
    "msmt17": ListFormat(
        folders=("MSMT17_V1", "MSMT17_V2", "MSMT17"),
        train_dirs=("train", "mask_train_v2"),
        test_dirs=("test", "mask_test_v2"),
    ),
    "synthetic": MarketFormat(folders=(), pattern=_MARKET.pattern, example="0001_c1s1_000001_00.jpg"),
}
OWN_LAYOUTS = ("folders", "list")  # your own crops: `spanet.data.own`
DATASET_NAMES: tuple[str, ...] = OWN_LAYOUTS + tuple(_FORMATS)

# Published statistics after dropping junk, ids counting the distractor id 0 (docs/datasets.md).
# CUHK03-NP detected: the published statistics give image counts only; the new protocol splits the same 767 / 700 people for both.
# MSMT17 train = list_train.txt + list_val.txt (more images of the same 1,041 people): 30,248 + 2,373 = 32,621,
# the published training-set size; torchreid leaves the val list out by default (docs/datasets.md).
_PUBLISHED = {  # (images, ids) for train, query, gallery
    "market1501": ((12936, 751), (3368, 750), (15913, 752)),
    "dukemtmc": ((16522, 702), (2228, 702), (17661, 1110)),
    "cuhk03_labeled": ((7368, 767), (1400, 700), (5328, 700)),
    "cuhk03_detected": ((7365, 767), (1400, 700), (5332, 700)),
    "msmt17": ((32621, 1041), (11659, 3060), (82161, 3060)),
}
EXPECTED_STATISTICS: dict[str, dict[str, dict[str, int]]] = {
    name: {split: {"images": images, "ids": ids} for split, (images, ids) in zip(SPLITS, rows)}
    for name, rows in _PUBLISHED.items()
}


def load_dataset(
    name: str,
    root: str | Path,
    *,
    skip_corrupt: bool = False,
    verify_images: bool = False,
    progress: bool = False,
    test_fraction: float = 0.5,
    split_seed: int = 0,
) -> ReidDataset:
    """Read dataset `name` from `root` (the dataset folder itself, or a parent holding its usual folder name).

    `folders` and `list` (your own crops) are read by `spanet.data.own`; only they use `test_fraction` and
    `split_seed`, when the data does not say which identities are for testing.

    Decoding every image is slow (a minute or more for MSMT17), so it happens only with `verify_images` (raise,
    naming the corrupt files) or `skip_corrupt` (leave them out and list them in `skipped`). Without either, a
    corrupt file raises a `SpanetError` naming it when it is first read.
    """
    if name in OWN_LAYOUTS:
        from spanet.data.own import load_own_dataset

        return load_own_dataset(
            name, root, test_fraction=test_fraction, split_seed=split_seed, skip_corrupt=skip_corrupt,
            verify_images=verify_images, progress=progress,
        )  # fmt: skip
    if name not in _FORMATS:
        raise SpanetError(f"unknown dataset {name!r}; valid names: {', '.join(DATASET_NAMES)}")
    fmt = _FORMATS[name]
    root = Path(root).expanduser()
    if not root.is_dir():
        raise SpanetError(f"dataset root {root} is not a folder; point it at the {name} dataset folder")
    root = root.resolve()  # sample paths come out absolute and stay valid if the working directory changes
    if isinstance(fmt, MarketFormat):
        folder, splits = _read_market_format(name, fmt, root)
    else:
        folder, splits = _read_list_format(fmt, root)
    splits = {split: [s for s in samples if s.pid != -1] for split, samples in splits.items()}  # drop junk

    skipped: list[str] = []
    if skip_corrupt or verify_images:
        splits, skipped = drop_corrupt(splits, skip=skip_corrupt, progress=progress)
    for split, samples in splits.items():
        if not samples:
            raise SpanetError(
                f"the {split} split of {name} in {folder} has no images (after dropping junk id -1 and "
                "skipped files); check that the folder is complete"
            )
    ds = ReidDataset(
        name=name,
        root=folder,
        train=relabel_train(splits["train"]),
        query=tuple(splits["query"]),
        gallery=tuple(splits["gallery"]),
        skipped=tuple(skipped),
    )
    problems = _count_problems(ds, official=_is_official(folder, fmt.folders))
    if count_valid_queries(ds) == 0:
        problems.append(NO_VALID_QUERY)
    if problems:
        warnings.warn(f"{name} in {folder}: " + "; ".join(problems), DatasetCountWarning, stacklevel=2)
    return replace(ds, problems=tuple(problems))


NO_VALID_QUERY = (
    "no query has a true match in another camera (a gallery image of the same id from a different camera), so the "
    "Market protocol would skip every query: check the camera ids in the file names and the query/gallery split"
)


def count_valid_queries(ds: ReidDataset) -> int:
    """Queries the ranking protocol can score: a gallery image of the same id from another camera exists (any
    gallery image of the same id under the `no-camera` protocol of own data)."""
    if ds.protocol == NO_CAMERA:
        ids = {s.pid for s in ds.gallery}
        return sum(1 for q in ds.query if q.pid in ids)
    cameras: dict[int, set[int]] = {}
    for sample in ds.gallery:
        cameras.setdefault(sample.pid, set()).add(sample.camid)
    return sum(1 for q in ds.query if cameras.get(q.pid, set()) - {q.camid})


def require_valid_queries(ds: ReidDataset) -> None:
    """Raise before any work when evaluation could only fail: no query has a true match."""
    if count_valid_queries(ds) == 0:
        raise SpanetError(f"{ds.name} at {ds.root}: {NO_VALID_QUERY}")


def dataset_statistics(ds: ReidDataset) -> dict[str, dict[str, int]]:
    """Images, distinct ids (the distractor id 0 included) and distinct cameras per split."""
    return {
        split: {
            "images": len(samples),
            "ids": len({s.pid for s in samples}),
            "cameras": len({s.camid for s in samples}),
        }
        for split, samples in (("train", ds.train), ("query", ds.query), ("gallery", ds.gallery))
    }


def _find_folder(root: Path, folders: tuple[str, ...], required: tuple[str, ...], layout: str) -> Path:
    """`root` itself or `root/<usual folder>`, whichever holds every `required` entry."""
    candidates = [root] + [root / folder for folder in folders]
    for candidate in candidates:
        if all((candidate / entry).exists() for entry in required):
            return candidate
    closest = max(candidates, key=lambda c: sum((c / entry).exists() for entry in required))
    missing = [entry for entry in required if not (closest / entry).exists()]
    where = f"{root}" + (f" or {root}/{{{','.join(folders)}}}" if folders else "")
    raise SpanetError(
        f"no {layout} layout found in {where}: missing {', '.join(missing)} in {closest}; expected "
        f"{', '.join(required)} there (see docs/datasets.md)"
    )


def _read_market_format(name: str, fmt: MarketFormat, root: Path) -> tuple[Path, dict[str, list[Sample]]]:
    dirs = {"train": fmt.train_dir, "query": fmt.query_dir, "gallery": fmt.gallery_dir}
    layout = f"Market-1501 ({'/, '.join(dirs.values())}/)"
    folder = _find_folder(root, fmt.folders + fmt.aliases, tuple(dirs.values()), layout)
    pattern = re.compile(fmt.pattern, re.IGNORECASE)
    splits: dict[str, list[Sample]] = {}
    unparseable: list[Path] = []
    for split, sub in dirs.items():
        splits[split] = []
        for path in sorted((folder / sub).iterdir()):
            # Only image files count: the real Market-1501 ships a Thumbs.db, macOS adds hidden ._ files.
            if path.name.startswith(".") or path.suffix.lower() not in IMAGE_EXTENSIONS or not path.is_file():
                continue
            match = pattern.fullmatch(path.name)
            if match is None or int(match["camid"]) < 1:
                unparseable.append(path)
                continue
            splits[split].append(Sample(str(path), int(match["pid"]), int(match["camid"]) - 1))
    wrong_suffix = [p for p in unparseable if pattern.fullmatch(p.stem + Path(fmt.example).suffix)]
    if wrong_suffix:  # the naming is right, the image format is not the one this layout names
        raise SpanetError(
            f"{len(wrong_suffix)} images in {folder} are {wrong_suffix[0].suffix} files, but {name} file names end in "
            f"{Path(fmt.example).suffix} (e.g. {fmt.example}): {first_items(wrong_suffix)}; convert them to "
            f"{Path(fmt.example).suffix} (their names are right)"
        )
    if unparseable:
        raise SpanetError(
            f"{len(unparseable)} image file names in {folder} do not follow the {name} naming (e.g. {fmt.example}: "
            f"person id, then c + 1-based camera number): {first_items(unparseable)}; rename or remove them"
        )
    return folder, splits


def _read_list_format(fmt: ListFormat, root: Path) -> tuple[Path, dict[str, list[Sample]]]:
    lists = (*fmt.train_lists, fmt.query_list, fmt.gallery_list)
    folder = _find_folder(root, fmt.folders, lists, "MSMT17 (list_*.txt beside train/ and test/)")
    train_dir = _first_existing(folder, fmt.train_dirs)
    test_dir = _first_existing(folder, fmt.test_dirs)
    bad_lines: list[str] = []
    missing: list[str] = []
    splits = {
        "train": [s for lst in fmt.train_lists for s in _read_list(folder / lst, train_dir, bad_lines, missing)],
        "query": _read_list(folder / fmt.query_list, test_dir, bad_lines, missing),
        "gallery": _read_list(folder / fmt.gallery_list, test_dir, bad_lines, missing),
    }
    if bad_lines:
        raise SpanetError(
            f"{len(bad_lines)} list lines are not `relative/path.jpg label` with the 1-based camera number as the "
            f"third _ field of the file name (e.g. 0000/0000_000_01_0303morning_0015_0.jpg 0): {first_items(bad_lines)}"
        )
    if missing:
        raise SpanetError(f"{len(missing)} listed images do not exist: {first_items(missing)}; is the folder complete?")
    return folder, splits


def _first_existing(folder: Path, names: tuple[str, ...]) -> Path:
    for name in names:
        if (folder / name).is_dir():
            return folder / name
    raise SpanetError(f"no image folder in {folder}: expected one of {', '.join(n + '/' for n in names)}")


def _read_list(list_path: Path, image_dir: Path, bad_lines: list[str], missing: list[str]) -> list[Sample]:
    """Parse one MSMT17 list; collect bad lines and missing files so the error can name them all at once."""
    samples = []
    for number, line in enumerate(list_path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            relative, label = line.split()
            pid = int(label)
            camera = int(Path(relative).name.split("_")[2])  # 0000_000_01_0303morning_0015_0.jpg -> camera 1
        except (ValueError, IndexError):
            bad_lines.append(f"{list_path}:{number}: {line.strip()!r}")
            continue
        if pid < 0 or camera < 1:
            bad_lines.append(f"{list_path}:{number}: {line.strip()!r}")
            continue
        path = image_dir / relative
        if not path.is_file():
            missing.append(str(path))
            continue
        samples.append(Sample(str(path), pid, camera - 1))
    return samples


def _is_official(folder: Path, folders: tuple[str, ...]) -> bool:
    """True when `folder` carries the real dataset's usual name: only then are the published counts expected."""
    resolved = folder.resolve()
    return any(resolved.parts[-len(Path(f).parts):] == Path(f).parts for f in folders)


def _count_problems(ds: ReidDataset, *, official: bool) -> list[str]:
    """Compare the counts with the published ones (real datasets) or with what `spanet synth` says it wrote."""
    summary_path = ds.root / SYNTH_MANIFEST
    if summary_path.is_file():
        summary = _read_synth_summary(summary_path)
        if summary.get("complete") is False:
            return [f"{summary_path} says `spanet synth` did not finish; re-run it to regenerate the folder"]
        expected, source = summary, str(summary_path)
    elif official and ds.name in EXPECTED_STATISTICS:
        expected, source = EXPECTED_STATISTICS[ds.name], f"the published {ds.name} statistics"
    else:
        return []
    stats = dataset_statistics(ds)
    problems = []
    for split in SPLITS:
        for key, want in (expected.get(split) or {}).items():
            got = stats[split].get(key)
            if got is not None and got != want:
                problems.append(f"{split} has {got} {key}, expected {want} ({source})")
    if problems and ds.skipped:
        problems.append(f"{len(ds.skipped)} corrupt images were skipped, which explains part of the difference")
    return problems


def _read_synth_summary(path: Path) -> dict:
    """`spanet_synth.json`: the options and, at the top level, the counts in the `dataset_statistics` shape."""
    try:
        summary = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise SpanetError(f"cannot read {path} ({exc}); delete it or re-run `spanet synth`") from None
    if not isinstance(summary, dict):
        raise SpanetError(f"{path} is not a `spanet synth` summary; delete it or re-run `spanet synth`")
    return summary

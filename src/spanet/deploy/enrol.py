"""Filling a gallery from files in batches (what `spanet gallery build` runs), with cameras from names or a CSV.

Files already in the gallery (same bytes) are skipped, so a build interrupted by a crash is finished by running
the same command again. Unreadable files are skipped and reported, never fatal.
"""

from __future__ import annotations

import csv
import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spanet.data.names import camera_from_name, person_label_from_name
from spanet.deploy.gallery import Gallery, NewEntry
from spanet.errors import SpanetError

__all__ = ["EnrolReport", "camera_from_name", "label_from_name", "read_cameras_csv", "enrol_files"]

label_from_name = person_label_from_name  # the enrolled label of a Market-style file name


@dataclass
class EnrolReport:
    """What a build did: new ids, files skipped as already enrolled, and unreadable files with the reason."""

    ids: list[int] = field(default_factory=list)
    already: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)


def read_cameras_csv(path: str | os.PathLike[str]) -> dict[str, int]:
    """A `file,camera` CSV (header optional) as {file name: camera}; files are matched by their base name."""
    path = Path(path)
    cameras: dict[str, int] = {}
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            for line, row in enumerate(csv.reader(handle), start=1):
                if not row or (line == 1 and not row[-1].strip().isdigit()):
                    continue  # blank line or header
                if len(row) != 2 or not row[1].strip().isdigit():
                    raise SpanetError(f"{path} line {line}: expected 'file,camera' with a whole-number camera, got {row}")
                cameras[Path(row[0].strip()).name] = int(row[1])
    except OSError as exc:
        raise SpanetError(f"cannot read cameras file {path}: {exc}") from None
    return cameras


def enrol_files(gallery: Gallery, extractor: Any, paths: Sequence[Path], *, cameras: dict[str, int] | None = None,
                batch_size: int = 256, progress: bool = False) -> EnrolReport:  # fmt: skip
    """Embed and enrol `paths` batch by batch (each batch is one all-or-nothing enrolment)."""
    from tqdm.auto import tqdm

    report = EnrolReport()
    known = gallery.known_hashes()
    bar = tqdm(total=len(paths), desc="enrol", unit="img", disable=not progress)
    for start in range(0, len(paths), batch_size):
        chunk = paths[start : start + batch_size]
        datas = {}
        for path in chunk:
            try:
                data = Path(path).read_bytes()
            except OSError as exc:  # unreadable or deleted meanwhile: listed, the build goes on
                report.failures.append((str(path), f"cannot read it ({exc.strerror or exc})"))
                continue
            digest = hashlib.sha256(data).hexdigest()
            if digest in known:
                report.already += 1
            else:
                datas[path] = data
                known.add(digest)
        result = extractor.extract_files(list(datas), progress=False)
        report.failures += list(result.failures)
        kept = [list(datas)[i] for i in result.indices]
        entries = [
            NewEntry(data=datas[p], suffix=Path(p).suffix, source=str(p), label=label_from_name(Path(p).name),
                     camera=(cameras or {}).get(Path(p).name, camera_from_name(Path(p).name)))
            for p in kept
        ]  # fmt: skip
        if entries:
            report.ids += gallery.add(entries, result.features)
        bar.update(len(chunk))
    bar.close()
    gallery.save_index()
    return report

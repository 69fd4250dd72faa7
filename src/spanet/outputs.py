"""The one way spanet writes an output: guarded, then atomic.

Every command checks each output path with `guard_file` / `guard_folder` before it does any work, and writes files
through `atomic_path` / `write_text` / `write_json`:

- a checkpoint is never an output (recognised by content, a torch zip archive, or by a `.pt`/`.pth` suffix);
- an input of the same command is never an output (resolved paths, so symlinks and `a/../b` count);
- an existing file of another kind is never replaced; one of the output's own kind only with `--overwrite`, and then
  its content is kept as `NAME.replaced-TIME` (never deleted), as `spanet train --overwrite` does with a run folder;
  a file stays in place until the new one replaces it, so a command that fails leaves it as it was;
- a path whose parent is a file, or that cannot be created, is one `SpanetError` line naming it;
- a file appears complete or not at all: written to a temporary name beside it, flushed to the disk, renamed.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spanet.errors import SpanetError

__all__ = [
    "OutputKind",
    "JSON_FILE",
    "FEATURES_FILE_KIND",
    "HTML_PAGE",
    "ONNX_MODEL",
    "INDEX_FOLDER",
    "PARQUET_FILE",
    "CHECKPOINT_SUFFIXES",
    "is_checkpoint",
    "guard_file",
    "guard_folder",
    "move_aside",
    "keep_aside",
    "atomic_path",
    "durable_replace",
    "write_text",
    "write_json",
]

CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt")


@dataclass(frozen=True)
class OutputKind:
    """What an output is: its name in messages, the suffixes it may have (empty: any) and how to recognise an
    existing one (which `--overwrite` may then replace)."""

    name: str
    recognise: Callable[[Path], bool]
    suffixes: tuple[str, ...] = field(default=())


def _is_json(path: Path) -> bool:
    try:
        json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return True


def _zip_names(path: Path) -> list[str]:
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.namelist()
    except (OSError, zipfile.BadZipFile, ValueError):
        return []


def _is_features(path: Path) -> bool:
    names = _zip_names(path)
    return "features.npy" in names and "paths.npy" in names


def _is_html(path: Path) -> bool:
    try:
        with open(path, "rb") as handle:
            head = handle.read(64).lstrip().lower()
    except OSError:
        return False
    return head.startswith((b"<!doctype html", b"<html"))


def _is_onnx(path: Path) -> bool:
    return path.suffix == ".onnx" and path.is_file()


def _is_parquet(path: Path) -> bool:
    try:
        with open(path, "rb") as handle:
            return handle.read(4) == b"PAR1"
    except OSError:
        return False


def _is_index(path: Path) -> bool:
    return (path / "meta.json").is_file() and (path / "paths.txt").is_file()


JSON_FILE = OutputKind("JSON file", _is_json)
FEATURES_FILE_KIND = OutputKind("features file", _is_features, suffixes=(".npz",))
HTML_PAGE = OutputKind("HTML page", _is_html)
ONNX_MODEL = OutputKind("ONNX model", _is_onnx, suffixes=(".onnx",))
INDEX_FOLDER = OutputKind("index folder", _is_index)
PARQUET_FILE = OutputKind("Parquet file", _is_parquet, suffixes=(".parquet",))


def is_checkpoint(path: str | Path) -> bool:
    """A torch checkpoint, by suffix or by content (a zip archive holding `*/data.pkl`, whatever its name)."""
    path = Path(path)
    if path.suffix.lower() in CHECKPOINT_SUFFIXES:
        return True
    return path.is_file() and any(name.endswith("/data.pkl") for name in _zip_names(path))


def guard_file(
    path: str | Path,
    *,
    option: str,
    kind: OutputKind,
    inputs: Iterable[str | Path | None] = (),
    overwrite: bool = False,
    regenerable: bool = False,
) -> Path:
    """Check that the command may write the file `path` (given as `option`); move an existing one of its own kind
    aside when `overwrite`. A `regenerable` output (a page rebuilt from files that stay, e.g. report.html) of its own
    kind is replaced in place. Raises `SpanetError` naming the option and what to do; returns `path`."""
    path = Path(path)
    _refuse_checkpoint_and_inputs(path, option=option, inputs=inputs)
    if kind.suffixes and path.suffix.lower() not in kind.suffixes:
        raise SpanetError(f"{option} {path} must end in {' or '.join(kind.suffixes)} ({_a(kind.name)})")
    _check_parent(path, option=option)
    if path.is_dir():
        raise SpanetError(f"{option} {path} is a folder; pass a file name for the {kind.name}")
    if path.exists() or path.is_symlink():
        _replace_own(path, option=option, kind=kind, overwrite=overwrite, regenerable=regenerable)
    return path


def guard_folder(
    path: str | Path,
    *,
    option: str,
    inputs: Iterable[str | Path | None] = (),
    kind: OutputKind | None = None,
    overwrite: bool = False,
) -> Path:
    """Check that the command may write into the folder `path`: not a file (a checkpoint least of all), not an input,
    its parent a folder that can be written. With `kind`, a non-empty folder must hold an output of that kind and
    is moved aside only with `overwrite`; without, what is inside is the command's business (e.g. a run folder)."""
    path = Path(path)
    _refuse_checkpoint_and_inputs(path, option=option, inputs=inputs)
    if path.exists() and not path.is_dir():
        raise SpanetError(f"{option} {path} is a file, not a folder; pass a new folder name")
    _check_parent(path, option=option)
    if kind is not None and path.is_dir() and any(path.iterdir()):
        _replace_own(path, option=option, kind=kind, overwrite=overwrite)
    return path


def _refuse_checkpoint_and_inputs(path: Path, *, option: str, inputs: Iterable[str | Path | None]) -> None:
    if is_checkpoint(path):
        raise SpanetError(f"{option} {path} is a checkpoint; spanet never writes over one: choose another path")
    target = _resolved(path)
    for given in inputs:
        if given is not None and _resolved(Path(given)) == target:
            raise SpanetError(f"{option} {path} is also an input of this command ({given}); choose another path")


def _resolved(path: Path) -> Path:
    try:
        return path.expanduser().resolve()
    except (OSError, RuntimeError):  # a symlink loop
        return path.absolute()


def _check_parent(path: Path, *, option: str) -> None:
    """The nearest existing ancestor must be a folder this process can write into."""
    ancestor = _resolved(path).parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise SpanetError(f"{option} {path}: {ancestor} is a file, not a folder; choose a path inside a folder")
    if not os.access(ancestor, os.W_OK | os.X_OK) or _read_only_system_folder(ancestor):
        raise SpanetError(f"{option} {path}: {ancestor} cannot be written; choose a folder you can write to")


def _read_only_system_folder(folder: Path) -> bool:
    """/proc and /sys refuse new entries even to root, whom `os.access` always answers yes."""
    return folder.parts[:2] in (("/", "proc"), ("/", "sys"))


def _replace_own(path: Path, *, option: str, kind: OutputKind, overwrite: bool, regenerable: bool = False) -> None:
    if not kind.recognise(path):
        raise SpanetError(f"{option} {path} exists and is not {_a(kind.name)}; spanet does not write over other "
                          "files: choose another path")  # fmt: skip
    if regenerable:
        return
    if not overwrite:
        raise SpanetError(f"{option} {path} already holds {_a(kind.name)}; pass --overwrite to move it aside "
                          f"({path.name}.replaced-TIME) and write a new one, or choose another path")  # fmt: skip
    if path.is_file():
        keep_aside(path)  # the file itself stays until the new one replaces it: a failed command leaves it in place
    else:
        move_aside(path)


def _a(name: str) -> str:
    return f"{'an' if name[0].lower() in 'aeiou' else 'a'} {name}"


def keep_aside(path: str | Path) -> Path:
    """Keep the current content of the file `path` as `<name>.replaced-<time>` (a hard link, or a copy where the
    file system has none) while `path` itself stays in place; return the kept name."""
    path = Path(path)
    target = _aside_name(path)
    try:
        os.link(path, target)
    except OSError:
        shutil.copy2(path, target)
    return target


def move_aside(path: str | Path) -> Path | None:
    """Rename `path` (a file or a non-empty folder) to `<name>.replaced-<time>`, never deleting; return the new name."""
    path = Path(path)
    if not path.exists() or (path.is_dir() and not any(path.iterdir())):
        return None
    target = _aside_name(path)
    path.rename(target)
    return target


def _aside_name(path: Path) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target = path.with_name(f"{path.name}.replaced-{stamp}")
    suffix = 1
    while target.exists():
        suffix += 1
        target = path.with_name(f"{path.name}.replaced-{stamp}-{suffix}")
    return target


@contextlib.contextmanager
def atomic_path(path: str | Path, *, temp_suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temporary path beside `path` to write to; when the block ends without an error, flush it to the disk
    and rename it over `path` (readers see the old file or the new one, never a part). The temporary name is
    `.<name>.<random><temp_suffix>`: give the suffix a writer insists on (numpy adds `.npz` otherwise)."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=temp_suffix, dir=path.parent)
    except OSError as exc:
        raise SpanetError(f"cannot write {path}: {exc.strerror or exc}; choose a folder you can write to") from None
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; an output is as readable as any other file
        durable_replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def durable_replace(tmp: str | Path, path: str | Path) -> None:
    """Rename `tmp` over `path` after its bytes reached the disk, then make the rename itself durable."""
    with open(tmp, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    try:
        folder = os.open(Path(path).parent, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(folder)
    except OSError:
        pass
    finally:
        os.close(folder)


def write_text(path: str | Path, text: str) -> Path:
    """Write `text` (UTF-8) to `path` atomically; return the path."""
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path


def write_json(path: str | Path, value: Any, *, default: Callable[[Any], Any] | None = None) -> Path:
    """Write `value` as indented JSON to `path` atomically; return the path."""
    return write_text(path, json.dumps(value, indent=2, default=default) + "\n")


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current

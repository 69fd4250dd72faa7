"""Subcommands for galleries and extraction beyond one machine: `spanet gallery export/import` (Parquet) and
`spanet extract --engine ray` (registered by `cli/serve.py` and `cli/deploy.py`)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from spanet.cli.common import add_overwrite_arg, writes
from spanet.errors import SpanetError
from spanet.outputs import PARQUET_FILE, guard_file, guard_folder

__all__ = ["register_gallery_actions", "ray_inputs", "run_ray_extract"]


def register_gallery_actions(actions: argparse._SubParsersAction) -> None:
    export = actions.add_parser(
        "export", help="write a gallery (any store) to a Parquet file",
        description=("Write every entry of the gallery folder DIR (SQLite or Milvus) to FILE.parquet: vector, camera, "
                     "time, track, label, source, image path, sha256 and model fingerprint, with the model in the "
                     "file's metadata. Runs no model."),
    )  # fmt: skip
    export.add_argument("gallery", type=Path, metavar="DIR", help="gallery folder")
    export.add_argument("--out", type=Path, required=True, metavar="FILE.parquet", help="the Parquet file to write")
    add_overwrite_arg(export, what="Parquet file")
    export.set_defaults(func=_run_export)
    load = actions.add_parser(
        "import", help="load Parquet (an export, or `spanet extract --engine ray` shards) into a gallery",
        description=("Add the rows of FILES (from `spanet gallery export` or `spanet extract --engine ray`) to the "
                     "gallery folder DIR, created if missing on --store, with their stored vectors: no model runs. "
                     "Refuses files of another model than the gallery's. Images already enrolled are skipped, so an "
                     "interrupted import is finished by running it again."),
    )  # fmt: skip
    writes(load.add_argument("gallery", type=Path, metavar="DIR", help="gallery folder (created if missing)"))
    load.add_argument("files", nargs="+", type=Path, metavar="FILES", help="Parquet files or folders of .parquet shards")
    load.add_argument("--store", metavar="STORE", help="sqlite, milvus:FILE.db or milvus://HOST:PORT for a new folder")
    load.set_defaults(func=_run_import)


def _run_export(args: argparse.Namespace) -> int:
    from spanet.deploy.backend import open_gallery
    from spanet.deploy.transfer import export_gallery

    guard_file(args.out, option="--out", kind=PARQUET_FILE, inputs=[args.gallery], overwrite=args.overwrite)
    meta_path = args.gallery / "gallery.json"
    try:
        model_info = json.loads(meta_path.read_text(encoding="utf-8"))["model"]
    except (OSError, ValueError, KeyError, TypeError):
        raise SpanetError(f"{args.gallery} is not a spanet gallery (no readable {meta_path.name})") from None
    gallery = open_gallery(args.gallery, model_info=model_info)
    try:
        count = export_gallery(gallery, args.out)
    finally:
        gallery.close()
    print(f"exported {count} entries of {args.gallery}/ -> {args.out}")
    return 0


def _run_import(args: argparse.Namespace) -> int:
    from spanet.deploy.backend import open_gallery
    from spanet.deploy.transfer import import_gallery, read_model_info

    guard_folder(args.gallery, option="gallery", inputs=args.files)
    files = _parquet_files(args.files)
    gallery = open_gallery(args.gallery, model_info=read_model_info(files), create=True, store=args.store)
    try:
        report = import_gallery(gallery, files)
        size = len(gallery)
    finally:
        gallery.close()
    for problem in report.missing[:20]:
        print(f"  skipped {problem}", file=sys.stderr)
    print(f"imported {len(report.ids)} entries into {args.gallery}/ (now {size}); {report.already} already there, "
          f"{len(report.missing)} without a readable image")  # fmt: skip
    return 0


def _parquet_files(paths: list[Path]) -> list[Path]:
    files: list[Path] = []
    for path in paths:
        found = sorted(path.rglob("*.parquet")) if path.is_dir() else [path]
        if not found or not all(p.is_file() for p in found):
            raise SpanetError(f"{path} is not a Parquet file or a folder holding some")
        files += found
    return files


def ray_inputs(items: list[str]) -> list[Path]:
    """The images of `spanet extract --engine ray`: files, folders and globs as `spanet extract` takes them, plus
    lists: a `.txt` file (one path per line, relative to the list's folder) or a `.parquet` file with an `image` or
    `path` column."""
    from spanet.data.images import collect_images

    listed: list[Path] = []
    rest = []
    for item in items:
        path = Path(item)
        if path.suffix == ".txt" and path.is_file():
            lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
            listed += [path.parent / line for line in lines if line and not line.startswith("#")]
        elif path.suffix == ".parquet" and path.is_file():
            listed += _parquet_paths(path)
        else:
            rest.append(item)
    return listed + (collect_images(rest) if rest else [])


def _parquet_paths(path: Path) -> list[Path]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise SpanetError(f"{path}: reading a Parquet list needs pyarrow: pip install 'spanet[ray]'") from None
    names = pq.read_schema(path).names
    column = next((c for c in ("image", "path") if c in names), None)
    if column is None:
        raise SpanetError(f"{path} has no 'image' or 'path' column (it has {', '.join(names)}); name the column of paths so")
    return [Path(p) for p in pq.read_table(path, columns=[column])[column].to_pylist() if p]


def run_ray_extract(args: argparse.Namespace) -> int:
    from spanet.deploy.ray_extract import RayOptions, extract_with_ray

    paths = ray_inputs(args.images)
    if not paths:
        raise SpanetError("no images to extract: give image files, folders, globs, a .txt list or a .parquet list")
    options = RayOptions(workers=args.workers, batch_size=args.batch_size, kind=args.kind, device=args.device,
                         amp=args.amp, shard_size=args.shard_size, address=args.ray_address)  # fmt: skip
    report = extract_with_ray(args.checkpoint, paths, out=args.out, options=options)
    for path, reason in report.failures[:20]:
        print(f"  skipped {path}: {reason}", file=sys.stderr)
    print(f"extracted {report.rows} images into {report.written} new shard(s) of {args.out}/ "
          f"({report.kept} shard(s) already complete); skipped {len(report.failures)} unreadable")  # fmt: skip
    return 0

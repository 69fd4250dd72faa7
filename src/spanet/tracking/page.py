"""The HTML page of an association: one row per global identity, per camera its thumbnails and time spans.

A person seen by three cameras shows three thumbnails side by side, so a wrong merge (two different people in one
row) or a missed one (one person on two rows) is visible at a glance. Thumbnails are JPEG files in `thumbs/`.
"""

from __future__ import annotations

import html
from collections import defaultdict
from collections.abc import Sequence as Seq
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from spanet.tracking.mot import Sequence

if TYPE_CHECKING:  # associate.py calls write_page: the page needs the type only, not the module at run time
    from spanet.tracking.associate import TrackFeature

__all__ = ["write_page"]

_STYLE = (
    "body{font-family:sans-serif;margin:1em}table{border-collapse:collapse}td,th{border:1px solid #ccc;"
    "padding:4px;vertical-align:top;font-size:12px}img{height:96px;margin:1px}"
)


def _span(track: TrackFeature, frame_rate: float) -> str:
    text = f"track {track.track_id}: frames {track.first}–{track.last}"
    if frame_rate > 0:
        text += f" ({(track.first - 1) / frame_rate:.1f}–{(track.last - 1) / frame_rate:.1f} s)"
    return text


def write_page(
    out_dir: str | Path, *, sequences: Seq[Sequence], tracks: Seq[TrackFeature], ids: np.ndarray, title: str
) -> Path:
    """Write `out_dir/index.html` and its thumbnails; return the page's path."""
    out_dir = Path(out_dir)
    thumbs = out_dir / "thumbs"
    thumbs.mkdir(parents=True, exist_ok=True)
    rows: dict[int, dict[int, list[TrackFeature]]] = defaultdict(lambda: defaultdict(list))
    for track, gid in zip(tracks, ids):
        rows[int(gid)][track.camera].append(track)
    header = "".join(f"<th>{html.escape(s.name)}</th>" for s in sequences)
    lines = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
        f"<style>{_STYLE}</style></head><body><h1>{html.escape(title)}</h1>",
        f"<p>{len(rows)} identities from {len(tracks)} tracks in {len(sequences)} cameras.</p>",
        f"<table><tr><th>id</th><th>cameras</th>{header}</tr>",
    ]
    for gid in sorted(rows):
        cells = []
        for camera, sequence in enumerate(sequences):
            parts = []
            for track in sorted(rows[gid].get(camera, []), key=lambda t: t.first):
                if track.thumbnail is not None:
                    name = f"{gid:05d}_{camera}_{track.track_id}.jpg"
                    Image.fromarray(track.thumbnail).save(thumbs / name, quality=85)
                    parts.append(f"<img src='thumbs/{name}' alt='{html.escape(sequence.name)} {track.track_id}'>")
                parts.append(f"<div>{html.escape(_span(track, sequence.frame_rate))}</div>")
            cells.append(f"<td>{''.join(parts)}</td>")
        lines.append(f"<tr><td>{gid}</td><td>{len(rows[gid])}</td>{''.join(cells)}</tr>")
    lines.append("</table></body></html>")
    page = out_dir / "index.html"
    page.write_text("\n".join(lines) + "\n")
    return page

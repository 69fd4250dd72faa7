"""Tracks to identities across cameras: one pooled appearance feature per track, clustered under constraints.

For each track (one id in one camera's track file) up to K boxes spread evenly over its life are cropped and
embedded by any `embed(xyxy, bgr_frame)` (normally `spanet.ReID.get_features`, which runs the one embedding loop);
their mean, L2-normalised, is the track's feature. Tracks are then merged by average-linkage agglomerative clustering
on squared Euclidean distance (0..4 between unit vectors), stopping at `threshold`. Two tracks of the same camera
that overlap in time are one person only if the tracker is wrong, so they are never merged: scipy's and
scikit-learn's linkage take no such cannot-link constraint, so the clustering is written here (Lance-Williams update
of the average distance, a blocked pair stays blocked); without constraints it equals scipy's
`linkage(method="average")` cut by `fcluster(criterion="distance")` (tested).

Before clustering, each camera's mean track feature is subtracted from its tracks' features (then L2-normalised
again): a camera's colour cast, light and background move every crop of that camera the same way, and removing
that shared shift makes the same person in two cameras closer than the raw features are (measured in docs/video.md:
at the same pairwise precision, more of a person's tracks are joined). It needs a few tracks per camera to estimate
the shift (`MIN_TRACKS_TO_CENTRE`); with fewer in any camera the raw features are used.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Sequence as Seq
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from spanet.errors import SpanetError
from spanet.evaluation.metrics import pair_counts
from spanet.tracking.mot import Sequence, Tracks, read_frame, read_sequence, read_tracks, write_tracks

__all__ = [
    "TrackFeature", "Association", "sample_rows", "embed_tracks", "cannot_link", "cluster_tracks", "global_ids",
    "pairwise_f1", "pairwise_precision_recall", "fit_track_threshold", "threshold_from_cannot_links",
    "DEFAULT_SPREAD", "MIN_CANNOT_LINK_PAIRS", "read_track_threshold", "centre_cameras", "MIN_TRACKS_TO_CENTRE",
    "associate", "MARKER_FILE",
]

Embed = Callable[[np.ndarray, np.ndarray], np.ndarray]
THUMB_HEIGHT = 96
MARKER_FILE = "association.json"


@dataclass(frozen=True, eq=False)
class TrackFeature:
    """One track of one camera: its pooled unit feature (zeros if no box could be cropped), life span, a thumbnail."""

    camera: int  # index into the sequences
    track_id: int
    first: int  # first and last frame
    last: int
    feature: np.ndarray
    crops: int  # boxes that contributed to the feature
    thumbnail: np.ndarray | None  # RGB (h, w, 3) uint8 of the middle sampled box


def sample_rows(tracks: Tracks, track_id: int, k: int) -> np.ndarray:
    """Row numbers of up to `k` boxes of one track, evenly spread over its frames (first and last included)."""
    rows = np.flatnonzero(tracks.ids == track_id)
    rows = rows[np.argsort(tracks.frames[rows], kind="stable")]
    if len(rows) <= k:
        return rows
    return rows[np.unique(np.round(np.linspace(0, len(rows) - 1, k)).astype(np.int64))]


def _thumbnail(bgr: np.ndarray, box: np.ndarray) -> np.ndarray | None:
    x, y, w, h = box
    x0, y0 = max(0, int(np.floor(x))), max(0, int(np.floor(y)))
    x1, y1 = min(bgr.shape[1], int(np.ceil(x + w))), min(bgr.shape[0], int(np.ceil(y + h)))
    if x1 <= x0 or y1 <= y0:
        return None
    crop = Image.fromarray(np.ascontiguousarray(bgr[y0:y1, x0:x1, ::-1]))
    width = max(1, round(crop.width * THUMB_HEIGHT / crop.height))
    return np.asarray(crop.resize((width, THUMB_HEIGHT), Image.BILINEAR))


def embed_tracks(
    sequences: Seq[Sequence], tracks: Seq[Tracks], *, embed: Embed, crops_per_track: int = 8
) -> list[TrackFeature]:
    """Pooled features of every track of every camera; each frame is read once, all its sampled boxes embedded."""
    if crops_per_track < 1:
        raise SpanetError(f"--crops-per-track must be at least 1, got {crops_per_track}")
    results = []
    for camera, (sequence, table) in enumerate(zip(sequences, tracks)):
        sampled = {tid: sample_rows(table, tid, crops_per_track) for tid in table.track_ids()}
        rows = np.concatenate(list(sampled.values())) if sampled else np.zeros(0, dtype=np.int64)
        row_features: dict[int, np.ndarray] = {}
        thumbs: dict[int, np.ndarray | None] = {}
        middles = {int(r[len(r) // 2]) for r in sampled.values()}
        for frame in np.unique(table.frames[rows]):
            at_frame = rows[table.frames[rows] == frame]
            bgr = read_frame(sequence, int(frame))
            xywh = table.boxes[at_frame]
            xyxy = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)
            for row, feature in zip(at_frame, np.asarray(embed(xyxy, bgr), dtype=np.float32)):
                row_features[int(row)] = feature
                if int(row) in middles:
                    thumbs[int(row)] = _thumbnail(bgr, table.boxes[row])
        for tid, picked in sampled.items():
            feats = np.stack([row_features[int(r)] for r in picked])
            feats = feats[np.linalg.norm(feats, axis=1) > 0]  # zero rows: boxes with nothing to crop
            pooled = feats.mean(axis=0) if len(feats) else np.zeros(row_features[int(picked[0])].shape, np.float32)
            norm = float(np.linalg.norm(pooled))
            frames = table.frames[table.ids == tid]
            results.append(TrackFeature(
                camera=camera, track_id=int(tid), first=int(frames.min()), last=int(frames.max()),
                feature=(pooled / norm if norm > 0 else pooled).astype(np.float32), crops=len(feats),
                thumbnail=thumbs.get(int(picked[len(picked) // 2])),
            ))  # fmt: skip
    return results


MIN_TRACKS_TO_CENTRE = 4


def centre_cameras(tracks: Seq[TrackFeature]) -> list[TrackFeature] | None:
    """The tracks with each camera's mean feature subtracted and the result unit-normalised again; None (use the raw
    features) when a camera has fewer than `MIN_TRACKS_TO_CENTRE` tracks with a feature. Tracks without one (no box
    could be cropped) keep their zero feature."""
    usable = [t for t in tracks if t.crops > 0]
    cameras = sorted({t.camera for t in tracks})
    counts = {c: sum(t.camera == c for t in usable) for c in cameras}
    if not usable or min(counts.values()) < MIN_TRACKS_TO_CENTRE:
        return None
    from spanet.evaluation.distance import centre_per_camera

    features = centre_per_camera(np.stack([t.feature for t in usable]), np.array([t.camera for t in usable]))
    shifted = iter(features.astype(np.float32))
    return [dataclasses.replace(t, feature=next(shifted)) if t.crops > 0 else t for t in tracks]


def cannot_link(tracks: Seq[TrackFeature], *, disjoint_views: bool = False) -> np.ndarray:
    """(n, n) bool: True for two tracks of the same camera whose frame spans overlap; with `disjoint_views` (no
    person is seen by two cameras at once, and frame N is the same moment in every camera) for any two tracks whose
    frame spans overlap."""
    camera = np.array([t.camera for t in tracks])
    first = np.array([t.first for t in tracks])
    last = np.array([t.last for t in tracks])
    overlap = (first[:, None] <= last[None, :]) & (first[None, :] <= last[:, None])
    blocked = overlap if disjoint_views else overlap & (camera[:, None] == camera[None, :])
    np.fill_diagonal(blocked, False)
    return blocked


def cluster_tracks(features: np.ndarray, *, threshold: float, blocked: np.ndarray | None = None) -> np.ndarray:
    """Cluster labels (n,) by average linkage on squared Euclidean distance, merging while the closest pair of
    clusters is at most `threshold` apart and not `blocked` (a cannot-link between any of their members)."""
    features = np.asarray(features, dtype=np.float64)
    n = len(features)
    labels = np.arange(n)
    if n < 2:
        return labels
    sq = (features**2).sum(axis=1)
    dist = np.maximum(sq[:, None] + sq[None, :] - 2 * features @ features.T, 0.0)  # (n, n)
    if blocked is not None:
        dist[blocked] = np.inf
    np.fill_diagonal(dist, np.inf)
    sizes = np.ones(n)
    while True:
        i, j = np.unravel_index(int(np.argmin(dist)), dist.shape)
        if not dist[i, j] <= threshold:
            break
        merged = (sizes[i] * dist[i] + sizes[j] * dist[j]) / (sizes[i] + sizes[j])  # inf stays inf: still blocked
        dist[i, :] = merged
        dist[:, i] = merged
        dist[i, i] = np.inf
        dist[j, :] = np.inf
        dist[:, j] = np.inf
        sizes[i] += sizes[j]
        labels[labels == j] = i
    return labels


def pairwise_f1(labels: np.ndarray, truth: np.ndarray) -> float:
    """F1 of the "same identity" decision over all pairs of tracks: 1 for a perfect partition."""
    predicted, actual, hits = pair_counts(np.asarray(labels), np.asarray(truth))
    return 2 * hits / (predicted + actual) if predicted + actual else 1.0


def pairwise_precision_recall(labels: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """Of the pairs of tracks put together, the share that are one person (precision), and of the pairs that are one
    person, the share put together (recall); 1.0 where there is no pair to count."""
    predicted, actual, hits = pair_counts(np.asarray(labels), np.asarray(truth))
    return (hits / predicted if predicted else 1.0), (hits / actual if actual else 1.0)


# chosen on calibration footage (synth-video seed 100) by benchmarks/bench_association_default.py, measured on other
# footage: docs/video.md
DEFAULT_SPREAD = 3.0
MIN_CANNOT_LINK_PAIRS = 10


def threshold_from_cannot_links(
    tracks: Seq[TrackFeature], *, spread: float = DEFAULT_SPREAD, disjoint_views: bool = False
) -> float | None:
    """The default cut when none is given, from the distances between tracks KNOWN to be different people — two
    tracks of one camera at the same time: their mean minus `spread` standard deviations, floored at 0 (nothing
    merges). With the default 3 that is the 0.13th percentile of a normal fitted to those distances: a few hundred
    pairs measure a mean and a spread well, where an empirical 0.5th percentile of them is little more than their
    smallest one and moved between footages by 3x (measured, docs/video.md). It is measured on the footage itself,
    on the model's own scale; None when the footage has fewer than `MIN_CANNOT_LINK_PAIRS` such pairs. With
    `disjoint_views` the pairs of different cameras at the same time count too (`cannot_link`)."""
    blocked = np.triu(cannot_link(tracks, disjoint_views=disjoint_views), k=1)
    usable = np.array([t.crops > 0 for t in tracks], dtype=bool)
    blocked &= usable[:, None] & usable[None, :]
    if blocked.sum() < MIN_CANNOT_LINK_PAIRS:
        return None
    features = np.stack([t.feature for t in tracks]).astype(np.float64)
    sq = (features**2).sum(axis=1)
    dist = np.maximum(sq[:, None] + sq[None, :] - 2 * features @ features.T, 0.0)[blocked]
    return max(float(dist.mean() - spread * dist.std()), 0.0)


def read_track_threshold(path: str | Path) -> float:
    """The cut stored in a JSON file (`{"threshold": T}`) for pooled unit-length track features (scale 0-4).

    A `spanet calibrate` file is refused: its threshold is a distance between image features, on another scale."""
    path = Path(path)
    try:
        record = json.loads(path.read_text())
        value = float(record["threshold"])
    except FileNotFoundError:
        raise SpanetError(f"calibration file {path} does not exist") from None
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        raise SpanetError(f"calibration file {path} must be JSON with a numeric 'threshold' key") from None
    if "feature_kind" in record:  # written by `spanet calibrate`: image-to-image distances on another scale
        raise SpanetError(
            f"{path} is a `spanet calibrate` file: its threshold is a distance between image features, not between "
            "pooled unit-length track features (0-4); give --threshold or a file made for associate "
            "(spanet.tracking.associate.fit_track_threshold on labelled tracks)"
        )
    return value


def fit_track_threshold(
    tracks: Seq[TrackFeature], truth: Seq[int], *, candidates: Seq[float] = tuple(np.arange(0.05, 2.01, 0.05)),
    disjoint_views: bool = False,
) -> tuple[float, float]:
    """The cut (and its pairwise F1) that best recovers the known identities `truth` of labelled tracks, e.g. a
    synthetic sequence's ground truth; ties go to the smaller threshold (fewer wrong merges)."""
    truth = np.asarray(truth)
    blocked = cannot_link(tracks, disjoint_views=disjoint_views)
    features = np.stack([t.feature for t in tracks])
    scores = [(pairwise_f1(cluster_tracks(features, threshold=c, blocked=blocked), truth), -c) for c in candidates]
    best_f1, best_negative = max(scores)
    return float(-best_negative), float(best_f1)


def global_ids(tracks: Seq[TrackFeature], *, threshold: float, disjoint_views: bool = False) -> np.ndarray:
    """Global ids 1..G (n,), numbered by first appearance; tracks with no feature stay on their own; tracks that
    `cannot_link` (with `disjoint_views`) are never one id."""
    usable = np.array([t.crops > 0 for t in tracks], dtype=bool)
    labels = np.arange(len(tracks)) + len(tracks)  # unusable tracks: a cluster of their own
    if usable.any():
        index = np.flatnonzero(usable)
        sub = [tracks[i] for i in index]
        blocked = cannot_link(sub, disjoint_views=disjoint_views)
        found = cluster_tracks(np.stack([t.feature for t in sub]), threshold=threshold, blocked=blocked)
        labels[index] = found
    order = sorted(range(len(tracks)), key=lambda i: (tracks[i].first, tracks[i].camera, tracks[i].track_id))
    numbering: dict[int, int] = {}
    for i in order:
        numbering.setdefault(int(labels[i]), len(numbering) + 1)
    return np.array([numbering[int(label)] for label in labels], dtype=np.int64)


@dataclass(frozen=True, eq=False)
class Association:
    """What `associate` wrote: the tracks with their global ids, one track file per camera and the page."""

    tracks: list[TrackFeature]
    ids: np.ndarray
    outputs: list[Path]
    page: Path
    threshold: float = 0.0  # the cut used (given, or derived from the footage)
    camera_centring: bool = False  # whether the features were centred per camera before clustering
    disjoint_views: bool = False  # whether tracks of different cameras at the same time were kept apart

    @property
    def identities(self) -> int:
        return len(np.unique(self.ids))


def _prepare_out(out_dir: Path) -> None:
    """Write only into a new or empty folder, or one an earlier association wrote (never over a user's files)."""
    if out_dir.exists() and not out_dir.is_dir():
        raise SpanetError(f"--out {out_dir} is a file; give a folder")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not (out_dir / MARKER_FILE).is_file():
        raise SpanetError(f"--out {out_dir} is not empty and was not written by `spanet associate`; choose a new folder")
    out_dir.mkdir(parents=True, exist_ok=True)


def associate(
    sequence_dirs: Seq[str | os.PathLike[str]],
    track_files: Seq[str | os.PathLike[str]],
    *,
    embed: Embed,
    out_dir: str | os.PathLike[str],
    threshold: float | None,
    crops_per_track: int = 8,
    camera_centring: bool = True,
    disjoint_views: bool = False,
) -> Association:
    """Give every track of every camera a global id; write `OUT/<sequence>.txt` per camera and `OUT/index.html`.
    With `camera_centring` the features are centred per camera first (`centre_cameras`), where every camera has
    enough tracks; a `threshold` given is then a distance between centred features. `disjoint_views` says that no
    person is seen by two cameras at once and that the sequences are synchronised (frame N is one moment in all, so
    their frame rates must agree): tracks of different cameras that overlap in time are then never merged either."""
    if len(sequence_dirs) != len(track_files) or not sequence_dirs:
        raise SpanetError(f"give one --tracks file per --sequences folder (got {len(sequence_dirs)} and {len(track_files)})")
    if threshold is not None and not threshold > 0:
        raise SpanetError(f"the threshold is a squared distance between unit vectors, in (0, 4]; got {threshold}")
    sequences = [read_sequence(d) for d in sequence_dirs]
    names = [s.name for s in sequences]
    if len(set(names)) != len(names):
        raise SpanetError(f"two sequences share a name ({', '.join(names)}); output files are named after them")
    rates = {s.frame_rate for s in sequences if s.frame_rate > 0}
    if disjoint_views and len(rates) > 1:
        raise SpanetError(
            f"--disjoint-views compares frame numbers across cameras, but the sequences' frame rates differ "
            f"({', '.join(f'{s.name}: {s.frame_rate:g}' for s in sequences)}); leave it out"
        )  # fmt: skip
    tables = [read_tracks(path, sequence=seq) for path, seq in zip(track_files, sequences)]
    out_dir = Path(out_dir)
    _prepare_out(out_dir)
    tracks = embed_tracks(sequences, tables, embed=embed, crops_per_track=crops_per_track)
    centred = centre_cameras(tracks) if camera_centring else None
    tracks = centred if centred is not None else tracks
    if threshold is None:
        threshold = threshold_from_cannot_links(tracks, disjoint_views=disjoint_views)
        if threshold is None:
            raise SpanetError(
                "no threshold given and none can be derived: fewer than "
                f"{MIN_CANNOT_LINK_PAIRS} pairs of tracks of one camera overlap in time (pairs known to be different "
                "people, whose distances the default is derived from); give --threshold"
            )  # fmt: skip
    ids = global_ids(tracks, threshold=threshold, disjoint_views=disjoint_views)
    lookup = {(t.camera, t.track_id): int(gid) for t, gid in zip(tracks, ids)}
    outputs = []
    for camera, (sequence, table) in enumerate(zip(sequences, tables)):
        row_ids = np.array([lookup[(camera, int(tid))] for tid in table.ids], dtype=np.int64)
        outputs.append(write_tracks(out_dir / f"{sequence.name}.txt", table, ids=row_ids))
    from spanet.tracking.page import write_page

    page = write_page(out_dir, sequences=sequences, tracks=tracks, ids=ids, title="spanet cross-camera association")
    summary = {
        "threshold": threshold, "crops_per_track": crops_per_track, "camera_centring": centred is not None,
        "disjoint_views": disjoint_views,
        "sequences": [str(s.root) for s in sequences], "track_files": [str(t.path) for t in tables],
        "tracks": [{"sequence": names[t.camera], "track_id": t.track_id, "global_id": int(g), "first": t.first,
                    "last": t.last, "crops": t.crops} for t, g in zip(tracks, ids)],
    }  # fmt: skip
    (out_dir / MARKER_FILE).write_text(json.dumps(summary, indent=1) + "\n")
    return Association(tracks=tracks, ids=ids, outputs=outputs, page=page, threshold=threshold,
                       camera_centring=centred is not None, disjoint_views=disjoint_views)

"""Constrained average linkage: equals scipy without constraints, never merges same-camera overlapping tracks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.spatial.distance import pdist

from spanet.errors import SpanetError
from spanet.tracking.associate import (
    MIN_TRACKS_TO_CENTRE, TrackFeature, cannot_link, centre_cameras, cluster_tracks, embed_tracks, global_ids, sample_rows,
)
from spanet.tracking.mot import read_sequence, read_tracks


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    return bool(np.array_equal(a[:, None] == a[None, :], b[:, None] == b[None, :]))


@pytest.mark.parametrize("threshold", [0.3, 0.8, 1.5])
def test_equals_scipy_average_linkage_without_constraints(threshold: float) -> None:
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((5, 16))
    feats = centres[rng.integers(0, 5, 40)] + 0.4 * rng.standard_normal((40, 16))
    feats /= np.linalg.norm(feats, axis=1, keepdims=True)
    ours = cluster_tracks(feats, threshold=threshold)
    reference = fcluster(linkage(pdist(feats, "sqeuclidean"), method="average"), t=threshold, criterion="distance")
    assert same_partition(ours, reference)
    assert 1 < len(np.unique(ours)) < 40


def track(camera: int, first: int, last: int, feature: list[float], track_id: int = 1) -> TrackFeature:
    f = np.asarray(feature, dtype=np.float32)
    return TrackFeature(camera=camera, track_id=track_id, first=first, last=last, feature=f / np.linalg.norm(f),
                        crops=1, thumbnail=None)  # fmt: skip


def test_same_camera_overlapping_tracks_never_merge() -> None:
    tracks = [
        track(0, 1, 10, [1, 0], 1), track(0, 5, 20, [1, 0.01], 2),  # same look, same camera, overlap: 2 people
        track(1, 30, 40, [1, 0.02], 5),  # another camera: joins one of them
        track(0, 50, 60, [0, 1], 3),  # same camera but later: free to merge with someone alike (none here)
    ]
    blocked = cannot_link(tracks)
    assert blocked[0, 1] and blocked[1, 0] and not blocked[0, 3] and not blocked[0, 2]
    ids = global_ids(tracks, threshold=1.0)
    assert ids[0] != ids[1] and ids[2] in (ids[0], ids[1]) and len(set(ids)) == 3
    assert list(ids[:2]) == [1, 2]  # numbered by first appearance
    unconstrained = cluster_tracks(np.stack([t.feature for t in tracks]), threshold=1.0)
    assert unconstrained[0] == unconstrained[1]  # the constraint is what kept them apart


def test_disjoint_views_keep_cameras_apart_at_the_same_moment() -> None:
    from spanet.tracking.associate import threshold_from_cannot_links

    tracks = [
        track(0, 1, 10, [1, 0], 1), track(1, 5, 20, [1, 0.01], 2),  # alike, two cameras, same moment
        track(1, 30, 40, [1, 0.02], 3),  # camera 1 later: the same look may be the camera-0 person walking on
    ]
    assert not cannot_link(tracks)[0, 1] and cannot_link(tracks, disjoint_views=True)[0, 1]
    assert not cannot_link(tracks, disjoint_views=True)[0, 2]
    assert len(set(global_ids(tracks, threshold=1.0))) == 1  # overlapping views: one person seen twice at once
    ids = global_ids(tracks, threshold=1.0, disjoint_views=True)
    assert ids[0] != ids[1] and ids[2] in (ids[0], ids[1])
    rng = np.random.default_rng(0)
    crowd = [track(c, 1, 10, list(rng.normal(size=4)), i) for i, c in enumerate([0, 1] * 3)]  # 3 per camera at once
    assert threshold_from_cannot_links(crowd) is None  # 2 x 3 same-camera pairs: too few to derive a cut from
    assert threshold_from_cannot_links(crowd, disjoint_views=True) is not None  # all 15 pairs are known apart


def test_sample_rows_spreads_over_the_track(tmp_path: Path) -> None:
    path = tmp_path / "t.txt"
    path.write_text("".join(f"{f},4,0,0,5,5\n" for f in range(10, 0, -1)) + "3,9,0,0,5,5\n")
    tracks = read_tracks(path)
    assert list(tracks.frames[sample_rows(tracks, 4, 3)]) == [1, 5, 10]  # evenly spaced (4.5 rounds to even), both ends
    assert len(sample_rows(tracks, 9, 8)) == 1


def test_frames_of_another_size_are_an_error(tmp_path: Path) -> None:
    root = tmp_path / "cam"
    (root / "img1").mkdir(parents=True)
    Image.new("RGB", (40, 30)).save(root / "img1" / "000001.png")
    Image.new("RGB", (50, 30)).save(root / "img1" / "000002.png")
    sequence = read_sequence(root)
    path = tmp_path / "t.txt"
    path.write_text("1,1,0,0,10,10\n2,1,0,0,10,10\n")
    tracks = read_tracks(path, sequence=sequence)
    with pytest.raises(SpanetError, match="000002.png is 50x30 but sequence cam is 40x30"):
        embed_tracks([sequence], [tracks], embed=lambda xyxy, img: np.ones((len(xyxy), 2), np.float32))


def test_default_threshold_comes_from_pairs_known_to_be_different_people() -> None:
    from spanet.tracking.associate import (
        DEFAULT_SPREAD, MIN_CANNOT_LINK_PAIRS, pairwise_precision_recall, threshold_from_cannot_links,
    )  # fmt: skip

    rng = np.random.default_rng(1)
    # camera 0 sees 12 people at once: 66 pairs known to be different people; camera 1 sees person 0 later
    seen = rng.normal(size=(12, 8))
    tracks = [track(0, 1, 10, list(v), track_id=i) for i, v in enumerate(seen)]
    tracks.append(track(1, 30, 40, list(seen[0] + 0.05 * rng.normal(size=8)), track_id=99))
    feats = np.stack([t.feature for t in tracks[:12]]).astype(np.float64)
    known = ((feats[:, None] - feats[None]) ** 2).sum(-1)[np.triu_indices(12, 1)]  # the 66 cannot-link distances
    threshold = threshold_from_cannot_links(tracks)
    assert threshold == pytest.approx(max(known.mean() - DEFAULT_SPREAD * known.std(), 0.0))
    assert threshold_from_cannot_links(tracks, spread=1.0) == pytest.approx(known.mean() - known.std())
    assert threshold_from_cannot_links(tracks, spread=1.0) > threshold  # a smaller spread merges more
    few = [track(0, 1, 10, list(v), track_id=i) for i, v in enumerate(seen[:4])]  # 6 pairs < MIN_CANNOT_LINK_PAIRS
    assert 6 < MIN_CANNOT_LINK_PAIRS and threshold_from_cannot_links(few) is None
    assert threshold_from_cannot_links(tracks[:1] + tracks[12:]) is None  # nobody seen together: no rule
    scaled = [TrackFeature(**{**vars(t), "feature": t.feature * 0.5}) for t in tracks]  # another model's scale
    assert threshold_from_cannot_links(scaled, spread=1.0) == pytest.approx(0.25 * (known.mean() - known.std()))
    labels = global_ids(tracks, threshold=0.1)
    assert labels[0] == labels[12] and len(set(labels[:12])) == 12  # the same person joins; one camera stays apart
    assert pairwise_precision_recall(np.array([1, 2, 1]), np.array([7, 8, 7])) == (1.0, 1.0)
    assert pairwise_precision_recall(np.array([1, 1, 1]), np.array([7, 8, 7])) == (pytest.approx(1 / 3), 1.0)


def test_centring_per_camera_removes_a_camera_shift() -> None:
    # six people seen in two cameras; camera 2 adds the same strong shift (a colour cast) to every feature
    rng = np.random.default_rng(0)
    people = rng.normal(size=(6, 16))
    cast = 3.0 * rng.normal(size=16)
    unit = lambda v: v / np.linalg.norm(v)  # noqa: E731
    tracks = [track(0, 10 * i, 10 * i + 5, list(unit(p)), track_id=i) for i, p in enumerate(people)]
    tracks += [track(1, 10 * i, 10 * i + 5, list(unit(p + cast)), track_id=i) for i, p in enumerate(people)]
    raw = np.stack([t.feature for t in tracks])
    centred = centre_cameras(tracks)
    assert centred is not None
    feats = np.stack([t.feature for t in centred])
    np.testing.assert_allclose(np.linalg.norm(feats, axis=1), 1.0, rtol=1e-5)

    def same_vs_other(f: np.ndarray) -> tuple[float, float]:
        """Largest distance between one person's two tracks; smallest between two different people."""
        d = ((f[:, None] - f[None]) ** 2).sum(-1)
        person = np.arange(12) % 6
        same = person[:, None] == person[None]
        np.fill_diagonal(same, False)
        other = person[:, None] != person[None]
        return float(d[same].max()), float(d[other].min())

    same, other = same_vs_other(feats)
    assert same < other  # centred: any cut between the two joins exactly each person's tracks
    same, other = same_vs_other(raw)
    assert same > other  # raw: the shift puts some different people closer than one person in two cameras
    assert [(t.camera, t.track_id) for t in centred] == [(t.camera, t.track_id) for t in tracks]


def test_centring_needs_enough_tracks_in_every_camera() -> None:
    many = [track(0, i, i, [1.0, float(i)], track_id=i) for i in range(MIN_TRACKS_TO_CENTRE)]
    few = [track(1, i, i, [0.0, 1.0], track_id=i) for i in range(MIN_TRACKS_TO_CENTRE - 1)]
    assert centre_cameras(many + few) is None
    assert centre_cameras(many) is not None

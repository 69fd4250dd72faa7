"""`spanet adapt` on the tiny synthetic set: the run folder and its last.pt, tracklet rules, resume, bad input."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
from pathlib import Path

import numpy as np
import pytest
import torch

from builders import make_checkpoint
from spanet.checkpoint import load_checkpoint, load_model
from spanet.cli import main
from spanet.data.unlabelled import UnlabelledCrop
from spanet.training.pseudo_labels import ClusterSettings, cluster_statistics, pseudo_labels, split_conflicts

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py

# small neighbourhoods for 48 crops, and a fine-tuning of two steps per round in float32 without loader workers
FAST = ["--k1", "10", "--eps", "0.35", "--min-samples", "3", "--epochs", "1", "--batch-size", "8", "--device", "cpu",
        "--no-progress", "--set", "data.num_workers=0", "--set", "train.max_steps_per_epoch=2",
        "--set", "train.amp=none", "--set", "train.log_every=1"]  # fmt: skip


@pytest.fixture(scope="module")
def parent(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("parent") / "parent.pt")


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def adapt_args(parent: Path, out: Path, source: Path, *extra: str) -> list[str]:
    return ["adapt", "--checkpoint", str(parent), "--output", str(out), str(source), *FAST, *extra]


def test_adapt_writes_a_loadable_checkpoint_with_its_origin_and_round_statistics(
    tiny_market: Path, parent: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from spanet.features import model_fingerprints

    before = digest(parent)
    out = tmp_path / "adapted"
    assert main(adapt_args(parent, out, tiny_market / "bounding_box_train", "--rounds", "2")) == 0
    assert "adapted checkpoint" in capsys.readouterr().out
    assert digest(parent) == before  # the source checkpoint is only read
    model, state = load_model(out / "last.pt")
    record = state["adaptation"]
    parent_state = load_checkpoint(parent)
    assert record["parent"] == {"checkpoint": str(parent.resolve()),
                                **model_fingerprints(parent_state["model_args"], parent_state["model"])}  # fmt: skip
    assert record["sources"] == [{"path": str((tiny_market / "bounding_box_train").resolve()), "kind": "crops"}]
    assert [r["round"] for r in record["rounds"]] == [1, 2]
    for stats in record["rounds"]:
        assert stats["crops"] == 48 and stats["clusters"] >= 2 and 0.0 <= stats["unclustered_share"] < 1.0
        assert 0.0 < stats["purity"] <= 1.0 and 0.0 <= stats["pair_precision"] <= 1.0  # names give ground truth
    assert model.num_classes == len({x for x in json.loads((out / "rounds" / "02.json").read_text())["labels"]} - {-1})
    before_weights = load_model(parent)[0].backbone.parameters()
    assert not any(torch.equal(a, b) for a, b in zip(model.backbone.parameters(), before_weights))
    logged = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["round"] for r in logged if r["type"] == "round"] == [1, 2]
    assert not (out / "rounds" / "01" / "last.pt").exists()  # a finished round's resumable checkpoint is dropped
    # every command that loads checkpoints reads it: e.g. features of the adapted model
    assert main(["extract", "--checkpoint", str(out / "last.pt"), str(tiny_market / "query"), "--out",
                 str(tmp_path / "f.npz"), "--device", "cpu", "--quiet"]) == 0  # fmt: skip


@pytest.mark.parametrize("memory", [[], ["--memory-weight", "1"]], ids=["plain", "cluster-memory"])
def test_stopped_adaptation_resumes_to_the_same_weights(
    tiny_market: Path, parent: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture,
    memory: list[str],
) -> None:
    """With a cluster memory, the interrupted round's memory is in its checkpoint and the resumed round goes on
    with it (without it, the resumed steps would train against no memory, or a fresh one, and end elsewhere)."""
    import spanet.losses

    source = tiny_market / "bounding_box_train"
    assert main(adapt_args(parent, tmp_path / "straight", source, "--rounds", "2", *memory)) == 0
    real, calls = spanet.losses.weigh_terms, []

    def stop_in_round_two(*args: object, **kwargs: object) -> torch.Tensor:
        calls.append(1)
        if len(calls) == 3:  # round 2, step 1 of 2
            os.kill(os.getpid(), signal.SIGINT)
        return real(*args, **kwargs)

    monkeypatch.setattr(spanet.losses, "weigh_terms", stop_in_round_two)
    out = tmp_path / "split"
    assert main(adapt_args(parent, out, source, "--rounds", "2", *memory)) == 130
    assert [r["round"] for r in load_checkpoint(out / "last.pt")["adaptation"]["rounds"]] == [1]
    stopped = load_checkpoint(out / "rounds" / "02" / "last.pt")
    assert stopped["step_in_epoch"] == 1
    assert ("cluster_memory" in stopped) == bool(memory)
    monkeypatch.setattr(spanet.losses, "weigh_terms", real)
    capsys.readouterr()
    assert main(adapt_args(parent, out, source, "--rounds", "3", "--resume", *memory)) == 2
    assert "was adapted with other settings" in capsys.readouterr().err
    assert main(adapt_args(parent, out, source, "--rounds", "2", "--resume", *memory)) == 0
    straight, resumed = load_checkpoint(tmp_path / "straight" / "last.pt"), load_checkpoint(out / "last.pt")
    assert [k for k in straight["model"] if not torch.equal(straight["model"][k], resumed["model"][k])] == []
    assert straight["adaptation"]["rounds"] == resumed["adaptation"]["rounds"]
    assert "cluster_memory" not in resumed  # RUN/last.pt is a plain model checkpoint


def test_overlapping_tracklets_of_one_camera_are_never_one_identity() -> None:
    """Two tracks seen at the same time in one camera are two people, however alike they look."""
    rng = np.random.default_rng(0)
    people = rng.normal(size=(8, 16))
    crops, rows = [], []
    for person in range(8):
        for camera in (1, 2):
            start = 100.0 * person + 10 * camera
            key = f"{camera}:{person}"
            for _ in range(3):
                crops.append(UnlabelledCrop(path=f"{key}.jpg", camera=camera, tracklet=key, start=start, end=start + 5))
                rows.append(people[person] + 0.01 * rng.normal(size=16))
    # a look-alike of person 0 walking in camera 1 while person 0 is there
    for _ in range(3):
        crops.append(UnlabelledCrop(path="twin.jpg", camera=1, tracklet="1:twin", start=12.0, end=13.0))
        rows.append(people[0] + 0.01 * rng.normal(size=16))
    features = np.asarray(rows, dtype=np.float32)
    result = pseudo_labels(features, crops, settings=ClusterSettings(k1=4, k2=2, eps=0.5, min_samples=2))
    labels = result.labels
    first, twin = labels[0], labels[-1]
    assert first >= 0 and twin >= 0 and first != twin
    assert labels[3] == first  # person 0 in camera 2 (no time conflict) still joins camera 1's track
    assert result.statistics["clusters"] == len(set(labels.tolist()) - {-1})


def test_split_conflicts_keeps_clusters_without_conflict() -> None:
    spans = [(1, 0.0, 10.0), (1, 5.0, 15.0), (1, 20.0, 30.0), (2, 0.0, 10.0), None]
    labels = split_conflicts(np.array([0, 0, 0, 0, 0]), spans)
    assert labels[0] == labels[2] == labels[3] == labels[4] == 0 and labels[1] == 1
    assert split_conflicts(np.array([0, 1, -1, 1, 0]), spans).tolist() == [0, 1, -1, 1, 0]


def test_statistics_against_known_identities() -> None:
    stats = cluster_statistics(np.array([0, 0, 1, 1, -1]), np.array([5, 5, 5, 6, 6]), eps=0.5)
    assert stats["clusters"] == 2 and stats["unclustered_share"] == pytest.approx(0.2)
    assert stats["purity"] == pytest.approx(0.75)  # 2 of cluster 0, 1 of cluster 1 in their majority
    assert stats["pair_precision"] == pytest.approx(0.5) and stats["pair_recall"] == pytest.approx(1 / 3)


def _renamed_copy(source: Path, target: Path, *, camera: int | None = None, count: int | None = None) -> Path:
    target.mkdir(parents=True)
    for path in sorted(source.glob("*.jpg"))[:count]:
        name = path.name if camera is None else path.name.replace(path.name.split("_")[1][:2], f"c{camera}", 1)
        shutil.copy(path, target / name)
    return target


@pytest.mark.parametrize("case, pattern", [
    ("one_camera", "every crop is from camera 1; .* needs crops from two or more cameras"),
    ("too_few", "10 crops; adaptation needs at least 11"),
    ("one_cluster", "every clustered crop into one identity"),
    ("no_cluster", "clustering found no group"),
    ("zero_eps", r"--eps is a Jaccard distance radius in \(0, 1\], got 0.0"),
])  # fmt: skip
def test_bad_input_is_one_clear_error_and_the_checkpoint_is_untouched(
    tiny_market: Path, parent: Path, tmp_path: Path, capsys: pytest.CaptureFixture, case: str, pattern: str
) -> None:
    crops = tiny_market / "bounding_box_train"
    source = {"one_camera": lambda: _renamed_copy(crops, tmp_path / "crops", camera=1),
              "too_few": lambda: _renamed_copy(crops, tmp_path / "crops", count=10)}.get(case, lambda: crops)()
    extra = {"one_cluster": ["--eps", "0.999", "--min-samples", "2"],
             "no_cluster": ["--eps", "0.0001", "--min-samples", "20"], "zero_eps": ["--eps", "0"]}.get(case, [])  # fmt: skip
    before = digest(parent)
    assert main(["adapt", "--checkpoint", str(parent), "--output", str(tmp_path / "out"), str(source), *FAST,
                 *extra]) == 2  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert len([line for line in err if line.startswith("error:")]) == 1
    assert re.search(pattern, err[-1]), err
    assert digest(parent) == before


def _gallery_of(crops: Path, folder: Path) -> Path:
    """A gallery folder like `spanet ingest` writes: each (person, camera) of the crops is one track, in time order."""
    from spanet.data.names import camera_from_name, person_id_from_name
    from spanet.deploy.backend import open_gallery
    from spanet.deploy.entry import NewEntry

    info = {"feature_dim": 4, "kind": "parts", "args_fingerprint": "a" * 16, "weights_fingerprint": "b" * 16}
    gallery = open_gallery(folder, model_info=info, create=True)
    entries = []
    for i, path in enumerate(sorted(crops.glob("*.jpg"))):
        pid, camera = person_id_from_name(path), camera_from_name(path)
        entries.append(NewEntry(data=path.read_bytes(), suffix=".jpg", camera=camera, track=100 * pid + camera,
                                timestamp=f"2024-01-02T03:{pid:02d}:{i % 60:02d}+00:00", source=path.name))  # fmt: skip
    gallery.add(entries, np.zeros((len(entries), 4), dtype=np.float32))
    gallery.close()
    return folder


def test_a_gallery_source_gives_tracklets_whose_crops_share_a_label(
    tiny_market: Path, parent: Path, tmp_path: Path
) -> None:
    from spanet.data.unlabelled import read_unlabelled

    gallery = _gallery_of(tiny_market / "bounding_box_train", tmp_path / "gallery")
    crops = read_unlabelled([gallery])
    assert len(crops) == 48 and all(c.tracklet is not None and c.start is not None and c.truth is None for c in crops)
    out = tmp_path / "adapted"
    assert main(["adapt", "--checkpoint", str(parent), "--output", str(out), str(gallery), *FAST, "--rounds", "1",
                 "--min-samples", "2", "--no-camera-bn"]) == 0  # fmt: skip  # (with it this tiny model's 16
    # tracklets all fall within the fixed eps: one cluster, refused; the tracklet rules are what is tested here)
    rounds = json.loads((out / "rounds" / "01.json").read_text())
    tracklet_of = {crop.path: crop.tracklet for crop in crops}
    by_track: dict[str, set[int]] = {}
    for path, label in zip(rounds["paths"], rounds["labels"]):
        by_track.setdefault(tracklet_of[path], set()).add(label)
    assert all(len(labels) == 1 for labels in by_track.values())  # a tracklet is never split
    assert load_checkpoint(out / "last.pt")["adaptation"]["sources"][0]["kind"] == "gallery"
    assert "purity" not in rounds["statistics"]  # a gallery's rows carry no ground truth


def test_camera_centring_lets_clusters_form_across_cameras() -> None:
    """Crops whose features carry a strong per-camera offset (a colour cast) cluster by camera; centred, by person."""
    rng = np.random.default_rng(1)
    people, casts = rng.normal(size=(10, 32)), 4.0 * rng.normal(size=(3, 32))
    crops, rows, truth = [], [], []
    for person in range(10):
        for camera in range(3):
            for _ in range(2):
                crops.append(UnlabelledCrop(path="x.jpg", camera=camera + 1, truth=person + 1))
                rows.append(people[person] + casts[camera] + 0.05 * rng.normal(size=32))
    features = np.asarray(rows, dtype=np.float32)
    plain, centred = (pseudo_labels(features, crops, settings=ClusterSettings(k1=5, k2=2, eps=0.45, min_samples=2,
                                                                              camera_centre=c)) for c in (False, True))
    assert centred.statistics["purity"] == 1.0 and centred.statistics["pair_recall"] == 1.0
    assert plain.statistics["pair_recall"] < 0.5  # one camera's crops of a person together, the others apart


def test_a_failed_first_clustering_can_be_rerun_with_other_settings(
    tiny_market: Path, parent: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out, source = tmp_path / "out", tiny_market / "bounding_box_train"
    assert main(adapt_args(parent, out, source, "--eps", "0.0001", "--min-samples", "20")) == 2
    assert main(adapt_args(parent, out, source, "--eps", "0.0001", "--min-samples", "19")) == 2  # moved aside
    assert "not empty" not in capsys.readouterr().err
    (out / "last.pt").write_bytes(b"")  # trained weights are never replaced without --overwrite
    assert main(adapt_args(parent, out, source)) == 2
    assert "is not empty" in capsys.readouterr().err


def test_neighbour_sets_that_cover_everyone_are_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """Items whose closest pairs share their expanded k-reciprocal sets exactly (seen with k2=6 on 46 tracklets of
    footage, at most 3 per person) are at Jaccard distance 0: no radius can be derived, and the error says what to
    lower (DBSCAN raised a traceback before)."""
    import spanet.evaluation.rerank as rerank
    from spanet.errors import SpanetError
    from spanet.training.pseudo_labels import ClusterSettings, pseudo_labels

    crops = [UnlabelledCrop(path="x.jpg", camera=1 + i % 2) for i in range(12)]
    distances = np.ones((12, 12), dtype=np.float32)
    distances[:6, :6] = distances[6:, 6:] = 0.0
    monkeypatch.setattr(rerank, "k_reciprocal_jaccard", lambda *_, **__: distances)
    features = np.random.default_rng(0).normal(size=(12, 8)).astype(np.float32)
    with pytest.raises(SpanetError, match="k1=10 / k2=2 neighbours are too many for so few items; lower --k2 and --k1"):
        pseudo_labels(features, crops, settings=ClusterSettings(k1=10, k2=2))

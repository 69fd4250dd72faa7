"""`spanet gallery reembed`: every vector re-computed with the new model, entries kept; the old vectors serve until
the switch; kill -9 while staging or during the switch, and a re-run (or the next open) finishes it."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from builders import make_checkpoint, make_images
from spanet.errors import SpanetError

pytestmark = pytest.mark.usefixtures("one_thread")
COUNT = 8


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict:
    from spanet.features import FeatureExtractor

    root = tmp_path_factory.mktemp("reembed_models")
    old, new = make_checkpoint(root / "old.pt", seed=0), make_checkpoint(root / "new.pt", seed=1)
    images = make_images(root / "imgs", count=COUNT)
    return {
        "old": FeatureExtractor(old, device="cpu", batch_size=2),
        "new": FeatureExtractor(new, device="cpu", batch_size=2),
        "old_ckpt": old, "new_ckpt": new, "images": images,
    }  # fmt: skip


@pytest.fixture()
def gallery_dir(tmp_path: Path, models: dict) -> Path:
    from spanet.deploy.enrol import enrol_files
    from spanet.deploy.gallery import Gallery

    gallery = Gallery.open(tmp_path / "g", model_info=models["old"].info, create=True)
    enrol_files(gallery, models["old"], models["images"], batch_size=4)
    gallery.close()
    return tmp_path / "g"


def _open(folder: Path, model):
    from spanet.deploy.gallery import Gallery

    return Gallery.open(folder, model_info=model.info)


def _stored(folder: Path, model) -> tuple[list, np.ndarray]:
    """(entries by id, their stored vectors), and a check that the index holds exactly these vectors."""
    gallery = _open(folder, model)
    try:
        ids = gallery.store.ids()
        entries = [gallery.store.get([i])[int(i)] for i in ids]
        vectors = gallery.store.features(ids)
        for i, vector in zip(ids, vectors):  # searches use the index: it must agree with the rows
            hit = gallery.search(vector, top_k=1)[0]
            assert hit.distance < 1e-6 and np.allclose(gallery.store.features([hit.entry.id])[0], vector)
    finally:
        gallery.close()
    return entries, vectors


def _expected(folder: Path, model, entries: list) -> np.ndarray:
    return model([folder / "images" / e.image for e in entries])


def _staged(folder: Path) -> int:
    db = sqlite3.connect(folder / "reembed.sqlite")
    try:
        return int(db.execute("SELECT COUNT(*) FROM staged").fetchone()[0])
    finally:
        db.close()


def test_reembed_switches_every_vector_and_keeps_the_entries(gallery_dir: Path, models: dict) -> None:
    from spanet.deploy.reembed import reembed_gallery

    before, old_vectors = _stored(gallery_dir, models["old"])
    report = reembed_gallery(gallery_dir, models["new"])
    assert report.switched and (report.entries, report.computed, report.reused) == (COUNT, COUNT, 0)
    assert report.old_fingerprint != report.new_fingerprint
    after, vectors = _stored(gallery_dir, models["new"])
    assert [(e.id, e.image, e.label, e.camera, e.source) for e in after] == \
        [(e.id, e.image, e.label, e.camera, e.source) for e in before]  # fmt: skip
    assert {e.fingerprint for e in after} == {report.new_fingerprint}
    np.testing.assert_allclose(vectors, _expected(gallery_dir, models["new"], after), atol=1e-5)
    assert not np.allclose(vectors, old_vectors)
    meta = json.loads((gallery_dir / "gallery.json").read_text())
    assert meta["model"]["weights_fingerprint"] == report.new_fingerprint
    assert not (gallery_dir / "reembed.sqlite").exists() and not (gallery_dir / ".reembed-switch").exists()
    with pytest.raises(SpanetError, match="different model weights"):
        _open(gallery_dir, models["old"])
    again = reembed_gallery(gallery_dir, models["new"])
    assert not again.switched and again.computed == 0


_KILL_WHILE_STAGING = """
import os, signal, sys
sys.path[:0] = {paths!r}
from spanet.deploy import reembed
from spanet.deploy.reembed import reembed_gallery
from spanet.features import FeatureExtractor
put, calls = reembed._Staging.put, []
def put_then_die(self, ids, features):
    put(self, ids, features)
    calls.append(len(ids))
    if len(calls) == 2:
        os.kill(os.getpid(), signal.SIGKILL)  # after two committed batches
reembed._Staging.put = put_then_die
reembed_gallery({folder!r}, FeatureExtractor({ckpt!r}, device="cpu", batch_size=2))
"""


def _run_killed(script: str) -> None:
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=300)
    assert done.returncode == -9, done.stderr.decode()[-2000:]


def test_kill_9_while_staging_keeps_the_old_vectors_and_a_rerun_resumes(gallery_dir: Path, models: dict) -> None:
    from spanet.deploy.reembed import reembed_gallery

    before, old_vectors = _stored(gallery_dir, models["old"])
    _run_killed(_KILL_WHILE_STAGING.format(paths=sys.path, folder=str(gallery_dir), ckpt=str(models["new_ckpt"])))
    assert _staged(gallery_dir) == 4
    entries, vectors = _stored(gallery_dir, models["old"])  # the gallery still searches its old vectors
    np.testing.assert_array_equal(vectors, old_vectors)
    report = reembed_gallery(gallery_dir, models["new"])
    assert (report.entries, report.computed, report.reused) == (COUNT, COUNT - 4, 4)
    after, vectors = _stored(gallery_dir, models["new"])
    np.testing.assert_allclose(vectors, _expected(gallery_dir, models["new"], after), atol=1e-5)


_KILL_DURING_SWITCH = """
import os, signal, sys
sys.path[:0] = {paths!r}
from spanet.deploy import reembed
from spanet.deploy.sqlite_store import SQLiteStore
from spanet.features import FeatureExtractor
die = lambda *args, **kwargs: os.kill(os.getpid(), signal.SIGKILL)
if {after_commit!r}:
    reembed._complete = die  # the rows switched, gallery.json and index.faiss not yet
else:
    SQLiteStore.adopt_features = die  # marker written, rows not switched
reembed.reembed_gallery({folder!r}, FeatureExtractor({ckpt!r}, device="cpu", batch_size=4))
"""


@pytest.mark.parametrize("after_commit", [False, True])
def test_kill_9_during_the_switch_is_finished_or_undone_on_next_open(gallery_dir: Path, models: dict,
                                                                     after_commit: bool) -> None:  # fmt: skip
    from spanet.deploy.reembed import reembed_gallery

    _, old_vectors = _stored(gallery_dir, models["old"])
    script = _KILL_DURING_SWITCH.format(paths=sys.path, folder=str(gallery_dir), ckpt=str(models["new_ckpt"]),
                                        after_commit=after_commit)  # fmt: skip
    _run_killed(script)
    assert (gallery_dir / ".reembed-switch").is_file()
    if after_commit:  # opening with the new model completes the switch: new vectors, index rebuilt from the rows
        after, vectors = _stored(gallery_dir, models["new"])
        np.testing.assert_allclose(vectors, _expected(gallery_dir, models["new"], after), atol=1e-5)
        assert not (gallery_dir / "reembed.sqlite").exists()
    else:  # the old model still opens it with its old vectors; the staged ones wait for the re-run
        _, vectors = _stored(gallery_dir, models["old"])
        np.testing.assert_array_equal(vectors, old_vectors)
        assert _staged(gallery_dir) == COUNT
        report = reembed_gallery(gallery_dir, models["new"])
        assert (report.computed, report.reused) == (0, COUNT)
        _stored(gallery_dir, models["new"])
    assert not (gallery_dir / ".reembed-switch").exists()


def test_switch_waits_for_the_process_holding_the_gallery(gallery_dir: Path, models: dict) -> None:
    from spanet.deploy.gallery import NewEntry
    from spanet.deploy.reembed import reembed_gallery

    serving = _open(gallery_dir, models["old"])  # a running `spanet serve` holds the lock
    with pytest.raises(SpanetError, match=r"staged in .*stop it and run this command again"):
        reembed_gallery(gallery_dir, models["new"])
    assert len(serving.search(serving.store.features(serving.store.ids()[:1])[0], top_k=3)) == 3
    extra = make_images(gallery_dir.parent / "more", count=2, seed=7)[1]
    serving.add([NewEntry(data=extra.read_bytes(), suffix=".jpg", source="late")], models["old"]([extra]))
    serving.close()
    report = reembed_gallery(gallery_dir, models["new"])
    assert (report.entries, report.computed, report.reused) == (COUNT + 1, 1, COUNT)
    after, vectors = _stored(gallery_dir, models["new"])
    np.testing.assert_allclose(vectors, _expected(gallery_dir, models["new"], after), atol=1e-5)


def test_forget_also_drops_staged_vectors(gallery_dir: Path, models: dict) -> None:
    from spanet.deploy.filters import Where
    from spanet.deploy.reembed import reembed_gallery
    from spanet.deploy.retention import forget

    serving = _open(gallery_dir, models["old"])
    with pytest.raises(SpanetError, match="stop it"):
        reembed_gallery(gallery_dir, models["new"])
    assert _staged(gallery_dir) == COUNT
    forget(serving, Where(ids=(1, 2)))
    serving.close()
    assert _staged(gallery_dir) == COUNT - 2
    assert reembed_gallery(gallery_dir, models["new"]).entries == COUNT - 2


def test_cli_reembed_and_serve_names_the_way_out(gallery_dir: Path, models: dict, capsys: pytest.CaptureFixture) -> None:
    from spanet.cli import main

    serve = ["serve", "--gallery", str(gallery_dir), "--checkpoint", str(models["new_ckpt"]), "--device", "cpu"]
    assert main(serve) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and f"spanet gallery reembed {gallery_dir} --checkpoint {models['new_ckpt']}" in errors[0]
    assert main(["gallery", "reembed", str(gallery_dir), "--checkpoint", str(models["new_ckpt"]), "--device", "cpu",
                 "--quiet", "--amp", "none"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert f"re-embedded {COUNT} entries" in out and f"{COUNT} computed now" in out
    _stored(gallery_dir, models["new"])


def test_milvus_gallery_and_other_kind_are_refused(gallery_dir: Path, models: dict, tmp_path: Path) -> None:
    from spanet.deploy.reembed import reembed_gallery
    from spanet.features import FeatureExtractor

    reduced = FeatureExtractor(models["new_ckpt"], device="cpu", kind="reduced")
    with pytest.raises(SpanetError, match="holds 'parts' embeddings"):
        reembed_gallery(gallery_dir, reduced)
    milvus = tmp_path / "m"
    milvus.mkdir()
    (milvus / "gallery.json").write_text((gallery_dir / "gallery.json").read_text())
    (milvus / "store.json").write_text(json.dumps({"store": "milvus", "uri": "http://127.0.0.1:19530"}))
    with pytest.raises(SpanetError, match="SQLite galleries only"):
        reembed_gallery(milvus, models["new"])

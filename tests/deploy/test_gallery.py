"""The gallery folder: enrol, reopen without rebuilding, refuse another model, recover from a crash between steps."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from builders import make_checkpoint, make_images, write_images
from spanet.errors import SpanetError


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory):
    from spanet.features import FeatureExtractor

    root = tmp_path_factory.mktemp("gallery_model")
    return FeatureExtractor(make_checkpoint(root / "a.pt"), device="cpu", batch_size=4)


def _build(folder: Path, model, images: list[Path]):
    from spanet.deploy.enrol import enrol_files
    from spanet.deploy.gallery import Gallery

    gallery = Gallery.open(folder, model_info=model.info, create=True)
    report = enrol_files(gallery, model, images, batch_size=5)
    return gallery, report


def _kill(gallery) -> None:
    """What `kill -9` leaves: nothing flushed or saved; the OS closes the files, which releases the folder lock."""
    gallery.store.close()
    gallery._lock_file.close()


def _ids_agree(gallery) -> None:
    import faiss

    in_index = np.sort(faiss.vector_to_array(gallery.index.id_map))
    assert np.array_equal(in_index, gallery.store.ids())
    referenced = gallery.store.images()
    on_disk = {p.name for p in (gallery.directory / "images").iterdir()}
    assert referenced == on_disk


def test_build_reopen_rebuilds_nothing(tmp_path: Path, model) -> None:
    from spanet.deploy.gallery import Gallery

    images = make_images(tmp_path / "imgs", count=12)
    gallery, report = _build(tmp_path / "g", model, images)
    assert len(report.ids) == 12 and len(gallery) == 12
    gallery.close()
    index_file = tmp_path / "g" / "index.faiss"
    stamp = index_file.stat().st_mtime_ns
    reopened = Gallery.open(tmp_path / "g", model_info=model.info)
    assert len(reopened) == 12 and index_file.stat().st_mtime_ns == stamp  # not rewritten
    _ids_agree(reopened)
    # same bytes are not enrolled twice
    from spanet.deploy.enrol import enrol_files

    again = enrol_files(reopened, model, images[:3])
    assert again.already == 3 and not again.ids and len(reopened) == 12
    reopened.close()


def test_other_model_refused(tmp_path: Path, model) -> None:
    from spanet.deploy.gallery import Gallery
    from spanet.features import FeatureExtractor

    gallery, _ = _build(tmp_path / "g", model, make_images(tmp_path / "imgs", count=3))
    gallery.close()
    other = FeatureExtractor(make_checkpoint(tmp_path / "b.pt", seed=1), device="cpu")
    with pytest.raises(SpanetError, match="different model weights"):
        Gallery.open(tmp_path / "g", model_info=other.info)
    with pytest.raises(SpanetError, match="not a spanet gallery"):
        Gallery.open(tmp_path / "nothing", model_info=model.info)


def test_crash_between_steps_is_repaired_on_open(tmp_path: Path, model) -> None:
    """Fault injection at each step boundary: file without row, row without index entry, index entry without row."""
    from spanet.deploy.gallery import Gallery, NewEntry

    images = make_images(tmp_path / "imgs", count=6)
    gallery, _ = _build(tmp_path / "g", model, images[:4])
    gallery.close()
    # 1) crash after the rows were committed, before index.faiss was written: the rows' vectors are re-added
    gallery = Gallery.open(tmp_path / "g", model_info=model.info)
    features = model(images[4:])
    new_ids = gallery.add([NewEntry(data=p.read_bytes(), suffix=".jpg", source=p.name) for p in images[4:]], features)
    _kill(gallery)  # the in-memory index is lost, index.faiss still has 4 entries
    # 2) crash after the image file was written, before its row: an orphan file
    orphan = tmp_path / "g" / "images" / ("f" * 64 + ".jpg")
    orphan.write_bytes(images[0].read_bytes())
    reopened = Gallery.open(tmp_path / "g", model_info=model.info)
    assert len(reopened) == 6 and not orphan.exists()
    _ids_agree(reopened)
    hits = reopened.search(features[1], top_k=1)
    assert hits[0].entry.id == new_ids[1] and hits[0].distance < 1e-3
    # 3) crash after a row was deleted, before the index was saved: the stale vector is removed
    reopened.save_index()
    reopened.store.delete(new_ids[0])
    _kill(reopened)
    again = Gallery.open(tmp_path / "g", model_info=model.info)
    assert len(again) == 5 and new_ids[0] not in {h.entry.id for h in again.search(features[0], top_k=6)}
    _ids_agree(again)
    again.close()


def test_empty_gallery_searches_to_nothing(tmp_path: Path, model) -> None:
    from spanet.deploy.gallery import Gallery

    gallery = Gallery.open(tmp_path / "g", model_info=model.info, create=True)
    assert len(gallery) == 0 and gallery.search(np.zeros(model.feature_dim), top_k=5, camera=1) == []
    assert gallery.cameras() == []
    gallery.close()


def test_search_filters_and_brute_force(tmp_path: Path, model) -> None:
    names = [f"{pid:04d}_c{cam}s1_{i:06d}_00.jpg" for i, (pid, cam) in enumerate([(1, 1), (1, 2), (2, 1), (2, 3), (3, 2), (4, 3)] * 3)]
    images = write_images(tmp_path / "imgs", names)
    gallery, _ = _build(tmp_path / "g", model, images)
    stored = gallery.store.features(gallery.store.ids())
    cams = gallery.store.cameras()
    query = model(images[:1])[0]
    for camera, exclude in ((None, None), (2, None), (None, 1), (3, 3)):
        hits = gallery.search(query, top_k=4, camera=camera, exclude_camera=exclude)
        keep = [i for i in gallery.store.ids() if (camera is None or cams[i] == camera) and (exclude is None or cams[i] != exclude)]
        brute = sorted(((float(((stored[i - 1] - query) ** 2).sum()), i) for i in keep))[:4]
        assert [h.entry.id for h in hits] == [i for _, i in brute]
        np.testing.assert_allclose([h.distance for h in hits], [d for d, _ in brute], rtol=1e-4, atol=1e-4)
    assert {h.entry.label for h in gallery.search(query, top_k=18)} == {"0001", "0002", "0003", "0004"}
    assert gallery.cameras() == [1, 2, 3]
    gallery.close()


def test_cameras_from_names_and_csv(tmp_path: Path) -> None:
    from spanet.deploy.enrol import camera_from_name, label_from_name, read_cameras_csv

    assert camera_from_name("0002_c3s1_000551_01.jpg") == 3 and camera_from_name("person.jpg") is None
    assert label_from_name("0002_c3s1_000551_01.jpg") == "0002" and label_from_name("-1_c3s1.jpg") is None
    csv_file = tmp_path / "cameras.csv"
    csv_file.write_text("file,camera\nsub/a.jpg,4\nb.png,7\n", encoding="utf-8")
    assert read_cameras_csv(csv_file) == {"a.jpg": 4, "b.png": 7}
    csv_file.write_text("file,camera\na.jpg,four\n", encoding="utf-8")
    with pytest.raises(SpanetError, match="line 2"):
        read_cameras_csv(csv_file)
    assert not os.path.exists(tmp_path / "nothing.csv")
    with pytest.raises(SpanetError, match="cannot read cameras file"):
        read_cameras_csv(tmp_path / "nothing.csv")


def test_one_process_at_a_time_and_a_damaged_index_is_rebuilt(tmp_path: Path, model) -> None:
    """A second opener (e.g. `gallery build` while `serve` runs) is refused instead of deleting the server's new
    files; an unreadable index.faiss is a cache: rebuilt from the rows with a warning."""
    from spanet.deploy.gallery import Gallery

    images = make_images(tmp_path / "imgs", count=4)
    gallery, _ = _build(tmp_path / "g", model, images)
    with pytest.raises(SpanetError, match="open in another process"):
        Gallery.open(tmp_path / "g", model_info=model.info)
    gallery.close()
    (tmp_path / "g" / "index.faiss").write_bytes(b"")  # e.g. a disk that filled up while it was written
    with pytest.warns(UserWarning, match="rebuilding it"):
        reopened = Gallery.open(tmp_path / "g", model_info=model.info)
    assert len(reopened) == 4
    _ids_agree(reopened)
    reopened.close()
    assert Gallery.stored_kind(tmp_path / "g") == model.kind and Gallery.stored_kind(tmp_path / "new") is None


def test_a_file_that_cannot_be_read_is_skipped_and_listed(tmp_path: Path, model) -> None:
    images = make_images(tmp_path / "imgs", count=3)
    gone = images[1].with_name("deleted-meanwhile.jpg")
    gallery, report = _build(tmp_path / "g", model, [images[0], gone, images[2]])
    assert len(report.ids) == 2 and [path for path, _ in report.failures] == [str(gone)]
    gallery.close()


def test_an_interrupt_after_commit_is_not_hidden_by_a_rollback(tmp_path: Path) -> None:
    """SIGTERM lands as KeyboardInterrupt; arriving once the transaction is already closed (just after COMMIT) it
    must come out as itself, not as "cannot rollback - no transaction is active" (seen once in `test_sigterm_stops_
    between_segments_and_a_rerun_finishes`: ingest exited 1 instead of 130); inside the transaction it rolls back."""
    import sqlite3

    from spanet.deploy.sqlite_store import _transaction

    db = sqlite3.connect(tmp_path / "t.sqlite", isolation_level=None)
    db.execute("CREATE TABLE t (x INTEGER)")
    with pytest.raises(KeyboardInterrupt):
        with _transaction(db):
            db.execute("INSERT INTO t VALUES (1)")
            db.execute("COMMIT")  # the interrupt comes after the commit went through
            raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        with _transaction(db):
            db.execute("INSERT INTO t VALUES (2)")
            raise KeyboardInterrupt
    assert [row[0] for row in db.execute("SELECT x FROM t")] == [1] and not db.in_transaction
    db.close()

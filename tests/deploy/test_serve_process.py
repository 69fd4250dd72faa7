"""`spanet serve` as a real process: kill -9 during enrolments leaves a consistent gallery; concurrent enrolments and
searches lose and duplicate nothing."""

from __future__ import annotations

import io
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("uvicorn", reason="the service needs the 'serve' extra: pip install 'spanet[serve]'")
httpx = pytest.importorskip("httpx")

from builders import make_checkpoint, make_images, start_server  # noqa: E402
from PIL import Image  # noqa: E402


def _png(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, (64, 32, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def _check_consistent(gallery_dir: Path, checkpoint: Path) -> int:
    import faiss

    from spanet.deploy.gallery import Gallery
    from spanet.features import FeatureExtractor

    gallery = Gallery.open(gallery_dir, model_info=FeatureExtractor(checkpoint, device="cpu").info)
    ids = gallery.store.ids()
    assert np.array_equal(np.sort(faiss.vector_to_array(gallery.index.id_map)), ids)
    assert gallery.store.images() == {p.name for p in (gallery_dir / "images").iterdir()}
    assert len(set(ids.tolist())) == len(ids)
    size = len(gallery)
    gallery.close()
    return size


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("serve_process") / "model.pt")


def test_kill_9_during_enrolment(tmp_path: Path, checkpoint: Path) -> None:
    gallery_dir = tmp_path / "gallery"
    process, url = start_server(gallery_dir, checkpoint)
    confirmed: list[int] = []
    stop = threading.Event()

    def enrol_forever(seed: int) -> None:  # each thread its own images: the same bytes again are not enrolled twice
        with httpx.Client(base_url=url, timeout=10) as client:
            while not stop.is_set():
                files = [("files", (f"{seed}_{i}.png", _png(seed * 10 + i), "image/png")) for i in range(3)]
                seed += 1
                try:
                    response = client.post("/gallery", files=files)
                except httpx.HTTPError:
                    return  # the server died under us
                if response.status_code == 200:
                    confirmed.extend(response.json()["ids"])

    workers = [threading.Thread(target=enrol_forever, args=(start,)) for start in (0, 100_000)]
    for worker in workers:
        worker.start()
    try:
        deadline = time.monotonic() + 30
        while len(confirmed) < 12 and time.monotonic() < deadline:
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)  # mid-enrolment: requests are in flight
        process.wait(timeout=10)
    finally:
        stop.set()
        for worker in workers:
            worker.join(timeout=15)
    assert len(confirmed) >= 12
    assert not (gallery_dir / "index.faiss").exists()  # killed before any index save: opening must rebuild from rows
    size = _check_consistent(gallery_dir, checkpoint)
    assert size >= len(confirmed)  # every enrolment the client saw confirmed survived
    assert size % 3 == 0  # requests are all or nothing: never a part of a 3-image request
    # and the server starts again on it
    process, url = start_server(gallery_dir, checkpoint)
    try:
        assert httpx.get(f"{url}/health").json()["gallery_size"] == size
    finally:
        process.terminate()
        process.wait(timeout=20)


def test_concurrent_enrolments_and_searches(tmp_path: Path, checkpoint: Path) -> None:
    gallery_dir = tmp_path / "gallery"
    queries = make_images(tmp_path / "q", count=2)
    process, url = start_server(gallery_dir, checkpoint)
    errors: list[str] = []
    enrolled: list[int] = []

    def enrol(worker: int) -> None:
        with httpx.Client(base_url=url, timeout=30) as client:
            for n in range(6):
                files = [("files", (f"{worker}_{n}_{i}.png", _png(1000 + worker * 100 + n * 2 + i), "image/png")) for i in range(2)]
                response = client.post("/gallery", files=files)
                if response.status_code != 200:
                    errors.append(response.text)
                else:
                    enrolled.extend(response.json()["ids"])

    def search() -> None:
        with httpx.Client(base_url=url, timeout=30) as client:
            for n in range(10):
                query = queries[n % 2]
                response = client.post("/search", files={"file": (query.name, query.read_bytes(), "image/jpeg")}, data={"top_k": "5"})
                if response.status_code != 200:
                    errors.append(response.text)

    threads = [threading.Thread(target=enrol, args=(w,)) for w in range(3)] + [threading.Thread(target=search) for _ in range(2)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        assert not errors
        assert len(enrolled) == 36 and len(set(enrolled)) == 36
        listed = httpx.get(f"{url}/gallery", params={"limit": 1000}).json()
        assert listed["total"] == 36 and sorted(e["id"] for e in listed["entries"]) == sorted(enrolled)
    finally:
        process.terminate()
        process.wait(timeout=20)
    assert _check_consistent(gallery_dir, checkpoint) == 36

"""The person-search HTTP service: a FastAPI app over an open gallery (any `GalleryBackend`) and a `FeatureExtractor`.

Every request error is JSON `{"error": message}` with a 4xx status: uploads are decoded with a pixel limit before
any pixel is read (decompression bombs), the request body has a size limit, ids are integers (a path never comes
from a request), and a token, when set, is required on every route but the page itself (`GET /`, which holds no
data). The model is used by one request at a time (CPU cores are better spent on one batch than shared by several),
the gallery serialises its own index access.
"""


import base64
import datetime as dt
import io
import queue
import threading
from concurrent.futures import Future
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from spanet.deploy.backend import GalleryBackend
from spanet.deploy.filters import where_from_text
from spanet.deploy.guard import Guard, Limits, UploadError, decode_upload
from spanet.deploy.gallery import Entry, NewEntry, existing_ids
from spanet.deploy.search import SearchRequest, search_gallery
from spanet.errors import SpanetError
from spanet.evaluation.verification import is_unknown, nearest_is_unknown
from spanet.features import FeatureExtractor

__all__ = ["Limits", "create_app", "decode_upload"]  # Limits and decode_upload live in spanet.deploy.guard

_MAX_ID = 2**63 - 1  # SQLite's largest integer: a larger id or offset is a 422, not an overflow inside the store






def create_app(*, gallery: GalleryBackend, extractor: FeatureExtractor, threshold: float | None = None,
               token: str | None = None, limits: Limits = Limits(),
               allowed_hosts: Sequence[str] | None = None) -> Any:  # fmt: skip
    """The FastAPI application; `extractor` is a `spanet.features.FeatureExtractor` of the gallery's model.

    `allowed_hosts`: the Host header names accepted (others get 400), e.g. the loopback names when the service runs
    without a token, so a web page cannot reach it through DNS rebinding."""
    from fastapi import FastAPI
    from starlette.middleware.trustedhost import TrustedHostMiddleware

    from spanet import __version__

    app = FastAPI(title="spanet person search", version=__version__)
    app.add_middleware(Guard, max_bytes=limits.max_request_bytes, token=token)
    if allowed_hosts is not None:
        app.add_middleware(TrustedHostMiddleware, allowed_hosts=list(allowed_hosts))
    service = _Service(gallery=gallery, extractor=extractor, threshold=threshold, limits=limits)
    _add_error_handlers(app)
    _add_gallery_routes(app, service)
    _add_search_routes(app, service)
    _add_retention_routes(app, service)
    return app


class _Service:
    """What the routes share: the gallery, the model (one user at a time) and the search batcher."""

    def __init__(self, *, gallery: GalleryBackend, extractor: FeatureExtractor, threshold: float | None,
                 limits: Limits) -> None:  # fmt: skip
        self.gallery = gallery
        self.extractor = extractor
        self.threshold = threshold
        self.limits = limits
        self.model_lock = threading.Lock()
        self.searcher = _Batcher(self._search_batch, max_batch=16)

    def embed(self, images: list[Image.Image]) -> np.ndarray:
        with self.model_lock:
            return self.extractor(images)

    def _search_batch(self, jobs: list[tuple[Image.Image, SearchRequest]]) -> list[Any]:
        """Jobs are (query image, `SearchRequest`): one forward pass and one gallery call (`search_gallery`)."""
        features = self.embed([image for image, _ in jobs])
        return search_gallery(self.gallery, features, [request for _, request in jobs])

    def entry(self, entry_id: int) -> Entry:
        from fastapi import HTTPException

        found = self.gallery.get([entry_id]).get(entry_id)
        if found is None:
            raise HTTPException(404, f"no gallery entry with id {entry_id}")
        return found

    def read_uploads(self, files: list[Any]) -> list[tuple[Image.Image, bytes, str, str]]:
        """(image, bytes, suffix, name) of each upload; any bad one raises before anything is used."""
        if len(files) > self.limits.max_files:
            raise UploadError(413, f"{len(files)} files in one request; at most {self.limits.max_files}")
        decoded, pixels = [], 0
        for upload in files:
            name = Path(upload.filename or "upload").name[:255]  # metadata only: never used as a path
            kind = (upload.content_type or "application/octet-stream").split(";")[0].strip().lower()
            if not (kind.startswith("image/") or kind == "application/octet-stream"):
                raise UploadError(415, f"{name}: content type {kind} is not an image type")
            data = upload.file.read()
            left = self.limits.max_request_pixels - pixels
            image, suffix = decode_upload(data, name=name, max_pixels=min(self.limits.max_pixels, left),
                                          limit="the limit" if left >= self.limits.max_pixels else
                                          f"what is left of the {self.limits.max_request_pixels} pixels per request")  # fmt: skip
            pixels += image.width * image.height
            decoded.append((image, data, suffix, name))
        return decoded


def _add_error_handlers(app: Any) -> None:
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException as StarletteHTTPException

    @app.exception_handler(StarletteHTTPException)
    def _http_error(_request: Any, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code)

    @app.exception_handler(RequestValidationError)
    def _validation_error(_request: Any, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'][1:])}: {e['msg']}" for e in exc.errors())
        return JSONResponse({"error": problems or "invalid request"}, status_code=422)

    @app.exception_handler(UploadError)
    def _upload_error(_request: Any, exc: UploadError) -> JSONResponse:
        return JSONResponse({"error": str(exc)}, status_code=exc.status)

    @app.exception_handler(SpanetError)
    def _spanet_error(_request: Any, exc: SpanetError) -> JSONResponse:
        return JSONResponse({"error": str(exc)}, status_code=400)


def _add_gallery_routes(app: Any, service: _Service) -> None:
    from fastapi import File, Form, HTTPException, Query, UploadFile
    from fastapi import Path as PathParam
    from fastapi.responses import FileResponse

    gallery = service.gallery

    @app.post("/gallery")
    def enrol(
        files: list[UploadFile] = File(..., description="one or more images"),
        camera: int | None = Form(None, ge=0, le=10_000),
        timestamp: str | None = Form(None, max_length=64),
        label: str | None = Form(None, max_length=200),
    ) -> dict[str, Any]:
        stamp = _check_timestamp(timestamp)
        decoded = service.read_uploads(files)  # every file is checked before anything is written: all or none
        entries = [NewEntry(data=data, suffix=suffix, camera=camera, timestamp=stamp, label=label or None, source=name)
                   for _image, data, suffix, name in decoded]  # fmt: skip
        ids = existing_ids(gallery, entries)  # a retried request enrols nothing twice
        new = [i for i, known in enumerate(ids) if known is None]
        if new:
            features = service.embed([decoded[i][0] for i in new])
            for i, entry_id in zip(new, gallery.add([entries[i] for i in new], features)):
                ids[i] = entry_id
        already = [entry_id for i, entry_id in enumerate(ids) if i not in new]
        return {"ids": ids, "already_enrolled": already, "gallery_size": len(gallery)}

    @app.delete("/gallery/{entry_id}")
    def delete(entry_id: int = PathParam(ge=1, le=_MAX_ID)) -> dict[str, Any]:
        entry = gallery.remove(entry_id)
        if entry is None:
            raise HTTPException(404, f"no gallery entry with id {entry_id}")
        return {"deleted": entry.to_json(), "gallery_size": len(gallery)}

    @app.get("/gallery")
    def listing(
        camera: int | None = Query(None, ge=0, le=_MAX_ID), label: str | None = Query(None, max_length=200),
        limit: int = Query(50, ge=1, le=1000), offset: int = Query(0, ge=0, le=_MAX_ID),
        track: int | None = Query(None, ge=0, le=_MAX_ID), cameras: str | None = Query(None, max_length=2000),
        after: str | None = Query(None, max_length=64), before: str | None = Query(None, max_length=64),
    ) -> dict[str, Any]:  # fmt: skip
        where = where_from_text(cameras=cameras, track=track, after=after, before=before)
        entries, total = gallery.query(camera=camera, label=label, limit=limit, offset=offset, where=where)
        return {"total": total, "limit": limit, "offset": offset, "entries": [e.to_json() for e in entries]}

    @app.get("/image/{entry_id}")
    def image(entry_id: int = PathParam(ge=1, le=_MAX_ID)) -> FileResponse:
        path = gallery.image_path(service.entry(entry_id))
        return FileResponse(path, headers={"Cache-Control": "private, max-age=3600"})


def _add_search_routes(app: Any, service: _Service) -> None:
    from fastapi import File, Form, UploadFile
    from fastapi import Path as PathParam
    from fastapi.responses import HTMLResponse

    from spanet import __version__

    @app.get("/", response_class=HTMLResponse)
    def page() -> HTMLResponse:
        return HTMLResponse(_page_html())

    @app.get("/health")
    def health() -> dict[str, Any]:
        info = service.extractor.info
        return {
            "status": "ok", "version": __version__, "gallery_size": len(service.gallery), "threshold": service.threshold,
            "model": {k: info.get(k) for k in ("weights_fingerprint", "args_fingerprint", "kind", "feature_dim", "input_size")},
            "cameras": service.gallery.cameras(),
        }  # fmt: skip

    @app.post("/search")
    def search(
        file: UploadFile = File(..., description="the query image"),
        top_k: int = Form(10, ge=1, le=service.limits.max_top_k),
        camera: int | None = Form(None, ge=0, le=_MAX_ID),
        exclude_camera: int | None = Form(None, ge=0, le=_MAX_ID),
        threshold: float | None = Form(None, ge=0),
        cameras: str | None = Form(None, max_length=2000), after: str | None = Form(None, max_length=64),
        before: str | None = Form(None, max_length=64), group: bool = Form(False),
    ) -> dict[str, Any]:
        where = where_from_text(cameras=cameras, after=after, before=before)  # bad text: 400 before any decoding
        (image, *_), = service.read_uploads([file])
        request = SearchRequest(top_k=top_k, where=where, group=group, camera=camera, exclude_camera=exclude_camera)
        hits = service.searcher.submit((image, request))
        limit = service.threshold if threshold is None else threshold
        matches = [{**_entry_json(h.entry), "distance": h.distance, "unknown": is_unknown(h.distance, limit)}
                   for h in hits]  # fmt: skip
        return {"matches": matches, "threshold": limit,
                "unknown": nearest_is_unknown([h.distance for h in hits], limit)}  # fmt: skip

    @app.post("/explain/{entry_id}")
    def explain(
        entry_id: int = PathParam(ge=1, le=_MAX_ID), file: UploadFile = File(..., description="the query image")
    ) -> dict[str, Any]:
        from spanet.data.images import read_image

        entry = service.entry(entry_id)
        (query, *_), = service.read_uploads([file])
        match = read_image(service.gallery.image_path(entry))
        with service.model_lock:
            pictures, target = _activation_pictures(service.extractor, [query, match])
            features = service.extractor([query, match])
        return {
            "entry": _entry_json(entry), "target_class": target,
            "distance": float(((features[0] - features[1]) ** 2).sum()),
            "query": pictures[0], "match": pictures[1],
        }  # fmt: skip


def _add_retention_routes(app: Any, service: _Service) -> None:
    """POST /gallery/forget and /gallery/prune (behind the token like every data route): `deploy.retention`."""
    from fastapi import Form

    from spanet.deploy.filters import parse_age
    from spanet.deploy.retention import forget, prune_before

    def answer(report: Any) -> dict[str, Any]:
        return {"deleted": report.entries, "image_files": report.images, "where": report.where.to_json(),
                "gallery_size": len(service.gallery)}  # fmt: skip

    @app.post("/gallery/forget")
    def forget_route(
        ids: str | None = Form(None, max_length=20000), label: str | None = Form(None, max_length=200),
        track: int | None = Form(None, ge=0, le=_MAX_ID), cameras: str | None = Form(None, max_length=2000),
        after: str | None = Form(None, max_length=64), before: str | None = Form(None, max_length=64),
    ) -> dict[str, Any]:  # fmt: skip
        where = where_from_text(ids=ids, cameras=cameras, label=label, track=track, after=after, before=before)
        return answer(forget(service.gallery, where, origin="api"))

    @app.post("/gallery/prune")
    def prune_route(older_than: str = Form(..., max_length=32)) -> dict[str, Any]:
        return answer(prune_before(service.gallery, older_than=parse_age(older_than, option="older_than"), origin="api"))


def _entry_json(entry: Entry) -> dict[str, Any]:
    return {**entry.to_json(), "image_url": f"/image/{entry.id}"}


def _check_timestamp(text: str | None) -> str | None:
    if not text:
        return None
    try:
        return dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00")).isoformat()
    except ValueError:
        raise UploadError(422, f"timestamp {text!r} is not ISO 8601 (e.g. 2024-05-01T13:45:00)") from None


def _activation_pictures(extractor: FeatureExtractor, images: list[Image.Image]) -> tuple[list[dict[str, str]], int]:
    """Each image and its activation map overlaid (PNG data URLs), both explaining the class the first one predicts."""
    from matplotlib import colormaps

    from spanet.data.transforms import eval_transform
    from spanet.viz.cam import image_cams, normalise, upsample

    transform = eval_transform(extractor.input_size)
    height, width = extractor.input_size
    scale = max(1, 256 // height)
    out, target = [], None
    for image in images:
        cams = image_cams(extractor.model, transform(image), target=target)
        target = cams.target
        head = cams.heads.get("parts") or cams.heads["global"]
        heat = normalise(upsample(head.cam, size=(height * scale, width * scale)))
        plain = np.asarray(image.resize((width * scale, height * scale), Image.BILINEAR), dtype=np.float32)
        colour = colormaps["jet"](heat)[..., :3] * 255
        blended = (0.55 * plain + 0.45 * colour).clip(0, 255).astype(np.uint8)
        out.append({"image": _data_url(Image.fromarray(plain.astype(np.uint8))), "cam": _data_url(Image.fromarray(blended))})
    return out, int(target or 0)


def _data_url(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _page_html() -> str:
    from importlib.resources import files

    return files("spanet.deploy").joinpath("static/index.html").read_text(encoding="utf-8")



class _Batcher:
    """Runs `run(jobs)` on a worker thread over all jobs waiting at that moment: queries that arrive while the model
    is busy share the next forward pass and faiss call (a batch of 4 costs about as much as 1.5 single ones)."""

    def __init__(self, run: Any, *, max_batch: int) -> None:
        self.run = run
        self.max_batch = max_batch
        self.jobs: queue.Queue = queue.Queue()
        threading.Thread(target=self._loop, name="spanet-search-batcher", daemon=True).start()

    def submit(self, job: Any) -> Any:
        future: Future = Future()
        self.jobs.put((job, future))
        return future.result()

    def _loop(self) -> None:
        while True:
            batch = [self.jobs.get()]
            while len(batch) < self.max_batch:
                try:
                    batch.append(self.jobs.get_nowait())
                except queue.Empty:
                    break
            try:
                results = self.run([job for job, _ in batch])
            except BaseException as exc:  # handed to the waiting requests, which report it
                for _, future in batch:
                    future.set_exception(exc)
                continue
            for (_, future), result in zip(batch, results):
                future.set_result(result)

"""What the person-search service accepts before any route runs: request size and token (an ASGI middleware), and
uploads decoded under a pixel limit (decompression bombs), each refusal one JSON error with its HTTP status."""

from __future__ import annotations

import hmac
import io
import json
from dataclasses import dataclass
from typing import Any

from PIL import Image

__all__ = ["Limits", "UploadError", "decode_upload", "Guard", "OPEN_PATHS"]

_FORMAT_SUFFIX = {"JPEG": ".jpg", "PNG": ".png", "BMP": ".bmp", "WEBP": ".webp", "TIFF": ".tif", "GIF": ".gif", "PPM": ".ppm"}
OPEN_PATHS = ("/", "/favicon.ico")  # the page holds no data: open without the token


@dataclass(frozen=True)
class Limits:
    """Bounds on what one request may ask for."""

    max_request_bytes: int = 32 * 1024 * 1024  # whole body, all files together
    max_pixels: int = 16_000_000  # per decoded image (Pillow's own bomb limit is ~89 M)
    max_request_pixels: int = 64_000_000  # all images of one request together (~190 MB decoded)
    max_top_k: int = 100
    max_files: int = 256  # images per enrolment request


class UploadError(Exception):
    """An upload the service refuses, with the HTTP status that says why."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def decode_upload(data: bytes, *, name: str, max_pixels: int, limit: str = "the limit") -> tuple[Image.Image, str]:
    """Decode uploaded bytes to RGB, refusing non-images (415), truncated files (400) and bombs (413): more than
    `max_pixels` pixels (`limit` says which limit that is)."""
    if not data:
        raise UploadError(400, f"{name}: empty file")
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            if width * height > max_pixels:
                raise UploadError(413, f"{name}: {width}x{height} pixels is more than {limit} of {max_pixels}")
            suffix = _FORMAT_SUFFIX.get(image.format or "", ".img")
            return image.convert("RGB"), suffix  # convert() decodes every byte, so truncation shows up here
    except UploadError:
        raise
    except Image.DecompressionBombError as exc:
        raise UploadError(413, f"{name}: {exc}") from None
    except Image.UnidentifiedImageError:
        raise UploadError(415, f"{name}: not an image file Pillow can read") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise UploadError(400, f"{name}: cannot decode the image ({exc}); the file is truncated or corrupt") from None


class Guard:
    """ASGI middleware: refuse bodies over `max_bytes` (413) and, with a token, requests without it (401)."""

    def __init__(self, app: Any, *, max_bytes: int, token: str | None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.token = token

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        if self.token and scope["path"] not in OPEN_PATHS and not self._authorised(scope, headers):
            return await _send_json(send, 401, "missing or wrong token: send 'Authorization: Bearer TOKEN'")
        length = headers.get("content-length", "")
        if length.isdigit() and int(length) > self.max_bytes:
            return await _send_json(send, 413, f"request body of {int(length)} bytes is over the limit of {self.max_bytes}")
        seen, over = 0, False

        async def limited_receive() -> dict:
            nonlocal seen, over
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                over = True
                raise _TooLarge()
            return message

        async def checked_send(message: dict) -> None:
            # whatever the framework made of the aborted body (a 400 or 500), the client gets one 413
            if not over:
                await send(message)
            elif message["type"] == "http.response.start":
                await _send_json(send, 413, f"request body is over the limit of {self.max_bytes} bytes")

        try:
            await self.app(scope, limited_receive, checked_send)
        except _TooLarge:
            await checked_send({"type": "http.response.start"})

    def _authorised(self, scope: dict, headers: dict[str, str]) -> bool:
        from urllib.parse import parse_qs

        given = headers.get("authorization", "").removeprefix("Bearer ").strip() or headers.get("x-spanet-token", "")
        if not given:  # <img src> cannot send headers: the page adds ?token= to image URLs
            given = (parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token") or [""])[0]
        return hmac.compare_digest(given.encode(), self.token.encode())


class _TooLarge(Exception):
    pass


async def _send_json(send: Any, status: int, message: str) -> None:
    body = json.dumps({"error": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})

"""The web page in a real browser (system Chromium driven by Playwright): upload a query, see K results, open a match."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

pytest.importorskip("uvicorn", reason="the service needs the 'serve' extra: pip install 'spanet[serve]'")
pytest.importorskip("playwright", reason="the browser test needs playwright (the 'test' extra)")

from builders import make_checkpoint, start_server  # noqa: E402

CHROMIUM = os.environ.get("SPANET_CHROMIUM", "/usr/bin/chromium")


def drive_page(url: str, query: Path, *, top_k: int, screenshot: Path | None = None) -> dict:
    """Open the page, search with `query`, open the first match; what the page showed (and optionally a screenshot)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.goto(url)
            page.wait_for_function("document.getElementById('size').textContent !== '–'")
            page.fill("#topk", str(top_k))
            page.set_input_files("#file", str(query))
            page.wait_for_function(f"document.querySelectorAll('#grid .card').length === {top_k}")
            page.wait_for_function("[...document.querySelectorAll('#grid .card img')].every(i => i.complete && i.naturalWidth > 0)")
            shown = {
                "cards": page.locator("#grid .card").count(),
                "first_distance": float(page.locator("#grid .card .dist").first.inner_text()),
                "status": page.inner_text("#status"),
            }
            page.locator("#grid .card").nth(1).click()
            page.wait_for_function("document.getElementById('mCam').naturalWidth > 0 && document.getElementById('qCam').naturalWidth > 0")
            shown["dialog"] = page.inner_text("#dlgTitle")
            if screenshot is not None:
                screenshot.parent.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(screenshot))
        finally:
            browser.close()
    return shown


@pytest.mark.skipif(shutil.which(CHROMIUM) is None, reason=f"no Chromium at {CHROMIUM} (Debian package 'chromium')")
def test_search_and_explain_in_browser(tmp_path: Path, tiny_market: Path) -> None:
    from spanet.cli import main

    checkpoint = make_checkpoint(tmp_path / "model.pt")
    gallery = tmp_path / "gallery"
    assert main(["gallery", "build", str(gallery), str(tiny_market / "bounding_box_test"), "--checkpoint",
                 str(checkpoint), "--quiet", "--device", "cpu"]) == 0  # fmt: skip
    query = sorted((tiny_market / "query").glob("*.jpg"))[0]
    process, url = start_server(gallery, checkpoint, extra=("--threshold", "0.5"))
    try:
        shown = drive_page(url, query, top_k=6, screenshot=tmp_path / "serve.png")
    finally:
        process.terminate()
        process.wait(timeout=20)
    assert shown["cards"] == 6 and shown["first_distance"] >= 0
    assert "6 nearest" in shown["status"] and "gallery #" in shown["dialog"]
    assert (tmp_path / "serve.png").stat().st_size > 10_000


if __name__ == "__main__":  # docs screenshot: python tests/deploy/test_serve_browser.py URL QUERY OUT.png
    print(drive_page(sys.argv[1], Path(sys.argv[2]), top_k=12, screenshot=Path(sys.argv[3])))

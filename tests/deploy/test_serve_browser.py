"""The web page in a real browser (system Chromium driven by Playwright): upload a query, see K results, open a match;
on ingested footage: a time window, one result per track, and a hit's whole track."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

pytest.importorskip("uvicorn", reason="the service needs the 'serve' extra: pip install 'spanet[serve]'")
pytest.importorskip("playwright", reason="the browser test needs playwright (the 'test' extra)")

from builders import ingest_synthetic_footage, make_checkpoint, start_server  # noqa: E402

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


def _cards(page: object) -> list[dict]:
    """What each result card shows: id, camera, the <time>'s instant and text, the track link's text."""
    return page.eval_on_selector_all("#grid .card", """cards => cards.map(card => ({
        id: Number(card.dataset.id),
        camera: (card.querySelector(".meta .sub").textContent.match(/^cam (\\d+)/) || [])[1],
        time: card.querySelector("time")?.getAttribute("datetime"),
        shown: card.querySelector("time")?.textContent || "",
        track: (card.querySelector("a")?.textContent.match(/^track (\\d+): show all$/) || [])[1],
    }))""")  # fmt: skip


@pytest.mark.skipif(shutil.which(CHROMIUM) is None, reason=f"no Chromium at {CHROMIUM} (Debian package 'chromium')")
def test_time_window_one_result_per_track_and_a_whole_track_in_browser(tmp_path: Path) -> None:
    """On an ingested gallery: "seen after / before" and "one result per track" set in the page, every hit shown is of
    the chosen cameras' window with one hit per track; a hit's "track N: show all" shows that whole track; a time
    typed into the enrolment form is the browser's local time."""
    import json
    import urllib.request
    from datetime import datetime

    from playwright.sync_api import sync_playwright

    from spanet.deploy.gallery import Gallery
    from spanet.features import FeatureExtractor

    made = ingest_synthetic_footage(tmp_path)
    gallery = Gallery.open(made["gallery"], model_info=FeatureExtractor(made["checkpoint"], device="cpu").info)
    entries, _ = gallery.query(camera=None, label=None, limit=1000, offset=0)
    query = gallery.image_path(next(e for e in entries if e.camera == 1))
    gallery.close()
    after, before = "2024-05-01T08:00:02", "2024-05-01T08:00:06"  # the browser runs in UTC: these are UTC
    low, high = (datetime.fromisoformat(t + "+00:00").timestamp() for t in (after, before))
    times = [datetime.fromisoformat(e.timestamp).timestamp() for e in entries]
    assert min(times) < low and max(times) >= high  # the window leaves crops out
    process, url = start_server(made["gallery"], made["checkpoint"])
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            try:
                page = browser.new_context(timezone_id="UTC", locale="en-GB", viewport={"width": 1280, "height": 900}).new_page()
                page.goto(url)
                page.wait_for_function("document.getElementById('size').textContent !== '–'")
                page.fill("#topk", "6")
                page.fill("#after", after)
                page.fill("#before", before)
                page.check("#group")
                page.set_input_files("#file", str(query))
                page.wait_for_function("/nearest of the gallery/.test(document.getElementById('status').textContent)")
                hits = _cards(page)
                link = page.locator("#grid .card a", has_text="show all").first
                track = int(link.inner_text().split()[1].rstrip(":"))
                link.click()
                page.wait_for_function(f"document.getElementById('status').textContent.startsWith('Track {track}:')")
                page.wait_for_function("[...document.querySelectorAll('#grid .card img')].every(i => i.complete && i.naturalWidth > 0)")
                whole = _cards(page)
                status = page.inner_text("#status")
                berlin = browser.new_context(timezone_id="Europe/Berlin").new_page()  # UTC+2 in May
                berlin.goto(url)
                berlin.set_input_files("#enrolFiles", str(query))
                berlin.fill("#enrolCam", "9")
                berlin.fill("#enrolTime", "2024-05-01T10:00:00")  # the enrolling person's local time
                berlin.click("#enrolBtn")
                berlin.wait_for_function("/^Enrolled 1 image/.test(document.getElementById('enrolMsg').textContent)")
            finally:
                browser.close()
        with urllib.request.urlopen(f"{url}/gallery?track={track}&limit=1000") as response:
            listed = json.loads(response.read())
        with urllib.request.urlopen(f"{url}/gallery?camera=9") as response:
            enrolled = json.loads(response.read())["entries"]
    finally:
        process.terminate()
        process.wait(timeout=20)
    assert 0 < len(hits) <= 6
    for hit in hits:
        assert hit["time"] and low <= datetime.fromisoformat(hit["time"]).timestamp() < high, hit
        assert hit["shown"] and hit["shown"] != hit["time"]  # shown as a local time, kept as the instant
        assert hit["camera"] is not None and hit["track"] is not None
    assert len({hit["track"] for hit in hits}) == len(hits)  # one result per track
    assert {e["track"] for e in listed["entries"]} == {track} and listed["total"] == len(listed["entries"]) > 1
    assert sorted(card["id"] for card in whole) == sorted(e["id"] for e in listed["entries"])  # the whole track
    assert len({card["camera"] for card in whole}) == 1 and f"{listed['total']} crop(s), in time order" in status
    shown_times = [datetime.fromisoformat(card["time"]).timestamp() for card in whole]
    assert shown_times == sorted(shown_times)
    # the enrolment form's time is the browser's local time: 10:00 in Berlin is 08:00 UTC (it was sent without its
    # zone and stored as 10:00 UTC)
    assert len(enrolled) == 1 and datetime.fromisoformat(enrolled[0]["timestamp"]).timestamp() == datetime.fromisoformat(
        "2024-05-01T08:00:00+00:00").timestamp()


if __name__ == "__main__":  # docs screenshot: python tests/deploy/test_serve_browser.py URL QUERY OUT.png
    print(drive_page(sys.argv[1], Path(sys.argv[2]), top_k=12, screenshot=Path(sys.argv[3])))

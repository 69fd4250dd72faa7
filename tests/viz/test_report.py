"""report.html: built from a hand-written fake run folder, escaped, and every image loads in headless Chromium."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from spanet.errors import SpanetError
from spanet.run_dir import read_log
from spanet.viz.report import build_report

WEIRD_NAME = 'q <b>"bold" & co #1?.png'  # must be escaped in the page and still load as an image


def _fake_run(run: Path) -> int:
    """Write a run folder by hand; return the number of the deliberately truncated log line."""
    (run / "eval" / "ranked").mkdir(parents=True)
    (run / "cam").mkdir()
    (run / "config.yaml").write_text("data:\n  name: market1501\n  root: /data/<script>alert(1)</script>\n")
    cmc = np.linspace(0.6, 1.0, 50).tolist()
    (run / "eval" / "metrics.json").write_text(json.dumps({
        "plain": {"rank1": 0.6, "rank5": 0.8, "rank10": 0.9, "mAP": 0.45, "mINP": 0.2},
        "reranked": {"rank1": 0.65, "rank5": 0.82, "rank10": 0.91, "mAP": 0.55, "mINP": 0.3},
        "cmc": {"plain": cmc, "reranked": cmc}, "checkpoint": "runs/x/best.pt", "dataset": "market1501",
    }))
    lines = []
    for epoch in range(3):
        for step in range(epoch * 4, epoch * 4 + 4):
            lines.append({"type": "step", "epoch": epoch, "step": step, "loss": 9.0 - step * 0.3, "lr": 0.1,
                          "terms": {"ds1": 1.0 - step * 0.02, "part0": 0.9 - step * 0.02}})
        lines.append({"type": "epoch", "epoch": epoch, "loss": 8.0 - epoch})
        lines.append({"type": "eval", "epoch": epoch, "rank1": 0.3 + 0.1 * epoch, "mAP": 0.2 + 0.1 * epoch})
    (run / "log.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n{truncated\n")
    rng = np.random.default_rng(0)
    for name in ("ranked_q00003.png", WEIRD_NAME):
        Image.fromarray(rng.integers(0, 255, (40, 120, 3), dtype=np.uint8)).save(run / "eval" / "ranked" / name)
    Image.fromarray(rng.integers(0, 255, (90, 60, 3), dtype=np.uint8)).save(run / "cam" / "img_0001.png")
    (run / "cam" / "spread.json").write_text(json.dumps({
        "variants": {"with_sa": "with SA", "without_sa": "same weights, SA off"},
        "summary": [{"stage": "stage2", "variant": "with_sa", "count": 1, "area_above_half": 0.31,
                     "entropy": 0.87, "rows_above_half": 0.5}],
    }))
    return len(lines) + 1


def test_report_content_and_escaping(tmp_path: Path) -> None:
    bad_line = _fake_run(tmp_path)
    page = build_report(tmp_path)
    text = page.read_text()
    assert page == tmp_path.resolve() / "report.html"
    assert "<script>alert(1)</script>" not in text  # config text is escaped
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert '<b>"bold"' not in text  # the weird file name appears only escaped
    assert "q &lt;b&gt;" in text
    assert "60.00" in text and "55.00" in text  # plain rank-1 and re-ranked mAP, as percentages
    assert f"line {bad_line} is not JSON" in text  # the truncated last log line is reported, not fatal
    assert "0.310" in text  # CAM spread summary
    for name in ("cmc.png", "losses.png", "lr.png", "eval.png"):
        assert (tmp_path / "report_files" / name).is_file()
    # every src points at a file that exists, relative to the page
    sources = re.findall(r'<img src="([^"]+)"', text)
    assert len(sources) == 7
    from html import unescape
    from urllib.parse import unquote

    for src in sources:
        assert (page.parent / unquote(unescape(src))).is_file(), src


def test_report_of_an_empty_folder_fails_and_a_partial_run_lists_what_is_missing(tmp_path: Path) -> None:
    with pytest.raises(SpanetError, match="holds nothing spanet wrote"):
        build_report(tmp_path)
    assert not (tmp_path / "report.html").exists()
    (tmp_path / "config.yaml").write_text("model: {}\n")
    text = build_report(tmp_path).read_text()
    for what in ("eval/metrics.json", "log.jsonl", "ranked lists", "class activation maps"):
        assert what in text
    assert "<img" not in text


def test_report_says_which_checkpoint_the_metrics_came_from(tmp_path: Path) -> None:
    _fake_run(tmp_path)
    assert "checkpoint: runs/x/best.pt" in build_report(tmp_path).read_text()


def test_report_rejects_missing_folder(tmp_path: Path) -> None:
    from spanet.errors import SpanetError

    with pytest.raises(SpanetError, match="does not exist"):
        build_report(tmp_path / "nope")


def test_read_log_skips_bad_lines(tmp_path: Path) -> None:
    path = tmp_path / "log.jsonl"
    path.write_text('{"type": "step", "step": 1}\n[1, 2]\nnope\n\n')
    records, problems = read_log(path)
    assert records == [{"type": "step", "step": 1}]
    assert len(problems) == 2


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _dump_dom(browser: str, page: Path, profile: Path) -> str:
    result = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
         "--virtual-time-budget=10000", "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def _image_check(dom: str) -> dict[str, str]:
    match = re.search(r'<div id="image-check"([^>]*)>', dom)
    assert match, "the image-check marker is missing from the DOM"
    return dict(re.findall(r'data-([a-z]+)="([^"]*)"', match.group(1)))


@pytest.mark.skipif(_chromium() is None, reason="headless Chromium not installed (Debian: apt-get install chromium)")
def test_every_image_loads_in_chromium(tmp_path: Path) -> None:
    run = tmp_path / "run"
    _fake_run(run)
    check = _image_check(_dump_dom(_chromium(), build_report(run), tmp_path / "profile"))
    assert check["status"] == "done"
    assert check["total"] == "7"
    assert check["broken"] == "0"


@pytest.mark.skipif(_chromium() is None, reason="headless Chromium not installed (Debian: apt-get install chromium)")
def test_chromium_check_detects_a_broken_image(tmp_path: Path) -> None:
    """The in-page check can fail: delete a figure after writing the page and it is counted as broken."""
    run = tmp_path / "run"
    _fake_run(run)
    page = build_report(run)
    (run / "report_files" / "cmc.png").unlink()
    check = _image_check(_dump_dom(_chromium(), page, tmp_path / "profile"))
    assert check["status"] == "done"
    assert check["broken"] == "1"

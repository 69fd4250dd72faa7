"""The synthetic domain knob: domain a is spanet's usual data unchanged, domain b another, equally repeatable site."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from spanet.cli import main
from spanet.data.datasets import SYNTH_MANIFEST
from spanet.errors import SpanetError
from spanet.synth.domain import DOMAINS, get_domain
from spanet.synth.generate import generate_dataset
from spanet.synth.scene import build_cameras, build_identities
from spanet.synth.video import MARKER_FILE, VideoOptions, generate_video

SMALL = dict(train_ids=4, test_ids=3, cameras=3, images_per_id=5, height=64, width=32, distractors=3, junk=2)
VIDEO = VideoOptions(cameras=2, people=4, seconds=2, fps=5, width=128, height=72, seed=1)
# sha256 of the people and cameras that the code before the domain knob drew (build_identities(60, seed=0) and
# build_cameras(8, seed=1)): domain a must keep drawing exactly these, so that its pictures stay byte for byte.
SCENE_BEFORE_DOMAINS = "e9f41807af3097a96dc3b6bc98bd832fedbd893818b82f0ac17eafaacb8020d8"


def _hashes(root: Path) -> dict[str, str]:
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*.jpg"))
    }


def test_domain_a_draws_what_spanet_drew_before() -> None:
    scene = repr(build_identities(60, seed=0)) + repr(build_cameras(8, seed=1))
    assert hashlib.sha256(scene.encode()).hexdigest() == SCENE_BEFORE_DOMAINS
    site = get_domain("a")
    assert repr(build_identities(60, seed=0, domain=site)) + repr(build_cameras(8, seed=1, domain=site)) == scene


def test_domain_b_people_and_cameras_come_from_other_distributions() -> None:
    a, b = DOMAINS["a"], DOMAINS["b"]
    people_b = build_identities(300, seed=0, domain=b)
    assert len(set(b.upper_colours) - set(a.upper_colours)) >= len(b.upper_colours) // 2  # hues a never uses
    assert not set(a.colour_casts) & set(b.colour_casts) and not set(a.width_scales) & set(b.width_scales)
    assert {p.upper for p in people_b} - set(a.upper_colours) and {p.upper for p in people_b} <= set(b.upper_colours)
    assert {p.width_scale for p in people_b} <= set(b.width_scales)
    assert {p.upper_pattern for p in people_b} - set(a.upper_patterns)  # styles domain a never draws
    assert (a.wall, a.floor_grey) != (b.wall, b.floor_grey)  # and other walls and floors


def test_domain_b_cameras_are_as_clean_as_domain_a() -> None:
    # b's cameras differ in colour casts and backgrounds only: with b's earlier dimmer, softer, noisier cameras a
    # model trained on b with labels learned more slowly than on a, and was no upper bound (docs/adapt.md).
    a, b = DOMAINS["a"], DOMAINS["b"]
    optics = ("brightness", "blur", "pixelate", "noise", "occlusion", "light_across", "light_down")
    assert all(getattr(a, name) == getattr(b, name) for name in optics)
    cameras_b = build_cameras(200, seed=3, domain=b)
    assert all(a.brightness[0] <= c.brightness <= a.brightness[1] and a.noise[0] <= c.noise <= a.noise[1] for c in cameras_b)
    assert {c.blur for c in cameras_b} == set(a.blur)


def test_domain_b_is_repeatable_differs_from_a_and_is_recorded(tmp_path: Path) -> None:
    plain = _hashes(generate_dataset(tmp_path / "plain", **SMALL, seed=2, progress=False).out_dir)
    same_a = _hashes(generate_dataset(tmp_path / "a", **SMALL, seed=2, domain="a", progress=False).out_dir)
    first_b = _hashes(generate_dataset(tmp_path / "b1", **SMALL, seed=2, domain="b", progress=False).out_dir)
    again_b = _hashes(generate_dataset(tmp_path / "b2", **SMALL, seed=2, domain="b", progress=False).out_dir)
    assert plain == same_a and first_b == again_b
    assert plain.keys() == first_b.keys()  # the same plan (names, splits), other pictures
    assert all(plain[name] != first_b[name] for name in plain)
    assert json.loads((tmp_path / "b1" / SYNTH_MANIFEST).read_text())["options"]["domain"] == "b"
    assert json.loads((tmp_path / "a" / SYNTH_MANIFEST).read_text())["options"]["domain"] == "a"


def test_unknown_domain_is_one_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SpanetError, match="unknown synthetic domain 'c'.*a, b"):
        generate_dataset(tmp_path / "out", **SMALL, domain="c", progress=False)
    with pytest.raises(SystemExit):
        main(["synth", str(tmp_path / "cli"), "--preset", "tiny", "--domain", "c"])
    assert "invalid choice" in capsys.readouterr().err


def test_cli_domain_flags_for_synth_and_synth_video(tmp_path: Path) -> None:
    assert main(["synth", str(tmp_path / "s"), "--preset", "tiny", "--domain", "b", "--no-progress"]) == 0
    assert json.loads((tmp_path / "s" / SYNTH_MANIFEST).read_text())["options"]["domain"] == "b"
    assert main(["synth-video", str(tmp_path / "v"), "--cameras", "2", "--people", "3", "--seconds", "1",
                 "--size", "96x64", "--domain", "b"]) == 0  # fmt: skip
    assert json.loads((tmp_path / "v" / MARKER_FILE).read_text())["options"]["domain"] == "b"


def test_video_domain_b_is_repeatable_and_differs_from_a(tmp_path: Path) -> None:
    generate_video(tmp_path / "a", VIDEO)
    generate_video(tmp_path / "b1", VideoOptions(**{**VIDEO.__dict__, "domain": "b"}))
    generate_video(tmp_path / "b2", VideoOptions(**{**VIDEO.__dict__, "domain": "b"}))
    a, b1, b2 = _hashes(tmp_path / "a"), _hashes(tmp_path / "b1"), _hashes(tmp_path / "b2")
    assert b1 == b2 and a.keys() == b1.keys() and all(a[name] != b1[name] for name in a)
    assert json.loads((tmp_path / "a" / MARKER_FILE).read_text())["options"]["domain"] == "a"

"""scripts/adapt_benchmark.py: the summary (means, the gap, the share of it adaptation closes) and the docs section
it writes, from made-up per-seed results (the benchmark itself trains for minutes and is run by hand)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import SimpleNamespace

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "adapt_benchmark.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("adapt_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(rank1: float, mAP: float, cpu: float = 2.0) -> dict:
    return {"rank1": rank1, "mAP": mAP, "cpu_minutes": cpu, "wall_minutes": cpu / 2}


PER_SEED = {
    0: {"source": _run(0.9, 0.8), "direct": _run(0.4, 0.2), "supervised": _run(0.8, 0.6), "adapted": _run(0.6, 0.4, 3)},
    1: {"source": _run(0.9, 0.7), "direct": _run(0.5, 0.3), "supervised": _run(0.9, 0.7), "adapted": _run(0.7, 0.6, 5)},
}


def test_summary_gap_and_share_closed(bench) -> None:
    summary = bench.summarise(PER_SEED)
    assert summary["direct"]["mAP"]["mean"] == pytest.approx(0.25)
    assert summary["adapted"]["cpu_minutes"]["mean"] == pytest.approx(4.0)
    assert summary["gap_mAP"]["mean"] == pytest.approx(0.4) and summary["gap_mAP"]["per_seed"] == pytest.approx([0.4, 0.4])
    assert summary["gap_closed"]["adapted"]["of_means"] == pytest.approx((0.5 - 0.25) / 0.4)
    assert summary["gap_closed"]["adapted"]["per_seed"] == pytest.approx([0.5, 0.75])
    with_footage = {s: {**r, "footage_tracks": _run(0.6, r["direct"]["mAP"] + 0.1),
                        "search": {"before": {"rank1": 0.5, "hits": 5, "queries": 10},
                                   "after": {"rank1": 0.8 - 0.1 * s, "hits": 8 - s, "queries": 10},
                                   "tracks": 30, "crops": 240}} for s, r in PER_SEED.items()}  # fmt: skip
    summary = bench.summarise(with_footage)
    assert summary["gap_closed"]["footage_tracks"]["per_seed"] == pytest.approx([0.25, 0.25])
    assert summary["search"] == pytest.approx({"before": 0.5, "after": 0.75})
    text = bench.markdown({"summary": summary, "seeds": [0, 1], "per_seed": with_footage, "date": "2026-12-02",
                           "machine": {"cpu": "c", "cores": 2, "note": ""}, "command": "x", "commands": []})  # fmt: skip
    assert "| 1 | 30 | 240 | 50.0 % (5 / 10) | 70.0 % (7 / 10) |" in text and "closes 25 % of it" in text
    some = {**PER_SEED, 1: with_footage[1]}  # footage measured on seed 1 only: its rows say so and use seed 1's gap
    summary = bench.summarise(some)
    closed = summary["gap_closed"]["footage_tracks"]
    assert closed["of_means"] == pytest.approx(0.25) and closed["per_seed"] == pytest.approx([0.25]) and closed["seeds"] == [1]
    assert summary["gap_closed"]["adapted"]["seeds"] == [0, 1] and summary["footage_tracks"]["seeds"] == [1]
    text = bench.markdown({"summary": summary, "seeds": [0, 1], "per_seed": some, "date": "d", "command": "x",
                           "commands": [], "machine": {"cpu": "c", "cores": 2, "note": ""}})  # fmt: skip
    assert "with track ids) (seeds 1 only) | 60.0 ± 0.0 | 40.0 ± 0.0 |" in text
    assert "(seeds 1 only) closes 25 % of those seeds' gap (per seed: 25 %)" in text and "closes 62 % of it" in text
    without = bench.summarise({s: {k: v for k, v in r.items() if k != "adapted"} for s, r in PER_SEED.items()})
    assert "adapted" not in without and "gap_closed" not in without


def test_markdown_section_replaces_only_its_own_section(bench, tmp_path: Path) -> None:
    report = {"summary": bench.summarise(PER_SEED), "seeds": [0, 1], "per_seed": PER_SEED, "date": "2026-12-02",
              "machine": {"cpu": "some CPU", "cores": 2, "note": ""}, "command": "python scripts/adapt_benchmark.py",
              "commands": ["spanet synth ..."]}  # fmt: skip
    text = bench.markdown(report)
    assert text.startswith(bench.SECTION) and "| 25.0 ± 7.1 |" in text and "closes 62 %" in text
    doc = tmp_path / "adapt.md"
    doc.write_text(f"# Adapt\n\nintro\n\n{bench.SECTION}\n\nold numbers\n\n## Later\n\nkept\n")
    bench.write_section(doc, text)
    new = doc.read_text()
    assert "old numbers" not in new and new.count(bench.SECTION) == 1 and new.endswith("## Later\n\nkept\n")
    assert new.startswith("# Adapt\n\nintro\n\n")
    bench.write_section(tmp_path / "new.md", text)  # a missing file gets a title and the section
    assert (tmp_path / "new.md").read_text().count(bench.SECTION) == 1


def test_partial_runs_and_unrecorded_cpu_time(bench) -> None:
    partial = {0: {"supervised": _run(0.8, 0.6)}, 1: {"direct": {**_run(0.4, 0.2), "cpu_minutes": None}}}
    summary = bench.summarise(partial)
    assert "gap_mAP" not in summary and summary["direct"]["cpu_minutes"] == {"mean": None, "std": None}
    report = {"summary": summary, "seeds": [0, 1], "per_seed": partial, "date": "d", "command": "c", "commands": [],
              "machine": {"cpu": "x", "cores": 2, "note": ""}}  # fmt: skip
    text = bench.markdown(report)
    assert "not recorded" in text and "| 0 | — | 60.0 / 60.0 |" not in text and "| 1 | 40.0 / 20.0 | — |" in text


def test_a_supervised_only_process_leaves_the_a_model_to_the_other(bench, tmp_path: Path, monkeypatch) -> None:
    trained: list[str] = []
    monkeypatch.setattr(bench, "synth", lambda folder, **_: None)
    monkeypatch.setattr(bench, "train", lambda data, output, **_: trained.append(output.name) or {"cpu_minutes": 1.0})
    monkeypatch.setattr(bench, "adapt", lambda *_, **__: {"cpu_minutes": 1.0})
    monkeypatch.setattr(bench, "evaluate", lambda *_: {"rank1": 0.5, "mAP": 0.4})
    args = SimpleNamespace(work=str(tmp_path), preset="demo", runs=["supervised"], no_adapt=False, footage=None)
    assert set(bench.one_seed(0, args)) == {"supervised"} and trained == ["train_b"]
    trained.clear()
    assert set(bench.one_seed(0, SimpleNamespace(**{**vars(args), "runs": ["direct", "adapted"]}))) == {"source", "direct", "adapted"}
    assert trained == ["train_a"]


def test_footage_on_the_seeds_asked(bench, tmp_path: Path, monkeypatch) -> None:
    for name in ("synth", "train", "adapt"):
        monkeypatch.setattr(bench, name, lambda *_, **__: {"cpu_minutes": 1.0})
    monkeypatch.setattr(bench, "evaluate", lambda *_: {"rank1": 0.5, "mAP": 0.4})
    monkeypatch.setattr(bench, "footage", lambda work, **_: {"footage_tracks": {"rank1": 0.5, "mAP": 0.4}})
    args = SimpleNamespace(work=str(tmp_path), preset="demo", runs=["direct", "adapted"], no_adapt=False)
    ran = lambda footage: [s for s in (0, 1) if "footage_tracks" in bench.one_seed(s, SimpleNamespace(**vars(args), footage=footage))]  # noqa: E731
    assert ran(None) == [] and ran([]) == [0, 1] and ran([1]) == [1]

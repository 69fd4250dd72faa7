"""docs/architecture.md's module section is generated from the code, so it cannot drift from the signatures."""

from __future__ import annotations

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "architecture.py"


def _generator():
    spec = importlib.util.spec_from_file_location("architecture", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_module_section_matches_the_code() -> None:
    generator = _generator()
    current = generator.DOC.read_text(encoding="utf-8")
    assert generator.replace_section(current, generator.generate()) == current, (
        "docs/architecture.md is stale: run `python scripts/architecture.py --write` and commit it"
    )


def test_a_changed_signature_is_caught(tmp_path: Path, monkeypatch) -> None:
    """The check can fail: a module whose exported function gains a keyword changes the generated text."""
    generator = _generator()
    package = tmp_path / "spanet"
    package.mkdir()
    (package / "thing.py").write_text('"""A thing."""\n__all__ = ["f"]\ndef f(a: int) -> int:\n    return a\n')
    monkeypatch.setattr(generator, "PACKAGE", package)
    before = generator.generate()
    (package / "thing.py").write_text('"""A thing."""\n__all__ = ["f"]\ndef f(a: int, *, b: int = 2) -> int:\n    return a\n')
    after = generator.generate()
    assert "`f(a: int)` → `int`" in before and "`f(a: int, *, b: int=2)` → `int`" in after

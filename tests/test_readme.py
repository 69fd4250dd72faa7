"""Every dotted `spanet.…` name the README shows resolves, so a refactor cannot silently break the documented API."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def _resolve(dotted: str) -> object:
    """Import the longest module prefix of `dotted`, then walk the remaining attributes."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            value = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for name in parts[cut:]:
            value = getattr(value, name)
        return value
    raise ModuleNotFoundError(dotted)


def test_every_dotted_name_in_the_readme_resolves() -> None:
    names = sorted(set(re.findall(r"\bspanet(?:\.[A-Za-z_]\w*)+", README.read_text(encoding="utf-8"))))
    assert len(names) >= 5  # the README does show the library's names
    unresolved = []
    for name in names:
        try:
            _resolve(name)
        except (ImportError, AttributeError):
            unresolved.append(name)
    assert unresolved == []


def test_the_readme_python_example_imports() -> None:
    import spanet

    for name in ("SPANet", "SpatialAttention", "FeatureExtractor", "SpanetError"):
        assert getattr(spanet, name).__name__ == name

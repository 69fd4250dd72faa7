"""`spanet gallery export/import`: a gallery moves between stores through Parquet unchanged, re-importing adds
nothing, and vectors of another model are refused."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from spanet.cli import main
from spanet.errors import SpanetError

pytest.importorskip("pyarrow", reason="Parquet needs pyarrow (pip install 'spanet[milvus]')")

DIM = 8
INFO = {"feature_dim": DIM, "kind": "parts", "args_fingerprint": "a" * 16, "weights_fingerprint": "b" * 16}
_HAVE_MILVUS = importlib.util.find_spec("pymilvus") is not None and importlib.util.find_spec("milvus_lite") is not None


def _filled(folder: Path, *, store: str = "sqlite", count: int = 30):
    from spanet.deploy.backend import open_gallery
    from spanet.deploy.gallery import NewEntry

    rng = np.random.default_rng(0)
    gallery = open_gallery(folder, model_info=INFO, create=True, store=store)
    entries = [NewEntry(data=rng.bytes(40), suffix=".png", camera=None if i % 4 == 0 else i % 3,
                        timestamp=None if i % 3 else f"2024-01-02T03:04:{i:02d}+00:00", label=f"l{i % 5}",
                        source=f"cam/{i}.png", track=None if i % 2 else i // 2) for i in range(count)]  # fmt: skip
    gallery.add(entries, rng.normal(size=(count, DIM)).astype(np.float32))
    return gallery


def _content(gallery) -> list[tuple]:
    ids = [int(i) for i in gallery.ids()]
    entries, vectors = gallery.get(ids), gallery.features(ids)
    return [(e.camera, e.timestamp, e.track, e.label, e.source, e.image, gallery.image_path(e).read_bytes(),
             v.tobytes())
            for e, v in zip((entries[i] for i in ids), vectors)]  # fmt: skip


@pytest.mark.parametrize("target", ["sqlite", "milvus"])
def test_export_import_round_trip(tmp_path: Path, target: str) -> None:
    from spanet.deploy.backend import open_gallery
    from spanet.deploy.transfer import export_gallery, import_gallery

    if target == "milvus" and not _HAVE_MILVUS:
        pytest.skip("pymilvus and milvus-lite are not installed (pip install 'spanet[milvus]')")
    source = _filled(tmp_path / "a")
    source.remove(int(source.ids()[5]))
    assert export_gallery(source, tmp_path / "a.parquet") == 29
    before = _content(source)
    source.close()
    store = "sqlite" if target == "sqlite" else f"milvus:{tmp_path / 'b.db'}"
    copy = open_gallery(tmp_path / "b", model_info=INFO, create=True, store=store)
    try:
        report = import_gallery(copy, [tmp_path / "a.parquet"])
        assert len(report.ids) == 29 and report.already == 0 and not report.missing
        assert _content(copy) == before  # every field, image byte and vector bit
        again = import_gallery(copy, [tmp_path / "a.parquet"])
        assert again.ids == [] and again.already == 29 and len(copy) == 29
    finally:
        copy.close()


def test_import_refuses_another_model(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    from spanet.deploy.backend import open_gallery
    from spanet.deploy.transfer import export_gallery, import_gallery

    source = _filled(tmp_path / "a", count=4)
    export_gallery(source, tmp_path / "a.parquet")
    source.close()
    other = open_gallery(tmp_path / "o", model_info={**INFO, "weights_fingerprint": "c" * 16}, create=True)
    with pytest.raises(SpanetError, match="come from model b+ .*gallery .* is for c+"):
        import_gallery(other, [tmp_path / "a.parquet"])
    assert len(other) == 0
    other.close()
    table = pq.read_table(tmp_path / "a.parquet")  # one row claims another model than the file
    fingerprints = table["fingerprint"].to_pylist()
    fingerprints[2] = "d" * 16
    pq.write_table(table.set_column(table.schema.get_field_index("fingerprint"), "fingerprint",
                                    __import__("pyarrow").array(fingerprints)), tmp_path / "mixed.parquet")  # fmt: skip
    target = open_gallery(tmp_path / "t", model_info=INFO, create=True)
    with pytest.raises(SpanetError, match="rows made by another model"):
        import_gallery(target, [tmp_path / "mixed.parquet"])
    assert len(target) == 0  # nothing added before the check
    target.close()


def test_cli_export_import(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    _filled(tmp_path / "a", count=6).close()
    assert main(["gallery", "export", str(tmp_path / "a"), "--out", str(tmp_path / "x" / "a.parquet")]) == 0
    assert "exported 6 entries" in capsys.readouterr().out
    assert main(["gallery", "import", str(tmp_path / "b"), str(tmp_path / "x")]) == 0
    assert "imported 6 entries" in capsys.readouterr().out
    assert json.loads((tmp_path / "b" / "gallery.json").read_text())["model"] == INFO
    other = {**INFO, "weights_fingerprint": "e" * 16}
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "gallery.json").write_text(json.dumps({"format": "spanet-gallery", "version": 1,
                                                             "feature_dim": DIM, "index": "flat", "model": other}))  # fmt: skip
    assert main(["gallery", "import", str(tmp_path / "c"), str(tmp_path / "x" / "a.parquet")]) == 2
    assert "different model weights" in capsys.readouterr().err
    assert main(["gallery", "export", str(tmp_path / "a"), "--out", str(tmp_path / "a.csv")]) == 2
    assert main(["gallery", "import", str(tmp_path / "d"), str(tmp_path / "nothing")]) == 2

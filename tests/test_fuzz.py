"""Property tests: whatever a user's files hold, the config loader and the dataset readers either succeed or raise
`SpanetError` with a message — never another exception (a traceback wall for a user mistake)."""

from __future__ import annotations

import string
import tempfile
import warnings
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spanet.config import Config, load_config
from spanet.data.datasets import DatasetCountWarning, load_dataset
from spanet.errors import SpanetError

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12), st.lists(st.integers(-5, 100), max_size=4),
)
_keys = st.sampled_from(["data", "model", "optim", "loss", "train", "lr", "epochs", "batch_size", "attention",
                         "sa_pooling", "sa_branches", "milestones", "dropout", "weighting", "root", "x"])
_documents = st.recursive(_scalars, lambda inner: st.dictionaries(_keys, inner, max_size=5), max_leaves=12)


def _load(text: str) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "config.yaml"
        path.write_text(text, encoding="utf-8")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)
                assert isinstance(load_config(path), Config)
        except SpanetError as exc:
            assert str(exc).strip(), "a SpanetError must say what is wrong"


@FUZZ
@given(_documents)
def test_config_loader_on_random_yaml_structures(document: object) -> None:
    _load(yaml.safe_dump(document))


@FUZZ
@given(st.text(alphabet=string.printable + "äé€\u2028", max_size=80))
def test_config_loader_on_random_text(text: str) -> None:
    _load(text)


_names = st.one_of(
    st.from_regex(r"-?\d{1,5}_c\d{1,2}s\d_\d{6}_\d{2}\.(jpg|png|txt)", fullmatch=True),
    st.text(alphabet=string.ascii_letters + string.digits + "_-. ", min_size=1, max_size=20),
)


@FUZZ
@given(st.dictionaries(st.sampled_from(["bounding_box_train", "bounding_box_test", "query", "junk"]),
                       st.lists(_names, max_size=6), max_size=4))
def test_market_reader_on_random_file_names(layout: dict[str, list[str]]) -> None:
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        for sub, names in layout.items():
            (root / sub).mkdir()
            for name in names:
                if name.strip(". ") and "/" not in name:
                    (root / sub / name).write_bytes(b"not an image")  # names matter here; contents are not read
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DatasetCountWarning)
                ds = load_dataset("market1501", root)
            assert ds.train and ds.query and ds.gallery
        except SpanetError as exc:
            assert str(exc).strip()


@FUZZ
@given(st.lists(st.text(alphabet=string.ascii_letters + string.digits + " _/.-\t", max_size=30), max_size=6))
def test_msmt_list_reader_on_random_lines(lines: list[str]) -> None:
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        for sub in ("train", "test"):
            (root / sub).mkdir()
        for name in ("list_train.txt", "list_val.txt", "list_query.txt", "list_gallery.txt"):
            (root / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
        try:
            load_dataset("msmt17", root)
        except SpanetError as exc:
            assert str(exc).strip()

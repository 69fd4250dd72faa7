"""FeatureExtractor: every input type gives the checkpoint's features; bad inputs are clear errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from builders import INPUT_SIZE, make_checkpoint, make_images
from spanet.errors import SpanetError
from spanet.features import (
    FeatureExtractor,
    load_features,
    model_fingerprints,
    save_features,
)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "model.pt")


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return make_images(tmp_path_factory.mktemp("images"), count=5)


@pytest.fixture(scope="module")
def extractor(checkpoint: Path) -> FeatureExtractor:
    return FeatureExtractor(checkpoint, device="cpu", batch_size=2)


def _by_hand(model: torch.nn.Module, path: Path) -> np.ndarray:
    """The evaluation transform written out: bilinear resize to the checkpoint size, /255, ImageNet mean/std."""
    image = Image.open(path).convert("RGB").resize((INPUT_SIZE[1], INPUT_SIZE[0]), Image.BILINEAR)
    x = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
    with torch.no_grad():
        return model.embed(((x - mean) / std)[None], kind="parts")[0].numpy()


def test_paths_give_checkpoint_features(extractor: FeatureExtractor, images: list[Path]) -> None:
    features = extractor([str(p) for p in images])
    assert features.shape == (len(images), 6 * 512)
    assert features.dtype == np.float32
    # each of the six stripe features is L2-normalised
    np.testing.assert_allclose(np.linalg.norm(features.reshape(len(images), 6, 512), axis=2), 1.0, rtol=1e-5)
    for row, path in zip(features, images):
        np.testing.assert_allclose(row, _by_hand(extractor.model, path), atol=1e-5)
    assert extractor.input_size == INPUT_SIZE
    assert not extractor.model.training


def test_every_input_type_gives_the_same_features(extractor: FeatureExtractor, images: list[Path]) -> None:
    path = images[0]
    pil = Image.open(path).convert("RGB")
    array = np.asarray(pil)
    float_tensor = torch.from_numpy(array.copy()).permute(2, 0, 1).float() / 255.0
    uint8_tensor = torch.from_numpy(array.copy()).permute(2, 0, 1)
    features = extractor([path, str(path), pil, array, float_tensor, uint8_tensor])
    for row in features[1:]:
        np.testing.assert_allclose(row, features[0], atol=1e-5)


def test_batch_size_does_not_change_features(checkpoint: Path, images: list[Path], extractor: FeatureExtractor) -> None:
    one_batch = FeatureExtractor(checkpoint, device="cpu", batch_size=64)(images)
    np.testing.assert_allclose(one_batch, extractor(images), atol=1e-5)


def test_extract_files_skips_unreadable(tmp_path: Path, extractor: FeatureExtractor, images: list[Path]) -> None:
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg at all")
    result = extractor.extract_files([images[0], broken, images[1]])
    assert result.paths == (str(images[0]), str(images[1]))
    assert [path for path, _ in result.failures] == [str(broken)]
    np.testing.assert_allclose(result.features, extractor(images[:2]), atol=1e-5)
    with pytest.raises(SpanetError, match="broken.jpg"):
        extractor([images[0], broken])


@pytest.mark.parametrize(
    "bad, message",
    [
        (np.zeros((10, 10, 3), dtype=np.float32), "uint8"),
        (np.zeros((10, 10, 4), dtype=np.uint8), "shape"),
        (torch.full((3, 10, 10), 2.0), "embed_tensor"),
        (torch.zeros((10, 10)), "shape"),
        (42, "cannot use int"),
    ],
)
def test_bad_inputs_are_clear_errors(extractor: FeatureExtractor, bad: object, message: str) -> None:
    with pytest.raises(SpanetError, match=message):
        extractor([bad])


def test_single_image_must_be_wrapped(extractor: FeatureExtractor, images: list[Path]) -> None:
    with pytest.raises(SpanetError, match="list"):
        extractor(str(images[0]))


def test_model_instead_of_checkpoint(extractor: FeatureExtractor, images: list[Path]) -> None:
    with pytest.raises(SpanetError, match="input_size"):
        FeatureExtractor(extractor.model, device="cpu")
    direct = FeatureExtractor(extractor.model, device="cpu", input_size=INPUT_SIZE)
    np.testing.assert_allclose(direct(images[:2]), extractor(images[:2]), atol=1e-6)


def test_info_fingerprints_tell_models_apart(tmp_path: Path, checkpoint: Path, extractor: FeatureExtractor) -> None:
    info = extractor.info
    assert info["feature_dim"] == 6 * 512 and info["kind"] == "parts" and info["input_size"] == list(INPUT_SIZE)
    same = FeatureExtractor(checkpoint, device="cpu").info
    assert same["weights_fingerprint"] == info["weights_fingerprint"]
    other = FeatureExtractor(make_checkpoint(tmp_path / "other.pt", seed=1), device="cpu").info
    assert other["args_fingerprint"] == info["args_fingerprint"]
    assert other["weights_fingerprint"] != info["weights_fingerprint"]
    changed_args = model_fingerprints({**info["model_args"], "num_parts": 3}, {})
    assert changed_args["args_fingerprint"] != info["args_fingerprint"]


def test_missing_checkpoint_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(SpanetError, match="does not exist"):
        FeatureExtractor(tmp_path / "nope.pt", device="cpu")


def test_features_file_round_trip(tmp_path: Path) -> None:
    features = np.random.default_rng(0).normal(size=(3, 8)).astype(np.float32)
    info = {"checkpoint": "m.pt", "kind": "parts", "feature_dim": 8, "model_args": {"num_parts": (1, 2)}}
    path = save_features(tmp_path / "feats.npz", features=features, paths=("a.jpg", "b c.jpg", "é.jpg"), info=info,
                         failed=["bad.jpg"])
    loaded = load_features(path)
    np.testing.assert_array_equal(loaded.features, features)
    assert loaded.paths == ("a.jpg", "b c.jpg", "é.jpg") and loaded.failed == ("bad.jpg",)
    assert loaded.pids.tolist() == [-1, -1, -1] and loaded.splits == ("", "", "")
    assert loaded.info["model_args"] == {"num_parts": [1, 2]}
    with pytest.raises(SpanetError, match=".npz"):
        save_features(tmp_path / "feats.txt", features=features, paths=("a", "b", "c"), info=info)
    with pytest.raises(SpanetError, match="do not match"):
        save_features(tmp_path / "short.npz", features=features, paths=("a",), info=info)
    with pytest.raises(SpanetError, match="does not exist"):
        load_features(tmp_path / "missing.npz")
    np.savez(tmp_path / "other.npz", x=np.zeros(3))
    with pytest.raises(SpanetError, match="'features' and 'paths'"):
        load_features(tmp_path / "other.npz")


def test_evaluation_files_from_before_the_one_format_still_load(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    old = {"query_features": rng.normal(size=(2, 4)), "gallery_features": rng.normal(size=(3, 4))}
    for split, count in (("query", 2), ("gallery", 3)):
        old[f"{split}_pids"] = np.arange(count)
        old[f"{split}_camids"] = np.zeros(count, dtype=np.int64)
        old[f"{split}_paths"] = np.array([f"{split}{i}.jpg" for i in range(count)])
    np.savez(tmp_path / "old.npz", **old)
    loaded = load_features(tmp_path / "old.npz")
    assert loaded.splits == ("query", "query", "gallery", "gallery", "gallery")
    gallery = loaded.select("gallery")
    assert gallery.paths == ("gallery0.jpg", "gallery1.jpg", "gallery2.jpg") and gallery.pids.tolist() == [0, 1, 2]
    np.testing.assert_allclose(gallery.features, old["gallery_features"].astype(np.float32))


def test_features_files_that_are_not_npz_or_hold_pickles_are_named_plainly(tmp_path: Path) -> None:
    text = tmp_path / "notes.npz"
    text.write_text("hello")
    with pytest.raises(SpanetError, match="is not a numpy .npz archive"):
        load_features(text)
    pickled = tmp_path / "pickled.npz"
    np.savez(pickled, features=np.array([{"a": 1}], dtype=object), paths=np.array(["a.jpg"]))
    with pytest.raises(SpanetError, match="holds pickled objects") as info:
        load_features(pickled)
    assert "allow_pickle" not in str(info.value)


def test_a_changed_features_file_is_detected(tmp_path: Path) -> None:
    features = np.ones((2, 4), dtype=np.float32)
    path = save_features(tmp_path / "f.npz", features=features, paths=("a.jpg", "b.jpg"), info={})
    with np.load(path) as data:
        arrays = {key: data[key] for key in data.files}
    arrays["features"] = arrays["features"] * 2  # altered after writing, checksum kept
    np.savez(path, **arrays)
    with pytest.raises(SpanetError, match="checksum mismatch"):
        load_features(path)

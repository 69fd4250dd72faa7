"""extract_features: shapes, order, batching, flip averaging, paths vs samples, model mode."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from spanet.data.datasets import Sample
from spanet.data.transforms import build_transforms
from spanet.errors import SpanetError
from spanet.features import ExtractionOptions, extract_features


def _features(model, images, *, input_size, **options) -> np.ndarray:
    return extract_features(model, images, input_size=input_size, options=ExtractionOptions(**options)).features

INPUT_SIZE = (64, 32)


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    from spanet.model import SPANet

    torch.manual_seed(0)
    net = SPANet(num_classes=3, backbone="resnet18", pretrained=None)
    net.train()
    with torch.no_grad():  # non-default BN statistics
        net(torch.rand(4, 3, *INPUT_SIZE))
    return net.eval()


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    paths = []
    for i in range(5):
        pixels = rng.integers(0, 256, size=(80, 40, 3), dtype=np.uint8)
        pixels[:, :20] = rng.integers(0, 256, size=3, dtype=np.uint8)  # a left/right asymmetric block
        path = folder / f"{i + 1:04d}_c{i % 2 + 1}s1_{i:06d}_00.jpg"
        Image.fromarray(pixels).save(path, quality=95)
        paths.append(path)
    return paths


def test_shape_dtype_and_per_part_norms(model, images) -> None:
    feats = _features(model, images, input_size=INPUT_SIZE, batch_size=2, progress=False)
    assert feats.shape == (5, model.embedding_dim("parts")) and feats.dtype == np.float32
    parts = feats.reshape(5, model.num_parts, -1)
    np.testing.assert_allclose(np.linalg.norm(parts, axis=-1), 1.0, atol=1e-5)


def test_batching_and_order_do_not_change_features(model, images) -> None:
    whole = _features(model, images, input_size=INPUT_SIZE, batch_size=5, progress=False)
    one_by_one = _features(model, images, input_size=INPUT_SIZE, batch_size=1, progress=False)
    reversed_ = _features(model, images[::-1], input_size=INPUT_SIZE, batch_size=2, progress=False)
    np.testing.assert_allclose(whole, one_by_one, atol=1e-5)
    np.testing.assert_allclose(whole, reversed_[::-1], atol=1e-5)
    assert not np.allclose(whole[0], whole[1])  # distinct images give distinct features


def test_samples_and_paths_give_the_same_features(model, images) -> None:
    samples = [Sample(path=str(p), pid=i, camid=0) for i, p in enumerate(images)]
    np.testing.assert_allclose(
        _features(model, samples, input_size=INPUT_SIZE, progress=False),
        _features(model, images, input_size=INPUT_SIZE, progress=False),
        atol=1e-6,
    )


@pytest.mark.parametrize("kind", ["parts", "global"])
def test_flip_is_the_renormalised_sum_of_image_and_mirror(model, images, kind) -> None:
    flipped = _features(model, images, input_size=INPUT_SIZE, flip=True, kind=kind, progress=False)
    plain = _features(model, images, input_size=INPUT_SIZE, kind=kind, progress=False)
    transform = build_transforms(height=INPUT_SIZE[0], width=INPUT_SIZE[1], train=False)
    with torch.inference_mode():
        x = torch.stack([transform(Image.open(p).convert("RGB")) for p in images])
        summed = model.embed(x, kind=kind) + model.embed(torch.flip(x, dims=[3]), kind=kind)
    parts = model.num_parts if kind == "parts" else 1
    expected = F.normalize(summed.reshape(len(images), parts, -1), dim=-1).reshape(len(images), -1).numpy()
    np.testing.assert_allclose(flipped, expected, atol=1e-5)
    assert not np.allclose(flipped, plain, atol=1e-4)  # the mirror image changed something


def test_model_mode_is_restored_and_errors_are_clear(model, images) -> None:
    model.train()
    try:
        _features(model, images[:1], input_size=INPUT_SIZE, progress=False)
        assert model.training
    finally:
        model.eval()
    with pytest.raises(SpanetError, match="batch size"):
        _features(model, images, input_size=INPUT_SIZE, batch_size=0, progress=False)
    with pytest.raises(SpanetError, match="image not found"):
        _features(model, [images[0].parent / "missing.jpg"], input_size=INPUT_SIZE, progress=False)
    assert _features(model, [], input_size=INPUT_SIZE, progress=False).shape == (0, model.embedding_dim())


def test_unreadable_inputs_are_skipped_and_listed_when_asked(model, images, tmp_path) -> None:
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    result = extract_features(model, [images[0], broken, images[1]], input_size=INPUT_SIZE,
                              options=ExtractionOptions(batch_size=2, progress=False), skip_unreadable=True)
    assert result.paths == (str(images[0]), str(images[1])) and result.indices == (0, 2)
    assert [path for path, _ in result.failures] == [str(broken)] and "cannot read" in result.failures[0][1]
    np.testing.assert_allclose(result.features, _features(model, images[:2], input_size=INPUT_SIZE, progress=False),
                               atol=1e-6)


def test_pictures_in_memory_match_their_files(model, images) -> None:
    picture = Image.open(images[0]).convert("RGB")
    mixed = [picture, np.asarray(picture), torch.from_numpy(np.asarray(picture)).permute(2, 0, 1), images[0]]
    result = extract_features(model, mixed, input_size=INPUT_SIZE, options=ExtractionOptions(progress=False))
    assert result.paths[:3] == ("<input 0>", "<input 1>", "<input 2>")
    np.testing.assert_allclose(result.features, np.repeat(result.features[3:], 4, axis=0), atol=1e-6)


def test_amp_with_channels_last_is_bf16_on_cpu_and_close_to_fp32(model, images) -> None:
    plain = _features(model, images, input_size=INPUT_SIZE, progress=False)
    fast = _features(model, images, input_size=INPUT_SIZE, amp=True, channels_last=True, progress=False)
    assert fast.dtype == np.float32 and fast.shape == plain.shape
    assert not np.array_equal(fast, plain)  # bfloat16 really ran
    cosine = (fast * plain).sum(1) / np.linalg.norm(fast, axis=1) / np.linalg.norm(plain, axis=1)
    assert cosine.min() > 0.99


def test_extraction_runs_in_float32_unless_amp_is_asked() -> None:
    """Evaluation precision is explicit: no autocast by default, bf16 only when asked (what `evaluate --amp` does)."""
    import torch

    from spanet.model import SPANet

    torch.manual_seed(0)
    model = SPANet(num_classes=3, backbone="resnet18").eval()
    images = torch.rand(2, 3, 64, 32)
    options = dict(input_size=(64, 32), batch_size=2, progress=False)
    default = _features(model, images, **options)
    assert np.array_equal(_features(model, images, amp="none", **options), default)
    assert np.array_equal(_features(model, images, amp=False, **options), default)
    bf16 = _features(model, images, amp="bf16", **options)
    assert not np.array_equal(bf16, default) and np.allclose(bf16, default, atol=0.05)

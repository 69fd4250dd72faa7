"""SPANet: every Table 2 configuration builds, trains (all parameters get gradients) and embeds; pretrained loading."""

from __future__ import annotations

import urllib.error
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import torchvision

from spanet.errors import SpanetError
from spanet.losses import classification_terms, weigh_terms
from spanet.training.ablation import ROWS
from spanet.model import SPANet, SPANetEmbedder, stripe_bounds

CLASSES = 5
SMALL = (64, 32)  # stage-4 map 4×2 with the stride-1 last stage


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    """Tiny convolutions run fastest on one thread, and far faster when other processes share the cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _images(batch: int, size: tuple[int, int] = SMALL, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, 3, *size, generator=torch.Generator().manual_seed(seed))


def _small_model(**flags: bool) -> SPANet:
    torch.manual_seed(0)
    return SPANet(num_classes=CLASSES, backbone="resnet18", **flags)


@pytest.mark.parametrize("parts", [1, 3, 6])
def test_stripes_are_the_means_of_their_rows(parts: int) -> None:
    """Without SA1 the stripes come from adaptive pooling, with SA1 from `stripe_bounds` slices: the same rows."""
    model = SPANet(num_classes=2, backbone="resnet18", num_parts=parts, deep_supervision=False)
    for height in (1, 4, 5, 7, 8, 24):
        last_map = torch.rand(2, 3, height, 5)
        bounds = stripe_bounds(height, parts)
        expected = torch.stack([last_map[:, :, start:end].mean(dim=(2, 3)) for start, end in bounds], dim=1)
        torch.testing.assert_close(model.pool_parts(last_map), expected)
        assert len(bounds) == parts


@pytest.mark.parametrize("sa_parts", [False, True])
def test_channels_last_training_keeps_every_stage_gradient_channels_last(sa_parts: bool) -> None:
    model = _small_model(sa_parts=sa_parts).to(memory_format=torch.channels_last)
    images = _images(2).contiguous(memory_format=torch.channels_last)
    maps = model.forward_features(images)
    loss = model.pool_parts(maps[3]).sum() + sum(head(m).sum() for head, m in zip(model.ds_heads, maps))
    grads = torch.autograd.grad(loss, maps)
    assert [g.is_contiguous(memory_format=torch.channels_last) for g in grads] == [True] * 4
    torch.testing.assert_close(model.pool_parts(maps[3]), model.pool_parts(maps[3].contiguous()))


@pytest.mark.parametrize("row", [key for key, row in ROWS.items() if row.table == 2])
def test_output_shapes_and_every_parameter_gets_a_gradient(row: str) -> None:
    flags = ROWS[row].flags
    model = _small_model(**flags).train()
    output = model(_images(2))

    num_parts = 6 if flags["parts"] else 1
    assert [tuple(t.shape) for t in output.ds_logits] == [(2, CLASSES)] * (3 if flags["deep_supervision"] else 0)
    assert [tuple(t.shape) for t in output.part_logits] == [(2, CLASSES)] * (6 if flags["parts"] else 0)
    assert output.global_logits.shape == (2, CLASSES)
    assert output.part_features.shape == (2, num_parts, 512)
    assert output.reduced_features.shape == (2, num_parts, 256)
    assert output.global_feature.shape == (2, 256)
    assert (model.sa_parts is not None) == flags["sa_parts"]
    assert all((head.sa_ds is not None) == flags["sa_ds"] for head in model.ds_heads)

    loss = weigh_terms(classification_terms(output, torch.tensor([0, 3])), weighting="paper")
    loss.backward()
    no_gradient = [name for name, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert no_gradient == []


def test_default_resnet50_parameter_count_for_751_classes() -> None:
    classes, reduced = 751, 256
    resnet50 = torchvision.models.resnet50(weights=None)
    backbone = sum(p.numel() for p in resnet50.parameters()) - resnet50.fc.weight.numel() - resnet50.fc.bias.numel()
    ds_heads = sum(c * reduced + reduced * classes + classes for c in (256, 512, 1024))  # 1×1 conv (no bias) + Linear
    part_reduce = 2048 * reduced + 2 * reduced  # shared 1×1 conv (no bias) + BN weight and bias
    part_classifiers = 6 * (reduced * classes + classes)
    global_classifier = reduced * classes + classes
    expected = backbone + ds_heads + part_reduce + part_classifiers + global_classifier
    assert backbone == 23_508_032  # torchvision's ResNet-50 without fc (the stride change adds no parameters)

    model = SPANet(num_classes=classes)
    assert sum(p.numel() for p in model.parameters()) == expected
    backbone_ids = {id(p) for p in model.backbone_parameters()}
    head_ids = {id(p) for p in model.head_parameters()}
    assert not backbone_ids & head_ids
    assert backbone_ids | head_ids == {id(p) for p in model.parameters()}
    assert sum(p.numel() for p in model.backbone_parameters()) == backbone


@pytest.mark.parametrize("size", [(384, 128), (128, 64)])
def test_resnet50_embedding_is_12288_unit_norm_stripes(size: tuple[int, int]) -> None:
    model = SPANet(num_classes=10).eval()
    with torch.no_grad():
        maps = model.forward_features(_images(1, size))
        embedding = model.embed(_images(1, size))
    height, width = size
    assert [tuple(m.shape[1:]) for m in maps] == [
        (256, height // 4, width // 4),
        (512, height // 8, width // 8),
        (1024, height // 16, width // 16),
        (2048, height // 16, width // 16),  # stage 4 keeps stage 3's resolution
    ]
    assert embedding.shape == (1, 12288) == (1, model.embedding_dim("parts"))
    torch.testing.assert_close(embedding.view(6, 2048).norm(dim=1), torch.ones(6))


@pytest.mark.parametrize("parts", [True, False])
def test_embedding_kinds(parts: bool) -> None:
    model = _small_model(parts=parts).eval()
    images = _images(3)
    with torch.no_grad():
        output = model(images)
        embeddings = {kind: model.embed(images, kind=kind) for kind in ("parts", "reduced", "global")}
    num_parts = 6 if parts else 1
    for kind, embedding in embeddings.items():
        assert embedding.shape == (3, model.embedding_dim(kind))  # type: ignore[arg-type]
    assert embeddings["parts"].shape == (3, num_parts * 512)
    torch.testing.assert_close(embeddings["parts"].view(3, num_parts, 512), F.normalize(output.part_features, dim=-1))
    reduced = embeddings["reduced"].view(3, num_parts, 256)
    torch.testing.assert_close(reduced, F.normalize(output.reduced_features, dim=-1))
    torch.testing.assert_close(embeddings["global"], F.normalize(output.global_feature, dim=-1))
    with pytest.raises(SpanetError, match="kind"):
        model.embed(images, kind="logits")  # type: ignore[arg-type]


def test_eval_mode_is_deterministic_and_train_mode_uses_dropout() -> None:
    model = _small_model().eval()
    images = _images(2)
    with torch.no_grad():
        first, second = model(images), model(images)
    torch.testing.assert_close(first.global_logits, second.global_logits, rtol=0, atol=0)
    torch.testing.assert_close(model.embed(images), model.embed(images), rtol=0, atol=0)
    model.train()
    with torch.no_grad():
        a, b = model(images), model(images)
    assert not torch.equal(a.reduced_features, b.reduced_features)


def test_bf16_autocast_forward_on_cpu() -> None:
    model = _small_model(sa_parts=True).train()
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        output = model(_images(2))
        loss = weigh_terms(classification_terms(output, torch.tensor([1, 2])))
    logits = [*output.ds_logits, *output.part_logits, output.global_logits]
    assert all(torch.isfinite(t.float()).all() for t in logits)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()


@pytest.mark.parametrize("sa_pooling", ["mean", "sum"])
def test_ds_head_is_a_composition_of_linear_maps_for_cam(sa_pooling: str) -> None:
    """The documented attribute names: pooled feature -> logits = classifier ∘ reduce (what spanet.viz.cam relies on)."""
    model = _small_model(sa_pooling=sa_pooling).eval()
    with torch.no_grad():
        maps = model.forward_features(_images(2))
        for head, stage_map in zip(model.ds_heads, maps[:3]):
            weighted = head.sa_ds.attention_map(stage_map) * stage_map  # F ⊙ A
            pooled = weighted.mean(dim=(2, 3)) if sa_pooling == "mean" else weighted.sum(dim=(2, 3))
            matrix = head.classifier.weight @ head.reduce.weight.flatten(1)  # (classes, C_k)
            torch.testing.assert_close(pooled @ matrix.T + head.classifier.bias, head(stage_map))


def test_attention_switches_do_not_change_the_state_dict() -> None:
    plain = _small_model(sa_parts=False, sa_ds=False)
    attended = _small_model(sa_parts=True, sa_ds=True)
    attended.load_state_dict(plain.state_dict())  # strict: same keys, no attention parameters


def test_stride_one_last_stage_for_basic_blocks() -> None:
    model = SPANet(num_classes=2, backbone="resnet34", deep_supervision=False, parts=False)
    maps = model.forward_features(_images(1, (128, 64)))
    assert maps[3].shape[2:] == maps[2].shape[2:] == (8, 4)
    assert model.stage_channels == (64, 128, 256, 512)


def test_embedder_exports_to_onnx_with_a_dynamic_batch(tmp_path: Path) -> None:
    onnxruntime = pytest.importorskip("onnxruntime")
    model = _small_model(sa_parts=True).eval()
    path = tmp_path / "embed.onnx"
    torch.onnx.export(
        SPANetEmbedder(model).eval(),
        (_images(2),),
        str(path),
        dynamo=False,
        input_names=["images"],
        output_names=["embedding"],
        dynamic_axes={"images": {0: "batch"}, "embedding": {0: "batch"}},
    )
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    images = _images(3, seed=5)
    (exported,) = session.run(None, {"images": images.numpy()})
    with torch.no_grad():
        expected = model.embed(images)
    torch.testing.assert_close(torch.from_numpy(exported), expected, atol=1e-5, rtol=1e-4)


def test_pretrained_path_loads_a_torchvision_state_dict(tmp_path: Path) -> None:
    torch.manual_seed(7)
    source = torchvision.models.resnet18(weights=None)
    path = tmp_path / "resnet18.pth"
    torch.save(source.state_dict(), path)
    model = SPANet(num_classes=3, backbone="resnet18", pretrained=str(path))
    loaded = model.backbone.state_dict()
    for key, value in source.state_dict().items():
        if key.startswith("fc."):
            assert key not in loaded
        else:
            assert torch.equal(loaded[key], value), key


def test_pretrained_path_mistakes_name_the_file_and_keys(tmp_path: Path) -> None:
    with pytest.raises(SpanetError, match="does not exist"):
        SPANet(num_classes=3, backbone="resnet18", pretrained=str(tmp_path / "missing.pth"))

    state = torchvision.models.resnet18(weights=None).state_dict()
    del state["layer2.0.conv1.weight"]
    state["extra.weight"] = torch.zeros(1)
    broken = tmp_path / "broken.pth"
    torch.save(state, broken)
    with pytest.raises(SpanetError, match=r"layer2\.0\.conv1\.weight.*extra\.weight"):
        SPANet(num_classes=3, backbone="resnet18", pretrained=str(broken))

    wrong_depth = tmp_path / "resnet34.pth"
    torch.save(torchvision.models.resnet34(weights=None).state_dict(), wrong_depth)
    with pytest.raises(SpanetError, match="unexpected keys"):
        SPANet(num_classes=3, backbone="resnet18", pretrained=str(wrong_depth))

    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(SpanetError, match="garbage.pth"):
        SPANet(num_classes=3, backbone="resnet18", pretrained=str(garbage))


def test_imagenet_without_network_explains_how_to_pass_a_local_file(monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(*args: object, **kwargs: object) -> None:
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", offline)
    with pytest.raises(SpanetError, match=r"resnet18-f37072fd\.pth.*pretrained=/path/to/resnet18-f37072fd\.pth"):
        SPANet(num_classes=3, backbone="resnet18", pretrained="imagenet")


@pytest.mark.parametrize(
    "kwargs",
    [{"backbone": "vgg16"}, {"attention": "sigmoid"}, {"dropout": 1.0}, {"num_parts": 0}, {"num_classes": 0}],
)
def test_bad_arguments_are_user_errors(kwargs: dict) -> None:
    with pytest.raises(SpanetError):
        SPANet(**{"num_classes": 3, "backbone": "resnet18", **kwargs})


def test_head_init_official_keeps_torch_default_init_for_the_ds_convs_only() -> None:
    torch.manual_seed(0)
    spanet_init = _small_model(head_init="spanet")
    torch.manual_seed(0)
    official = _small_model(head_init="official")
    for ours, theirs in zip(spanet_init.ds_heads, official.ds_heads):
        assert not torch.equal(ours.reduce.weight, theirs.reduce.weight)
        fan_in = theirs.reduce.weight.shape[1]
        assert theirs.reduce.weight.abs().max() <= 1 / fan_in**0.5  # PyTorch's default: U(±1/√fan_in)
    torch.testing.assert_close(official.part_reduce.conv.weight.std(), spanet_init.part_reduce.conv.weight.std(), rtol=0.2, atol=0)
    with pytest.raises(SpanetError, match="head_init"):
        _small_model(head_init="xavier")


def test_attention_spread_is_the_effective_number_of_positions() -> None:
    model = _small_model(sa_parts=True).eval()
    x = _images(2)
    spread = model.attention_spread(x)
    assert set(spread) == {"ds1", "ds2", "ds3", *(f"part{i}" for i in range(1, 7))}
    maps = model.forward_features(x)
    weights = model.ds_heads[0].sa_ds.attention_map(maps[0]).flatten(1)
    expected = (1 / (weights**2).sum(dim=1)).mean()
    assert spread["ds1"]["positions"] == pytest.approx(float(expected), rel=1e-5)
    assert spread["ds1"]["fraction"] == pytest.approx(float(expected) / weights.shape[1], rel=1e-5)
    assert all(1.0 - 1e-4 <= s["positions"] and 0 < s["fraction"] <= 1 + 1e-6 for s in spread.values())
    assert _small_model(sa_ds=False).eval().attention_spread(x) == {}

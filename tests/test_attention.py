"""The parameter-free spatial attention layer: the paper's formula, its gradient (§3.4), stability and dtypes."""

from __future__ import annotations

import pytest
import torch

from spanet.attention import SpatialAttention, attention_pool
from spanet.errors import SpanetError

MODES = ("softmax", "softmax_mean", "l1")


def _features(*shape: int, seed: int = 0, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(*shape, generator=generator, dtype=dtype)  # non-negative, like a post-ReLU map


@pytest.mark.parametrize("mode", MODES)
def test_has_no_parameters_or_buffers(mode: str) -> None:
    layer = SpatialAttention(mode)  # type: ignore[arg-type]
    assert sum(p.numel() for p in layer.parameters()) == 0
    assert layer.state_dict() == {}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("shape", [(1, 3, 1, 1), (2, 8, 5, 3), (4, 16, 24, 8), (3, 2, 7, 11)])
def test_keeps_shape_and_weights_sum_to_one_per_sample(mode: str, shape: tuple[int, ...]) -> None:
    x = _features(*shape)
    layer = SpatialAttention(mode)  # type: ignore[arg-type]
    weights = layer.attention_map(x)
    assert weights.shape == (shape[0], 1, shape[2], shape[3])
    assert (weights >= 0).all()
    torch.testing.assert_close(weights.sum(dim=(1, 2, 3)), torch.ones(shape[0]))
    assert layer(x).shape == x.shape


def test_softmax_mode_is_the_papers_formula() -> None:
    x = _features(2, 5, 4, 3, dtype=torch.float64)
    summed = x.sum(dim=1)  # (B, H, W)
    expected = torch.exp(summed) / torch.exp(summed).sum(dim=(1, 2), keepdim=True)
    out = SpatialAttention("softmax")(x)
    torch.testing.assert_close(out, x * expected[:, None])


def test_softmax_mean_mode_is_the_softmax_of_the_channel_mean() -> None:
    """softmax_mean (not the paper's formula) = softmax over positions of mean_c F, i.e. softmax(S / C)."""
    x = _features(2, 5, 4, 3, dtype=torch.float64) * 10
    mean = x.mean(dim=1)  # (B, H, W)
    expected = torch.exp(mean) / torch.exp(mean).sum(dim=(1, 2), keepdim=True)
    torch.testing.assert_close(SpatialAttention("softmax_mean")(x), x * expected[:, None])
    # the same scores as the paper's softmax, divided by the number of channels: a temperature of C
    torch.testing.assert_close(
        SpatialAttention("softmax_mean").attention_map(x), SpatialAttention("softmax").attention_map(x / 5)
    )


def test_l1_mode_is_the_official_formula_and_handles_an_all_zero_map() -> None:
    x = _features(2, 5, 4, 3, dtype=torch.float64)
    x[1] = 0.0
    weights = SpatialAttention("l1").attention_map(x)
    mean = x[0].mean(dim=0)
    torch.testing.assert_close(weights[0, 0], mean / mean.sum())
    torch.testing.assert_close(weights[1, 0], torch.full((4, 3), 1 / 12, dtype=torch.float64))


@pytest.mark.parametrize("mode", MODES)
def test_batch_items_are_independent(mode: str) -> None:
    x = _features(4, 6, 5, 4)
    layer = SpatialAttention(mode)  # type: ignore[arg-type]
    together = layer(x)
    one_by_one = torch.cat([layer(x[i : i + 1]) for i in range(4)])
    torch.testing.assert_close(together, one_by_one)
    changed = x.clone()
    changed[2] = changed[2] * 5 + 1
    after = layer(changed)
    torch.testing.assert_close(after[[0, 1, 3]], together[[0, 1, 3]])
    assert not torch.allclose(after[2], together[2])


def test_gradient_equals_the_closed_form_of_section_3_4() -> None:
    """dL/dF_{c,p} = A_p g_{c,p} + A_p Σ_k g_{k,p} F_{k,p} − A_p Σ_q A_q Σ_k g_{k,q} F_{k,q}, with g = dL/do."""
    x = (_features(3, 7, 5, 4, seed=1, dtype=torch.float64) * 2).requires_grad_(True)
    g = torch.randn(3, 7, 5, 4, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    layer = SpatialAttention("softmax")
    (layer(x) * g).sum().backward()

    with torch.no_grad():
        attention = layer.attention_map(x)  # (B, 1, H, W)
        same_position = (g * x).sum(dim=1, keepdim=True)  # Σ_k g_{k,p} F_{k,p}: (B, 1, H, W)
        all_positions = (attention * same_position).sum(dim=(2, 3), keepdim=True)  # Σ_q A_q Σ_k g F: (B, 1, 1, 1)
        closed_form = attention * g + attention * same_position - attention * all_positions
    torch.testing.assert_close(x.grad, closed_form)


def test_softmax_mean_gradient_is_the_closed_form_with_a_1_over_c_factor() -> None:
    """With S = mean_c F, dS_p/dF_{c,p} = 1/C, so
    dL/dF_{c,p} = A_p g_{c,p} + (A_p/C)(Σ_k g_{k,p}F_{k,p} − Σ_q A_q Σ_k g_{k,q}F_{k,q})."""
    channels = 7
    x = (_features(3, channels, 5, 4, seed=5, dtype=torch.float64) * 20).requires_grad_(True)
    g = torch.randn(3, channels, 5, 4, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    layer = SpatialAttention("softmax_mean")
    (layer(x) * g).sum().backward()
    with torch.no_grad():
        attention = layer.attention_map(x)  # (B, 1, H, W)
        same_position = (g * x).sum(dim=1, keepdim=True)  # (B, 1, H, W)
        all_positions = (attention * same_position).sum(dim=(2, 3), keepdim=True)  # (B, 1, 1, 1)
        closed_form = attention * g + attention * (same_position - all_positions) / channels
    torch.testing.assert_close(x.grad, closed_form)
    assert torch.autograd.gradcheck(layer, (x.detach()[:1].requires_grad_(),))


def test_at_initialisation_softmax_is_nearly_one_hot_and_softmax_mean_spreads() -> None:
    """On a randomly initialised ResNet-18 SPANet (96×48 input, the CPU demo), the paper's softmax over channel sums
    puts its weight on a handful of positions; the softmax over channel means spreads over nearly all of them."""
    from spanet.model import SPANet

    x = torch.randn(4, 3, 96, 48, generator=torch.Generator().manual_seed(7))  # like normalised images
    spread = {}
    for mode in MODES:
        torch.manual_seed(0)
        model = SPANet(num_classes=10, backbone="resnet18", attention=mode).eval()
        spread[mode] = model.attention_spread(x)
    for stage in ("ds1", "ds2", "ds3"):
        assert spread["softmax"][stage]["fraction"] < 0.1, spread["softmax"]  # measured 0.02 / 0.02 / 0.06
        assert spread["softmax_mean"][stage]["fraction"] > 0.9, spread["softmax_mean"]  # 0.99 / 0.98 / 0.96
        assert spread["l1"][stage]["fraction"] > 0.9, spread["l1"]


def test_huge_channel_sums_stay_finite() -> None:
    x = torch.zeros(2, 2048, 6, 4)
    x[0, :, 1, 2] = 1e4  # channel sum 2e7 at one position: exp() of it would overflow without max-subtraction
    x[1] = torch.rand(2048, 6, 4, generator=torch.Generator().manual_seed(3)) * 3e3
    layer = SpatialAttention("softmax")
    weights = layer.attention_map(x)
    out = layer(x)
    assert torch.isfinite(weights).all() and torch.isfinite(out).all()
    assert weights[0, 0, 1, 2] == pytest.approx(1.0)
    torch.testing.assert_close(weights.sum(dim=(1, 2, 3)), torch.ones(2))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_input_is_summed_in_float32(dtype: torch.dtype) -> None:
    # 2048 channels of 60 sum to ~1.2e5: beyond float16's range if the sum were computed in float16
    x = (torch.rand(2, 2048, 6, 4, generator=torch.Generator().manual_seed(4)) * 60).to(dtype)
    for mode in MODES:
        weights = SpatialAttention(mode).attention_map(x)  # type: ignore[arg-type]
        assert weights.dtype == dtype
        assert torch.isfinite(weights).all()
        torch.testing.assert_close(weights.float().sum(dim=(1, 2, 3)), torch.ones(2), atol=2e-2, rtol=0)
        reference = SpatialAttention(mode).attention_map(x.float())  # type: ignore[arg-type]
        torch.testing.assert_close(weights.float(), reference, atol=1e-2, rtol=2e-2)


def test_works_under_cpu_bf16_autocast() -> None:
    conv = torch.nn.Conv2d(3, 64, kernel_size=3, padding=1)
    x = torch.rand(2, 3, 8, 4)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        features = torch.relu(conv(x))
        out = SpatialAttention("softmax")(features)
    assert out.dtype == torch.bfloat16
    assert torch.isfinite(out.float()).all()


def test_sa_pooling_mean_is_the_papers_gap_of_f_times_a_and_sum_is_the_weighted_sum() -> None:
    """`mean` gives exactly (1/HW)·Σ_p A_p F_p (paper and official code), `sum` gives Σ_p A_p F_p."""
    x = _features(2, 5, 4, 3)
    torch.testing.assert_close(attention_pool(x, None), x.mean(dim=(2, 3)))
    for mode in MODES:
        mean_layer, sum_layer = SpatialAttention(mode, pooling="mean"), SpatialAttention(mode, pooling="sum")
        weighted = mean_layer.attention_map(x) * x  # F ⊙ A: (B, C, H, W)
        torch.testing.assert_close(attention_pool(x, mean_layer), weighted.sum(dim=(2, 3)) / (4 * 3))
        torch.testing.assert_close(attention_pool(x, mean_layer), torch.nn.functional.adaptive_avg_pool2d(weighted, 1).flatten(1))
        torch.testing.assert_close(attention_pool(x, sum_layer), weighted.sum(dim=(2, 3)))
    assert SpatialAttention().pooling == "mean"  # the paper's form is the default

    uniform = torch.ones(2, 5, 4, 3) * torch.arange(1.0, 6.0)[None, :, None, None]  # equal channel sums everywhere
    torch.testing.assert_close(attention_pool(uniform, SpatialAttention(pooling="sum")), uniform.mean(dim=(2, 3)))
    with pytest.raises(SpanetError, match="pooling"):
        SpatialAttention(pooling="max")  # type: ignore[arg-type]


@pytest.mark.parametrize("mode", [None, *MODES])
def test_pooling_gives_the_same_values_in_both_layouts_and_keeps_the_gradient_layout(mode: str | None) -> None:
    layer = SpatialAttention(mode) if mode else None  # type: ignore[arg-type]
    base = _features(2, 6, 5, 3)  # (both poolings share the layout-aware matmul; "mean" is the default)
    results = {}
    for layout in (torch.contiguous_format, torch.channels_last):
        x = base.clone().contiguous(memory_format=layout).requires_grad_()
        pooled = attention_pool(x, layer)
        (grad,) = torch.autograd.grad((pooled * torch.arange(6.0)).sum(), x)
        # a gradient in the other layout would make every later add and conv backward a strided copy
        assert grad.is_contiguous(memory_format=layout)
        results[layout] = (pooled, grad)
    for first, second in zip(results[torch.contiguous_format], results[torch.channels_last]):
        torch.testing.assert_close(first, second)


def test_unknown_mode_is_a_user_error() -> None:
    with pytest.raises(SpanetError, match="softmax"):
        SpatialAttention("sigmoid")  # type: ignore[arg-type]


def test_config_accepts_softmax_mean_and_builds_it() -> None:
    from spanet.config import load_config
    from spanet.model import SPANet

    config = load_config(None, ["model.attention=softmax_mean", "model.backbone=resnet18"])
    assert config.model.attention == "softmax_mean"
    model = SPANet(num_classes=5, **{k: getattr(config.model, k) for k in ("backbone", "attention", "sa_pooling")})
    assert {head.sa_ds.mode for head in model.ds_heads} == {"softmax_mean"}
    with pytest.raises(SpanetError, match="softmax_mean"):
        load_config(None, ["model.attention=softmax_sum"])

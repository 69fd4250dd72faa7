"""CAMs: the composed weights reproduce the model's own logits (paper §3.3), SA off = the GAP formula, files written."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from builders import write_images
from spanet.viz.cam import cam_spread, image_cams, normalise, run_cam, without_attention
from spanet.errors import SpanetError
from spanet.model import SPANet

NUM_CLASSES = 5


def _tiny_model(**switches: bool | str) -> SPANet:
    """resnet18 SPANet with non-trivial BN statistics and classifier weights, so folding and masks matter."""
    torch.manual_seed(0)
    model = SPANet(num_classes=NUM_CLASSES, backbone="resnet18", **switches)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.3, 0.3)
        for linear in [*model.part_classifiers, model.global_classifier, *(h.classifier for h in model.ds_heads)]:
            linear.weight.normal_(0.0, 0.1)
            linear.bias.normal_(0.0, 0.1)
    return model.eval()


def _image(seed: int = 0) -> torch.Tensor:
    return torch.randn(3, 64, 32, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("sa_pooling", ["mean", "sum"])
@pytest.mark.parametrize("switches", [{}, {"sa_parts": True}, {"sa_ds": False}, {"parts": False}],
                         ids=["paper", "sa1", "no-sa", "baseline"])
def test_cam_reduces_to_the_model_logit(switches: dict, sa_pooling: str) -> None:
    """With SA the CAM reduces by the layer's pooling (mean or sum) to logit − offset, without SA its mean does (the
    global head's map is scaled to sum to it under SA1); offsets are plain biases for DS heads."""
    model = _tiny_model(**switches, sa_pooling=sa_pooling)
    image = _image()
    with torch.no_grad():
        output = model(image[None])
    for target in (None, 3):
        cams = image_cams(model, image, target=target)
        c = cams.target
        assert c == (int(output.global_logits[0].argmax()) if target is None else target)
        expected = {f"stage{k + 1}": logits[0, c] for k, logits in enumerate(output.ds_logits)}
        expected.update({f"part{i}": logits[0, c] for i, logits in enumerate(output.part_logits)})
        expected["global"] = output.global_logits[0, c]
        assert set(expected) <= set(cams.heads)
        for name, logit in expected.items():
            head = cams.heads[name]
            attended = name.startswith("stage") and model.ds_heads[0].sa_ds is not None
            attended = attended or (not name.startswith("stage") and model.sa_parts is not None)
            want = ("sum" if name == "global" else sa_pooling) if attended else "mean"
            assert head.reduce == want, name
            reduced = head.cam.sum() if want == "sum" else head.cam.mean()
            assert float(reduced) + head.offset == pytest.approx(float(logit), abs=1e-4), name
            if name.startswith("stage"):
                k = int(name[-1]) - 1
                assert head.offset == pytest.approx(float(model.ds_heads[k].classifier.bias[c].detach()), abs=1e-6)


def test_stage4_needs_the_relu_mask() -> None:
    """Dropping the ReLU mask (composing as if the head were linear) breaks the identity: the test can fail."""
    model = _tiny_model()
    image = _image(1)
    cams = image_cams(model, image)
    c = cams.target
    last = model.forward_features(image[None])[3]
    pooled = model.pool_parts(last)[0]
    bn = model.part_reduce.bn
    s = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    pre = (pooled @ model.part_reduce.conv.weight.flatten(1).T) * s + bn.bias - s * bn.running_mean
    assert (pre < 0).any(), "the test needs some inactive ReLU units"
    unmasked = (model.part_classifiers[0].weight[c] * s) @ model.part_reduce.conv.weight.flatten(1)
    start, end = cams.heads["part0"].rows
    naive = torch.einsum("k,khw->hw", unmasked, last[0][:, start:end]).detach()
    assert not torch.allclose(naive, cams.heads["part0"].cam, atol=1e-4)


def test_sa_off_variant_is_the_gap_formula_with_the_same_weights() -> None:
    model = _tiny_model(sa_parts=True)
    plain = without_attention(model)
    assert model.ds_heads[0].sa_ds is not None  # the input model is untouched
    image = _image(2)
    cams = image_cams(plain, image, target=2)
    with torch.no_grad():
        maps = model.forward_features(image[None])
    for k, head in enumerate(model.ds_heads):
        weight = head.classifier.weight[2] @ head.reduce.weight.flatten(1)  # w^c = W2[c] @ W1
        formula = torch.einsum("k,khw->hw", weight, maps[k][0])  # M_c = Σ_k w_k f_k, no attention
        assert torch.allclose(cams.heads[f"stage{k + 1}"].cam, formula, atol=1e-5)
        assert cams.heads[f"stage{k + 1}"].reduce == "mean"
    # same weights, SA off == a model built without SA layers, loaded with the same state dict
    rebuilt = SPANet(num_classes=NUM_CLASSES, backbone="resnet18", sa_ds=False).eval()
    rebuilt.load_state_dict(model.state_dict())
    with torch.no_grad():
        expected, got = rebuilt(image[None]), plain(image[None])
    for a, b in zip([*expected.ds_logits, *expected.part_logits, expected.global_logits],
                    [*got.ds_logits, *got.part_logits, got.global_logits]):
        assert torch.allclose(a, b, atol=1e-5)


def test_spread_measures() -> None:
    flat = np.ones((8, 4))
    spot = np.zeros((8, 4))
    spot[3, 1] = 2.0
    assert cam_spread(flat) == pytest.approx({"area_above_half": 1.0, "entropy": 1.0, "rows_above_half": 1.0})
    assert cam_spread(spot) == pytest.approx({"area_above_half": 1 / 32, "entropy": 0.0, "rows_above_half": 1 / 8})
    half = np.zeros((8, 4))
    half[:4] = 1.0
    measured = cam_spread(half - 0.5)  # negative values count as no evidence
    assert measured["area_above_half"] == pytest.approx(0.5)
    assert measured["entropy"] == pytest.approx(np.log(16) / np.log(32))
    assert cam_spread(-flat)["area_above_half"] == 0.0
    assert normalise(np.array([[-3.0, 1.0], [2.0, 4.0]])).tolist() == [[0.0, 0.25], [0.5, 1.0]]
    with pytest.raises(SpanetError):
        cam_spread(np.ones(5))




def test_run_cam_writes_figures_and_spread(tmp_path: Path) -> None:
    images = write_images(tmp_path / "imgs", ["0007_c1s1_000001_01.jpg", "0042_c2s1_000002_01.jpg"])
    model = _tiny_model()
    summary = run_cam(model, images, out_dir=tmp_path / "cam", input_size=(64, 32), class_mode="true",
                      labels_by_pid={7: 4}, stages=["stage2", "global"], progress=False)
    assert [p.name for p in summary.figures] == ["cam_0000_0007_c1s1_000001_01.png", "cam_0001_0042_c2s1_000002_01.png"]
    for path in summary.figures:
        with Image.open(path) as im:
            assert im.width > 100 and im.height > 100
    data = json.loads((tmp_path / "cam" / "spread.json").read_text())
    assert data["variants"]["without_sa"] == "same weights, SA off"
    assert {(r["stage"], r["variant"]) for r in data["summary"]} == {
        (s, v) for s in ("stage2", "global") for v in ("with_sa", "without_sa")}
    first = [r for r in data["records"] if r["image"].endswith("0007_c1s1_000001_01.jpg")]
    assert {r["class"] for r in first} == {4} and first[0]["class_source"].startswith("true")
    second = [r for r in data["records"] if r["image"].endswith("0042_c2s1_000002_01.jpg")]
    assert second[0]["class_source"] == "predicted"
    assert "1 of 2 images used the predicted class" in data["class_note"]
    assert len((tmp_path / "cam" / "spread.csv").read_text().splitlines()) == 1 + 2 * 2 * 2


def test_run_cam_with_compare_model_and_errors(tmp_path: Path) -> None:
    images = write_images(tmp_path / "imgs", ["a.png"])
    summary = run_cam(_tiny_model(), images, out_dir=tmp_path / "cam", input_size=(64, 32),
                      compare_model=_tiny_model(sa_ds=False), compare_label="no_sa.pt", progress=False)
    assert summary.variants["without_sa"] == "without SA: no_sa.pt"
    assert len(summary.figures) == 1
    # Poor: a --compare model WITH attention was labelled "without SA"
    with pytest.warns(UserWarning, match="has spatial attention as well"):
        summary = run_cam(_tiny_model(), images, out_dir=tmp_path / "cam2", input_size=(64, 32),
                          compare_model=_tiny_model(), compare_label="also_sa.pt", progress=False)  # fmt: skip
    assert summary.variants["without_sa"] == "also_sa.pt (also with SA)"
    with pytest.raises(SpanetError, match="unknown"):
        run_cam(_tiny_model(), images, out_dir=tmp_path / "x", input_size=(64, 32), stages=["stage9"])
    other = SPANet(num_classes=NUM_CLASSES + 1, backbone="resnet18", sa_ds=False).eval()
    with pytest.raises(SpanetError, match="other.pt has 6 classes, the model 5; compare models trained on the same"):
        run_cam(_tiny_model(), images, out_dir=tmp_path / "y", input_size=(64, 32), compare_model=other,
                compare_label="other.pt", progress=False)

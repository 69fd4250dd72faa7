"""Named cross-entropy terms per head and the paper / official weightings."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from spanet.errors import SpanetError
from spanet.losses import classification_terms, weigh_terms
from spanet.model import SPANetOutput

CLASSES = 7


def _output(
    *, ds: bool, parts: bool, batch: int = 4, seed: int = 0, dtype: torch.dtype = torch.float32
) -> SPANetOutput:
    generator = torch.Generator().manual_seed(seed)

    def logits() -> torch.Tensor:
        return (torch.randn(batch, CLASSES, generator=generator) * 3).to(dtype).requires_grad_(True)

    num_parts = 6 if parts else 1
    return SPANetOutput(
        ds_logits=[logits() for _ in range(3)] if ds else [],
        part_logits=[logits() for _ in range(6)] if parts else [],
        global_logits=logits(),
        part_features=torch.rand(batch, num_parts, 16),
        reduced_features=torch.rand(batch, num_parts, 8),
        global_feature=torch.rand(batch, 8),
    )


TARGETS = torch.tensor([0, 3, 6, 2])


@pytest.mark.parametrize(
    ("ds", "parts", "names"),
    [
        (True, True, ["ds1", "ds2", "ds3", "part1", "part2", "part3", "part4", "part5", "part6", "global"]),
        (True, False, ["ds1", "ds2", "ds3", "global"]),
        (False, True, ["part1", "part2", "part3", "part4", "part5", "part6", "global"]),
        (False, False, ["global"]),
    ],
)
def test_one_named_term_per_head_equal_to_its_cross_entropy(ds: bool, parts: bool, names: list[str]) -> None:
    output = _output(ds=ds, parts=parts)
    terms = classification_terms(output, TARGETS)
    assert list(terms) == names
    heads = [*output.ds_logits, *output.part_logits, output.global_logits]
    for name, logits in zip(names, heads):
        torch.testing.assert_close(terms[name], F.cross_entropy(logits, TARGETS))


def test_paper_weighting_formula() -> None:
    terms = classification_terms(_output(ds=True, parts=True), TARGETS)
    parts = sum(terms[f"part{i}"] for i in range(1, 7))
    others = terms["ds1"] + terms["ds2"] + terms["ds3"] + terms["global"]
    torch.testing.assert_close(weigh_terms(terms), 0.8 * parts + 0.2 * others)
    torch.testing.assert_close(weigh_terms(terms, weighting="paper"), 0.8 * parts + 0.2 * others)


def test_paper_weighting_with_parts_but_no_deep_supervision() -> None:
    terms = classification_terms(_output(ds=False, parts=True), TARGETS)
    expected = 0.8 * sum(terms[f"part{i}"] for i in range(1, 7)) + 0.2 * terms["global"]
    torch.testing.assert_close(weigh_terms(terms), expected)


def test_paper_weighting_without_parts_is_the_plain_sum() -> None:
    baseline = classification_terms(_output(ds=False, parts=False), TARGETS)
    torch.testing.assert_close(weigh_terms(baseline), baseline["global"])
    with_ds = classification_terms(_output(ds=True, parts=False), TARGETS)
    torch.testing.assert_close(weigh_terms(with_ds), sum(with_ds.values()))


def test_official_weighting_is_the_unweighted_sum() -> None:
    terms = classification_terms(_output(ds=True, parts=True), TARGETS)
    total = weigh_terms(terms, weighting="official")
    torch.testing.assert_close(total, sum(terms.values()))
    assert not torch.allclose(total, weigh_terms(terms, weighting="paper"))


def test_means_weighting_is_the_formula_the_official_trainer_logs() -> None:
    terms = classification_terms(_output(ds=True, parts=True), TARGETS)
    parts = sum(terms[f"part{i}"] for i in range(1, 7)) / 6
    others = (terms["ds1"] + terms["ds2"] + terms["ds3"] + terms["global"]) / 4
    torch.testing.assert_close(weigh_terms(terms, weighting="means"), 0.8 * parts + 0.2 * others)
    baseline = classification_terms(_output(ds=True, parts=False), TARGETS)
    torch.testing.assert_close(weigh_terms(baseline, weighting="means"), sum(baseline.values()) / 4)


def test_loss_back_propagates_to_every_head() -> None:
    output = _output(ds=True, parts=True)
    weigh_terms(classification_terms(output, TARGETS)).backward()
    for logits in [*output.ds_logits, *output.part_logits, output.global_logits]:
        assert logits.grad is not None and logits.grad.abs().sum() > 0


def test_label_smoothing_is_passed_through_and_off_by_default() -> None:
    output = _output(ds=False, parts=False)
    plain = classification_terms(output, TARGETS)["global"]
    smoothed = classification_terms(output, TARGETS, label_smoothing=0.1)["global"]
    torch.testing.assert_close(plain, F.cross_entropy(output.global_logits, TARGETS))
    torch.testing.assert_close(smoothed, F.cross_entropy(output.global_logits, TARGETS, label_smoothing=0.1))
    assert not torch.allclose(plain, smoothed)


def test_low_precision_logits_give_a_float32_loss() -> None:
    output = _output(ds=True, parts=True, dtype=torch.bfloat16)
    terms = classification_terms(output, TARGETS)
    assert all(term.dtype == torch.float32 for term in terms.values())
    torch.testing.assert_close(terms["global"], F.cross_entropy(output.global_logits.float(), TARGETS))


def test_mistakes_are_user_errors() -> None:
    terms = classification_terms(_output(ds=False, parts=False), TARGETS)
    with pytest.raises(SpanetError, match="weighting"):
        weigh_terms(terms, weighting="average")  # type: ignore[arg-type]
    with pytest.raises(SpanetError, match="triplet"):
        weigh_terms({**terms, "triplet": terms["global"]})
    with pytest.raises(SpanetError, match="label_smoothing"):
        classification_terms(_output(ds=False, parts=False), TARGETS, label_smoothing=1.5)

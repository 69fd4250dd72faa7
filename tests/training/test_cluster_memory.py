"""The cluster memory of `spanet adapt --memory-weight`: its contrastive term and its momentum update."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from spanet.errors import SpanetError
from spanet.training.cluster_memory import ClusterMemory, memory_features


def test_memory_features_are_the_retrieval_parts_feature_at_unit_length() -> None:
    from spanet.model import SPANet

    model = SPANet(backbone="resnet18", pretrained=None, num_classes=3).eval()
    with torch.no_grad():
        images = torch.randn(2, 3, 96, 48)
        features = memory_features(model(images).part_features)
        parts = model.embed(images, kind="parts")
    torch.testing.assert_close(features.norm(dim=1), torch.ones(2))
    torch.testing.assert_close(features, F.normalize(parts, dim=1))


def test_loss_prefers_the_own_cluster_and_update_moves_only_batch_clusters() -> None:
    centroids = torch.eye(4)[:3] * 2.0  # three clusters along three axes (normalised by the memory)
    memory = ClusterMemory(centroids, temperature=0.05, momentum=0.5)
    features = torch.eye(4)[[0, 0, 1]]
    own, other = memory.loss(features, torch.tensor([0, 0, 1])), memory.loss(features, torch.tensor([1, 1, 0]))
    assert own < 1e-3 < other
    moved = F.normalize(torch.tensor([[1.0, 0.0, 0.0, 1.0]]), dim=1)  # cluster 0's two crops, both the same new way
    memory.update(torch.cat([moved, moved]), torch.tensor([0, 0]))
    expected = F.normalize(0.5 * torch.eye(4)[0] + 0.5 * moved[0], dim=0)
    torch.testing.assert_close(memory.vectors[0], expected)
    torch.testing.assert_close(memory.vectors[1:], torch.eye(4)[1:3])  # untouched: not in the batch
    restored = ClusterMemory.from_state_dict(memory.state_dict())
    assert torch.equal(restored.vectors, memory.vectors) and restored.momentum == 0.5


def test_bad_memory_settings_are_one_clear_error() -> None:
    with pytest.raises(SpanetError, match="clusters >= 2"):
        ClusterMemory(torch.ones(1, 4))
    with pytest.raises(SpanetError, match="temperature > 0"):
        ClusterMemory(torch.eye(3), temperature=0.0)

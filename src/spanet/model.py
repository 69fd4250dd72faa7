"""SPANet (paper §3.1, Fig. 3): a ResNet with deep supervision, PCB part classifiers and parameter-free attention.

Structure (attribute names are a contract: `spanet.viz.cam` walks them to compose the linear maps from a pooled feature
to the logits):

- `backbone`: torchvision's ResNet layers `conv1, bn1, relu, maxpool, layer1..layer4` (no `avgpool`, no `fc`), the
  first block of `layer4` with stride 1 (PCB), so a 384×128 input gives a 24×8 stage-4 map.
- `ds_heads[k]` (k = 0, 1, 2 for stages 1–3, only with `deep_supervision`): `.sa_ds` (`SpatialAttention` or
  None; SA2), then pooling, `.reduce` (1×1 `Conv2d` C_k→256, no bias, applied to the pooled vector) and `.classifier`
  (`Linear(256, classes)`). This is the official code's structure; the paper only says "GAP followed by a
  fully-connected layer". The 1×1 conv is linear, so `classifier.weight @ reduce.weight.flatten(1)` maps the pooled
  C_k-d vector to the logits.
- Stage 4: `sa_parts` (SA1 or None) pools each of the `num_parts` horizontal stripes (attention computed within
  the stripe, so each part vector is a weighted average of its stripe); `part_dropout`; `part_reduce` =
  (`.conv` 1×1 C4→256 no bias, `.bn`, `.relu`) shared by all parts; `part_classifiers[i]` (one `Linear` per part);
  `global_classifier` on the mean of the reduced part vectors (the paper's main loss).
- Baseline (`parts=False`): the same stage-4 head with ONE stripe (the whole map): pooling (GAP, or SA1-weighted)
  → dropout → 1×1 conv C4→256 + BN + ReLU → `global_classifier`; no part classifiers. The paper's "1×1 conv 2048→256,
  GAP, classifier" convolves before pooling; without BN/ReLU in between the order would not matter, and pooling
  first makes the baseline exactly the one-stripe case of the part head, so Table 2's rows differ only by their
  switches.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor, nn

from spanet.attention import ATTENTION_MODES, SpatialAttention, attention_pool, is_channels_last, pool_positions
from spanet.errors import SpanetError

__all__ = [
    "BACKBONES",
    "HEAD_INITS",
    "EMBEDDING_KINDS",
    "DeepSupervisionHead",
    "SPANet",
    "SPANetEmbedder",
    "SPANetOutput",
    "stripe_bounds",
]

BACKBONES: tuple[str, ...] = ("resnet18", "resnet34", "resnet50", "resnet101")
EMBEDDING_KINDS: tuple[str, ...] = ("parts", "reduced", "global")
HEAD_INITS: tuple[str, ...] = ("spanet", "official")
_BACKBONE_LAYERS: tuple[str, ...] = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4")


@dataclass
class SPANetOutput:
    """Everything one forward pass produces, in training and evaluation alike (losses are computed outside).

    `ds_logits`: stages 1–3 (empty without deep supervision); `part_logits`: one per stripe (empty for the baseline);
    `global_logits`: the main classifier. `part_features` (B, P, C4): pooled stripes before dropout and reduction
    (P = 1 for the baseline); `reduced_features` (B, P, 256): after conv+BN+ReLU; `global_feature` (B, 256): their mean.
    """

    ds_logits: list[Tensor]
    part_logits: list[Tensor]
    global_logits: Tensor
    part_features: Tensor
    reduced_features: Tensor
    global_feature: Tensor


def stripe_bounds(height: int, parts: int) -> list[tuple[int, int]]:
    """Row ranges [start, end) of `parts` horizontal stripes, with adaptive pooling's boundaries.

    Works for any height (stripes overlap when the map has fewer rows than parts, as adaptive pooling does); plain
    slices with static bounds keep ONNX export simple with a dynamic batch.
    """
    return [((i * height) // parts, -((-(i + 1) * height) // parts)) for i in range(parts)]


class DeepSupervisionHead(nn.Module):
    """[SA] → pooling → 1×1 conv C_k→256 (no bias) → Linear: one auxiliary classifier on an intermediate stage."""

    def __init__(
        self, *, in_channels: int, reduced_dim: int, num_classes: int, sa_ds: SpatialAttention | None
    ) -> None:
        super().__init__()
        self.sa_ds = sa_ds
        self.reduce = nn.Conv2d(in_channels, reduced_dim, kernel_size=1, bias=False)
        self.classifier = nn.Linear(reduced_dim, num_classes)

    def forward(self, stage_map: Tensor) -> Tensor:
        pooled = attention_pool(stage_map, self.sa_ds)  # (B, C_k, H, W) -> (B, C_k)
        reduced = self.reduce(pooled[:, :, None, None]).flatten(1)  # (B, C_k, 1, 1) -> (B, 256)
        return self.classifier(reduced)  # (B, num_classes)


class SPANet(nn.Module):
    """The paper's network; the switches give every row of Table 2 (`spanet.training.ablation.ROWS` names them).

    `pretrained`: None (random init), "imagenet" (torchvision's IMAGENET1K_V1 weights, downloaded) or the path of a
    local torchvision-format ResNet state dict (e.g. resnet50-0676ba61.pth). `sa_ds` has no effect without
    `deep_supervision` (it is the attention on the DS branches). `sa_pooling` is how every SA layer pools: "mean"
    (paper and official code, `(1/HW) Σ A F`) or "sum" (`Σ A F`; checkpoints from before the switch). `head_init`:
    "spanet" (Kaiming for every head conv) or "official" (the official code: PyTorch's default init for the DS 1×1
    convs, Kaiming for the part conv); classifiers are N(0, 0.001) with zero bias in both.
    """

    def __init__(
        self,
        *,
        num_classes: int,
        backbone: str = "resnet50",
        pretrained: str | None = None,
        parts: bool = True,
        deep_supervision: bool = True,
        sa_ds: bool = True,
        sa_parts: bool = False,
        attention: str = "softmax",
        sa_pooling: str = "mean",
        head_init: str = "spanet",
        num_parts: int = 6,
        reduced_dim: int = 256,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        if backbone not in BACKBONES:
            raise SpanetError(f"model.backbone {backbone!r} is unknown; use one of {', '.join(BACKBONES)}")
        if attention not in ATTENTION_MODES:
            raise SpanetError(f"model.attention {attention!r} is unknown; use one of {', '.join(ATTENTION_MODES)}")
        for name, value in (("num_classes", num_classes), ("num_parts", num_parts), ("reduced_dim", reduced_dim)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise SpanetError(f"model {name} must be a positive integer, got {value!r}")
        if not 0.0 <= dropout < 1.0:
            raise SpanetError(f"model.dropout must be in [0, 1), got {dropout!r}")
        if head_init not in HEAD_INITS:
            raise SpanetError(f"model.head_init {head_init!r} is unknown; use one of {', '.join(HEAD_INITS)}")
        self.num_classes = num_classes
        self.parts = parts
        self.num_parts = num_parts if parts else 1

        resnet = getattr(torchvision.models, backbone)(weights=None)
        _set_last_stage_stride_one(resnet.layer4[0])
        self.backbone = nn.Sequential(OrderedDict((name, getattr(resnet, name)) for name in _BACKBONE_LAYERS))
        expansion = type(resnet.layer1[0]).expansion
        self.stage_channels: tuple[int, ...] = tuple(width * expansion for width in (64, 128, 256, 512))
        last_channels = self.stage_channels[-1]

        self.ds_heads = nn.ModuleList()
        if deep_supervision:
            for channels in self.stage_channels[:3]:
                head_attention = SpatialAttention(attention, pooling=sa_pooling) if sa_ds else None  # type: ignore[arg-type]
                self.ds_heads.append(
                    DeepSupervisionHead(
                        in_channels=channels, reduced_dim=reduced_dim, num_classes=num_classes, sa_ds=head_attention
                    )
                )
        self.sa_parts = SpatialAttention(attention, pooling=sa_pooling) if sa_parts else None  # type: ignore[arg-type]
        self.part_dropout = nn.Dropout(p=dropout)
        self.part_reduce = nn.Sequential(
            OrderedDict(
                conv=nn.Conv2d(last_channels, reduced_dim, kernel_size=1, bias=False),
                bn=nn.BatchNorm2d(reduced_dim),
                relu=nn.ReLU(inplace=True),
            )
        )
        self.part_classifiers = nn.ModuleList(
            nn.Linear(reduced_dim, num_classes) for _ in range(num_parts if parts else 0)
        )
        self.global_classifier = nn.Linear(reduced_dim, num_classes)
        self._init_head(head_init)
        if pretrained not in (None, "", "none"):
            _load_backbone_weights(self.backbone, pretrained=str(pretrained), backbone=backbone)

    def _init_head(self, head_init: str) -> None:
        """Convs: Kaiming (fan_out, as torchvision) — with "official", the DS 1×1 convs keep PyTorch's default init as
        in the official code; BN: 1/0; classifiers: N(0, 0.001), bias 0 (PCB and the official code alike)."""
        for name, module in self.named_modules():
            if name.startswith("backbone") or (head_init == "official" and name.startswith("ds_heads")
                                               and isinstance(module, nn.Conv2d)):
                continue
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=0.001)
                nn.init.zeros_(module.bias)

    def backbone_parameters(self) -> Iterator[nn.Parameter]:
        """The ImageNet-pretrainable layers (trained at a lower learning rate)."""
        return self.backbone.parameters()

    def head_parameters(self) -> Iterator[nn.Parameter]:
        """Every parameter outside `backbone` (disjoint from `backbone_parameters`, together all of them)."""
        return (param for name, param in self.named_parameters() if not name.startswith("backbone."))

    def forward_features(self, x: Tensor) -> list[Tensor]:
        """The four stage maps; for 384×128 with ResNet-50: 96×32×256, 48×16×512, 24×8×1024, 24×8×2048."""
        b = self.backbone
        x = b.maxpool(b.relu(b.bn1(b.conv1(x))))  # (B, 3, H, W) -> (B, 64, H/4, W/4)
        maps = []
        for layer in (b.layer1, b.layer2, b.layer3, b.layer4):
            x = layer(x)
            maps.append(x)
        return maps

    def pool_parts(self, last_map: Tensor) -> Tensor:
        """Stage-4 map -> one vector per stripe: (B, C4, H, W) -> (B, P, C4); SA1 (if on) works within each stripe."""
        if self.sa_parts is None:  # plain stripe means: one op, 2-6x faster forward+backward than P slices
            return F.adaptive_avg_pool2d(last_map, (self.num_parts, 1)).flatten(2).transpose(1, 2)
        height = int(last_map.shape[2])  # static: stripe bounds are Python ints, traced as constants
        bounds = stripe_bounds(height, self.num_parts)
        if is_channels_last(last_map):  # slice rows of the (B, H, W, C4) view, so gradients keep the layout
            rows_first = last_map.permute(0, 2, 3, 1)
            stripes = [rows_first[:, start:end].flatten(1, 2) for start, end in bounds]  # (B, rows·W, C4)
            channel_dim = 2
        else:
            stripes = [last_map[:, :, start:end].flatten(2) for start, end in bounds]  # (B, C4, rows·W)
            channel_dim = 1
        pooled = [pool_positions(stripe, self.sa_parts, channel_dim=channel_dim) for stripe in stripes]
        return torch.stack(pooled, dim=1)  # P × (B, C4) -> (B, P, C4)

    def reduce_parts(self, part_features: Tensor, *, dropout: bool = True) -> Tensor:
        """Shared 1×1 conv + BN + ReLU on every part: (B, P, C4) -> (B, P, 256); dropout first when asked."""
        if dropout:
            part_features = self.part_dropout(part_features)
        as_map = part_features.transpose(1, 2).unsqueeze(-1)  # (B, P, C4) -> (B, C4, P, 1), BN sees B·P samples
        return self.part_reduce(as_map).squeeze(-1).transpose(1, 2)  # (B, 256, P, 1) -> (B, P, 256)

    def forward(self, x: Tensor) -> SPANetOutput:
        maps = self.forward_features(x)
        ds_logits = [head(stage_map) for head, stage_map in zip(self.ds_heads, maps[:3])]
        part_features = self.pool_parts(maps[3])  # (B, P, C4)
        reduced = self.reduce_parts(part_features)  # (B, P, 256)
        part_logits = [classifier(reduced[:, i]) for i, classifier in enumerate(self.part_classifiers)]
        global_feature = reduced.mean(dim=1)  # (B, P, 256) -> (B, 256)
        return SPANetOutput(
            ds_logits=ds_logits,
            part_logits=part_logits,
            global_logits=self.global_classifier(global_feature),
            part_features=part_features,
            reduced_features=reduced,
            global_feature=global_feature,
        )

    def embed(self, x: Tensor, *, kind: Literal["parts", "reduced", "global"] = "parts") -> Tensor:
        """Retrieval feature (B, D), no dropout; call in eval mode (BN running statistics).

        "parts": the P stripe features before the 1×1 conv, each L2-normalised, concatenated (P·C4: 12288 for
        ResNet-50; for the baseline the single pooled C4 vector); "reduced": the P reduced vectors likewise (P·256);
        "global": their mean, L2-normalised (256).
        """
        if kind not in EMBEDDING_KINDS:
            raise SpanetError(f"embedding kind {kind!r} is unknown; use one of {', '.join(EMBEDDING_KINDS)}")
        part_features = self.pool_parts(self.forward_features(x)[3])  # (B, P, C4)
        if kind == "parts":
            return F.normalize(part_features, dim=-1).flatten(1)
        reduced = self.reduce_parts(part_features, dropout=False)  # (B, P, 256)
        if kind == "reduced":
            return F.normalize(reduced, dim=-1).flatten(1)
        return F.normalize(reduced.mean(dim=1), dim=-1)

    @torch.no_grad()
    def attention_spread(self, x: Tensor) -> dict[str, dict[str, float]]:
        """How spread out every SA layer's attention is on the batch `x`: per layer ("ds1".."ds3", "part1"..), the
        mean effective number of positions `1/Σ_p A_p²` (H·W when uniform, 1 when one-hot) and its fraction of H·W.

        Softmax over sums of hundreds of activations is often nearly one-hot; logging this shows collapse as it
        happens. Call in eval mode; returns {} for a model without SA.
        """
        maps = self.forward_features(x)
        layers = [(f"ds{k}", head.sa_ds, stage_map) for k, (head, stage_map) in enumerate(zip(self.ds_heads, maps), 1)]
        if self.sa_parts is not None:
            bounds = stripe_bounds(maps[3].shape[2], self.num_parts)
            layers += [(f"part{i}", self.sa_parts, maps[3][:, :, s:e]) for i, (s, e) in enumerate(bounds, 1)]
        spread = {}
        for name, layer, stage_map in layers:
            if layer is None:
                continue
            weights = layer.attention_map(stage_map).flatten(1).float()  # (B, 1, H, W) -> (B, H·W)
            positions = float((1.0 / weights.square().sum(dim=1)).mean())
            spread[name] = {"positions": positions, "fraction": positions / weights.shape[1]}
        return spread

    def embedding_dim(self, kind: Literal["parts", "reduced", "global"] = "parts") -> int:
        """Length of `embed(x, kind=kind)` rows."""
        reduced_dim = self.global_classifier.in_features
        return {
            "parts": self.num_parts * self.stage_channels[-1],
            "reduced": self.num_parts * reduced_dim,
            "global": reduced_dim,
        }[kind]


class SPANetEmbedder(nn.Module):
    """`forward(x) = model.embed(x, kind=kind)`: a module to hand to `torch.onnx.export` or `torch.jit.trace`."""

    def __init__(self, model: SPANet, *, kind: Literal["parts", "reduced", "global"] = "parts") -> None:
        super().__init__()
        if kind not in EMBEDDING_KINDS:
            raise SpanetError(f"embedding kind {kind!r} is unknown; use one of {', '.join(EMBEDDING_KINDS)}")
        self.model = model
        self.kind = kind

    def forward(self, x: Tensor) -> Tensor:
        return self.model.embed(x, kind=self.kind)  # type: ignore[arg-type]


def _set_last_stage_stride_one(block: nn.Module) -> None:
    """PCB: the first block of stage 4 keeps the resolution (stride 1 in its strided conv and its downsample)."""
    strided_conv = block.conv2 if isinstance(block, torchvision.models.resnet.Bottleneck) else block.conv1
    strided_conv.stride = (1, 1)
    block.downsample[0].stride = (1, 1)
    block.stride = 1


def _load_backbone_weights(trunk: nn.Module, *, pretrained: str, backbone: str) -> None:
    """Fill `trunk` from torchvision's ImageNet weights ("imagenet") or a local state-dict file; `fc.*` is ignored."""
    weights = torchvision.models.get_model_weights(backbone)["IMAGENET1K_V1"]
    file_name = weights.url.rsplit("/", 1)[-1]
    if pretrained == "imagenet":
        source = weights.url
        try:
            state = weights.get_state_dict(progress=True, check_hash=True)
        except (OSError, RuntimeError, ValueError) as error:  # no network, SSL, proxy, bad hash
            raise SpanetError(
                f"model.pretrained=imagenet: could not download {weights.url} ({type(error).__name__}: {error}); "
                f"download that file on a machine with network and pass model.pretrained=/path/to/{file_name}"
            ) from None
    else:
        source = pretrained
        state = _read_state_dict(Path(pretrained), hint=f"e.g. {weights.url}")
    state = {key: value for key, value in state.items() if not key.startswith("fc.")}
    expected = trunk.state_dict()
    # old torchvision files lack BN's num_batches_tracked; BatchNorm fills it in when loading
    missing = [key for key in expected if key not in state and not key.endswith("num_batches_tracked")]
    unexpected = [key for key in state if key not in expected]
    wrong_shape = [key for key in expected if key in state and state[key].shape != expected[key].shape]
    if missing or unexpected or wrong_shape:
        labelled = (("missing keys", missing), ("unexpected keys", unexpected), ("wrong shapes", wrong_shape))
        problems = [
            f"{label} {', '.join(keys[:5])}{' …' if len(keys) > 5 else ''} ({len(keys)})"
            for label, keys in labelled
            if keys
        ]
        raise SpanetError(
            f"pretrained weights {source} do not fit a torchvision {backbone}: {'; '.join(problems)}; "
            f"pass a torchvision {backbone} state dict such as {file_name}"
        )
    trunk.load_state_dict(state, strict=False)


def _read_state_dict(path: Path, *, hint: str) -> dict[str, Tensor]:
    """A local torchvision-format state dict, read with `weights_only=True` (no arbitrary code from the file)."""
    if not path.is_file():
        raise SpanetError(
            f"model.pretrained: file {path} does not exist; "
            f"pass none, imagenet or a torchvision ResNet state dict ({hint})"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 -- any unreadable file is the user's to fix
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise SpanetError(f"model.pretrained: {path} is not a readable PyTorch state dict ({first_line})") from None
    if not isinstance(state, dict) or not all(isinstance(value, Tensor) for value in state.values()):
        raise SpanetError(
            f"model.pretrained: {path} does not hold a plain state dict of tensors; pass a torchvision ResNet "
            "state dict (a spanet checkpoint is loaded with spanet.checkpoint.load_model instead)"
        )
    return state

"""Why does "Backbone + DS + SA2" (no parts) diverge at lr 0.1? Train it step by step and record what grows.

Trains the Table 2 row `ds-sa2` with the CPU demo recipe (configs/cpu_demo.yaml, no random erasing, as
`spanet ablation` does) for a few epochs and, every step, records: the loss terms, the largest |logit| of every head,
the largest activation of each stage map, the effective number of positions 1/Σ A² of each SA layer, the gradient
norm of the backbone and of the heads, and the largest weight. It stops at the first non-finite value and says
where it appeared (forward or backward). One JSON line per step goes to --out.

    PYTHONPATH=src python scripts/probe_divergence.py --data-root DIR --out probe.jsonl \\
        --set model.sa_pooling=sum --set train.amp=bf16
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import torch

from spanet.runtime import choose_precision
from spanet.config import load_config
from spanet.data.datasets import load_dataset
from spanet.data.loader import build_train_loader, epoch_seed
from spanet.losses import classification_terms, weigh_terms
from spanet.training.loop import build_model
from spanet.training.optim import build_optimizer, set_learning_rate

ROW = ["model.parts=false", "model.deep_supervision=true", "model.sa_parts=false", "model.sa_ds=true", "data.erasing_p=0"]


def _grad_norm(parameters) -> float:
    norms = [p.grad.detach().float().norm() for p in parameters if p.grad is not None]
    return float(torch.stack(norms).norm()) if norms else 0.0


def _record(model, inputs, targets, *, config) -> tuple[dict, torch.Tensor]:
    """Forward with statistics; returns (record, loss)."""
    dtype = choose_precision(config.train.amp, torch.device("cpu")).dtype
    maps: list[torch.Tensor] = []
    hooks = [getattr(model.backbone, f"layer{i}").register_forward_hook(lambda m, i, o: maps.append(o)) for i in (1, 2, 3, 4)]
    with torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
        output = model(inputs)
        terms = classification_terms(output, targets)
        loss = weigh_terms(terms, weighting=config.loss.weighting)
    for hook in hooks:
        hook.remove()
    record = {
        "terms": {name: float(term) for name, term in terms.items()},
        "max_logit": {f"ds{k + 1}": float(lg.detach().float().abs().max()) for k, lg in enumerate(output.ds_logits)},
        "max_activation": [float(m.detach().float().max()) for m in maps],
        "effective_positions": [],
    }
    record["max_logit"]["global"] = float(output.global_logits.detach().float().abs().max())
    for head, stage_map in zip(model.ds_heads, maps[:3]):
        if head.sa_ds is not None:
            weights = head.sa_ds.attention_map(stage_map.detach()).float().flatten(1)
            record["effective_positions"].append(float((1.0 / weights.square().sum(dim=1)).mean()))
    return record, loss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", required=True)
    parser.add_argument("--config", default="configs/cpu_demo.yaml")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    config = load_config(args.config, [*ROW, f"data.root={args.data_root}", "data.dataset=synthetic",
                                       "data.num_workers=0", *args.overrides])  # fmt: skip
    dataset = load_dataset("synthetic", args.data_root)
    torch.manual_seed(config.train.seed)
    model = build_model(config.model, num_classes=dataset.num_train_ids)
    if choose_precision(config.train.amp, torch.device("cpu"), channels_last=config.train.channels_last).channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(model, config.optim)
    heads = [p for n, p in model.named_parameters() if not n.startswith("backbone.")]
    verdict = "finite"
    with args.out.open("w") as out:
        for epoch in range(args.epochs):
            torch.manual_seed(epoch_seed(config.train.seed, epoch, 0))
            loader = build_train_loader(dataset.train, config.data, seed=config.train.seed, epoch=epoch)
            steps = len(loader)
            for step, (inputs, targets, _c, _i) in enumerate(loader):
                lr = set_learning_rate(optimizer, epoch=epoch + step / steps, optim_config=config.optim) * config.optim.lr
                if config.train.channels_last:
                    inputs = inputs.contiguous(memory_format=torch.channels_last)
                model.train()
                record, loss = _record(model, inputs, targets, config=config)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                record.update(epoch=epoch + 1, step=step + 1, lr=lr, loss=float(loss),
                              grad_backbone=_grad_norm(model.backbone.parameters()), grad_heads=_grad_norm(heads))  # fmt: skip
                optimizer.step()
                record["max_weight"] = max(float(p.detach().abs().max()) for p in model.parameters())
                out.write(json.dumps(record) + "\n")
                out.flush()
                if not math.isfinite(record["loss"]):
                    verdict = f"non-finite loss (forward) at epoch {epoch + 1} step {step + 1}"
                elif not math.isfinite(record["grad_backbone"] + record["grad_heads"]):
                    verdict = f"non-finite gradient (backward) at epoch {epoch + 1} step {step + 1}"
                elif not math.isfinite(record["max_weight"]):
                    verdict = f"non-finite weights after the update at epoch {epoch + 1} step {step + 1}"
                if verdict != "finite":
                    break
            if verdict != "finite":
                break
    print(json.dumps({"overrides": args.overrides, "verdict": verdict}))


if __name__ == "__main__":
    main()

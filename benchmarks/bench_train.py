"""Training-step throughput (images/s): SPANet and torchreid's pcb_p6 in fp32, bf16 + channels_last and compiled fp32.

Run with the benchmark environment (it has torchreid 0.2.5):
    .venv-bench/bin/python benchmarks/bench_train.py
Every case is one forward + backward + SGD step (fused, as `spanet.training.optim.build_optimizer` uses) on random images with
random labels, in the same process with the same batch and input size: every case is warmed up, then timed in
interleaved rounds (median round reported). The paper size runs at batch 8 and at the paper's batch 48 (fp32 gets
slower per image at large batches on this CPU, bf16 does not, so the ratio depends on the batch). "SPANet without DS"
(deep_supervision=False: pcb_p6's computation plus SPANet's stripe pooling) shows what the three deeply supervised
heads cost. Compiled modes use `torch.compile(model)` (compilation is part of the warm-up, not timed).
Like the `spanet` command, the benchmark first makes glibc keep freed memory for reuse (`spanet.runtime`); both
models profit alike. `--release-memory` measures with glibc's default instead.
Writes benchmarks/results/train.json and .md (train_release_memory.* with --release-memory).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from spanet.runtime import retain_freed_memory

RESULTS = Path(__file__).resolve().parent / "results"

MODES = {
    "fp32": {"dtype": None, "channels_last": False, "compile": False},
    "bf16+channels_last": {"dtype": torch.bfloat16, "channels_last": True, "compile": False},
    "fp32 compiled": {"dtype": None, "channels_last": False, "compile": True},
}


def spanet_case(*, backbone: str, num_classes: int, deep_supervision: bool = True) -> tuple[nn.Module, Callable | None]:
    """SPANet with the paper's loss weighting; its step is `spanet.training.step.train_step` itself."""
    from spanet.model import SPANet

    model = SPANet(num_classes=num_classes, backbone=backbone, pretrained=None, deep_supervision=deep_supervision)
    return model, None


def pcb_case(*, num_classes: int) -> tuple[nn.Module, Callable]:
    from torchreid.reid.models import build_model

    model = build_model("pcb_p6", num_classes=num_classes, loss="softmax", pretrained=False)

    def loss_fn(output: list[torch.Tensor], targets: torch.Tensor) -> torch.Tensor:
        return sum(nn.functional.cross_entropy(logits, targets) for logits in output) / len(output)

    return model, loss_fn


def training_step(
    model: nn.Module, loss_fn: Callable | None, *, batch: int, height: int, width: int, num_classes: int, mode: str
) -> Callable[[], None]:
    """One full training step (forward, loss, backward, SGD update) on a fixed random batch, as a closure.

    `loss_fn=None` means SPANet: the closure calls spanet's own `train_step` (what `spanet train` runs). The peer
    gets the same sequence written out: autocast forward + loss, zero_grad, backward, fused SGD step.
    """
    from spanet.config import LossConfig, OptimConfig
    from spanet.training.loop import StepSettings, train_step

    settings = MODES[mode]
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(batch, 3, height, width, generator=generator)
    targets = torch.randint(0, num_classes, (batch,), generator=generator)
    if settings["channels_last"]:
        model = model.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    model.train()
    runner = torch.compile(model) if settings["compile"] else model
    optimizer = torch.optim.SGD(
        model.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=5e-4, fused=True
    )
    if loss_fn is None:
        step_settings = StepSettings(
            loss=LossConfig(weighting="paper"), optim=OptimConfig(), amp="bf16" if settings["dtype"] else "none",
            channels_last=settings["channels_last"],
        )  # fmt: skip

        def spanet_step() -> None:
            train_step(runner, optimizer, images, targets, settings=step_settings)

        return spanet_step

    def step() -> None:
        with torch.autocast("cpu", dtype=settings["dtype"] or torch.bfloat16, enabled=settings["dtype"] is not None):
            loss = loss_fn(runner(images), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def images_per_second(step: Callable[[], None], *, batch: int, steps: int) -> float:
    started = time.perf_counter()
    for _ in range(steps):
        step()
    return batch * steps / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, nargs="+", default=[8, 48], help="batch sizes at the paper size")
    parser.add_argument("--demo-batch", type=int, default=32, help="batch size at the demo size (cpu_demo.yaml: 32)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per case before the first round")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per case and round")
    parser.add_argument("--rounds", type=int, default=5, help="rounds over all cases; the median round is reported")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-large", action="store_true", help="only the demo size")
    parser.add_argument("--skip-demo", action="store_true", help="only the paper size")
    parser.add_argument("--no-compile", dest="compile", action="store_false", help="leave out the compiled mode")
    parser.add_argument("--stem", default="train", help="results file name (default train: results/train.json, .md)")
    parser.add_argument(
        "--release-memory", action="store_true", help="glibc's default allocator behaviour (spanet --release-memory)"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    retained = not args.release_memory and retain_freed_memory()
    num_classes = 751  # Market-1501 training identities
    sizes = [] if args.skip_large else [("paper", "resnet50", 384, 128, batch) for batch in args.batch]
    if not args.skip_demo:
        sizes.append(("demo", "resnet18", 96, 48, args.demo_batch))  # demo: configs/cpu_demo.yaml
    rows = []
    for size_name, backbone, height, width, batch in sizes:
        modes = [mode for mode in MODES if args.compile or not MODES[mode]["compile"]]
        cases = [(f"SPANet {backbone}", lambda b=backbone: spanet_case(backbone=b, num_classes=num_classes), modes)]
        if size_name == "paper":
            cases.append((f"SPANet without DS {backbone}", lambda b=backbone: spanet_case(
                backbone=b, num_classes=num_classes, deep_supervision=False), ["fp32", "bf16+channels_last"]))
            cases.append(("torchreid pcb_p6 (resnet50)", lambda: pcb_case(num_classes=num_classes), modes))
        steps = {}
        for name, build, modes in cases:
            for mode in modes:
                torch.manual_seed(0)
                model, loss_fn = build()
                step = training_step(
                    model, loss_fn, batch=batch, height=height, width=width, num_classes=num_classes, mode=mode
                )
                for _ in range(args.warmup):
                    step()
                steps[(name, mode)] = step
        # rounds interleave the cases, so a slow spell on a shared machine hits all of them alike
        speeds: dict[tuple[str, str], list[float]] = {key: [] for key in steps}
        for _ in range(args.rounds):
            for key, step in steps.items():
                speeds[key].append(images_per_second(step, batch=batch, steps=args.steps))
        for (name, mode), values in speeds.items():
            row = {
                "size": size_name, "input": f"{height}x{width}", "batch": batch, "model": name, "mode": mode,
                "images_per_s": statistics.median(values), "rounds": values,
            }  # fmt: skip
            rows.append(row)
            print(json.dumps(row), flush=True)
        del steps
    result = {
        "warmup_steps": args.warmup,
        "timed_steps": args.steps,
        "rounds": args.rounds,
        "threads": args.threads,
        "freed_memory_retained": retained,
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "rows": rows,
        "ratios": _ratios(rows),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = f"{args.stem}_release_memory" if args.release_memory else args.stem
    (RESULTS / f"{stem}.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / f"{stem}.md").write_text(_markdown(result))
    print(_markdown(result))


def _ratios(rows: list[dict]) -> dict[str, float]:
    """The goals, per input size and batch: SPANet >= 0.95x pcb_p6 per mode; fastest SPANet >= 2.5x pcb_p6 fp32."""
    ratios = {}
    for size, batch in dict.fromkeys((row["size"], row["batch"]) for row in rows):
        same = [row for row in rows if row["size"] == size and row["batch"] == batch]
        speed = {(_family(row["model"]), row["mode"]): row["images_per_s"] for row in same}
        where = f"{size}, batch {batch}"
        best = max(value for (model, _), value in speed.items() if model == "SPANet")
        fp32 = speed[("SPANet", "fp32")]
        ratios[f"{where}: fastest SPANet mode / SPANet fp32"] = best / fp32
        peer = "torchreid pcb_p6"
        for mode in MODES:
            if ("SPANet", mode) in speed and (peer, mode) in speed:
                ratios[f"{where}: SPANet / pcb_p6, {mode} (goal >= 0.95)"] = speed[("SPANet", mode)] / speed[(peer, mode)]
            if ("SPANet", mode) in speed and ("SPANet without DS", mode) in speed:
                ratios[f"{where}: SPANet / SPANet without DS heads, {mode}"] = (
                    speed[("SPANet", mode)] / speed[("SPANet without DS", mode)]
                )
        if (peer, "fp32") in speed:
            ratios[f"{where}: fastest SPANet mode / pcb_p6 fp32 (goal >= 2.5)"] = best / speed[(peer, "fp32")]
    return ratios


def _family(model: str) -> str:
    """"SPANet resnet50" -> "SPANet", "SPANet without DS resnet50" -> "SPANet without DS", peers keep their name."""
    return model.split(" (")[0] if model.startswith("torchreid") else model.rsplit(" ", 1)[0]


def _markdown(result: dict) -> str:
    lines = [
        f"Training-step throughput, {result['threads']} CPU threads, torch {result['torch']} "
        f"({result['warmup_steps']} warm-up steps, then {result['rounds']} interleaved rounds of {result['timed_steps']} "
        "timed steps per case, median round; random images, fused SGD; freed memory "
        f"{'retained for reuse' if result['freed_memory_retained'] else 'returned to the OS (glibc default)'}).",
        "",
        "| input | batch | model | mode | images/s |",
        "|---|---|---|---|---|",
    ]
    for row in result["rows"]:
        lines.append(
            f"| {row['input']} | {row['batch']} | {row['model']} | {row['mode']} | {row['images_per_s']:.2f} |"
        )
    lines.append("")
    for name, ratio in result["ratios"].items():
        lines.append(f"- {name}: **{ratio:.2f}×**")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()

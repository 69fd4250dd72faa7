"""Embedding throughput on CPU: images/s of a ResNet-50 SPANet at 384×128, several execution paths, same run.

    .venv/bin/python benchmarks/bench_infer.py            # batch 16, 5 timed rounds per path
    .venv/bin/python benchmarks/bench_infer.py --quick    # batch 8, 3 rounds

Paths (weights random: speed does not depend on their values):
- `torch fp32 eager`: `model.embed` under `torch.inference_mode()`, contiguous NCHW — the baseline.
- `torch fp32 channels_last`: the same with NHWC memory format (oneDNN's preferred layout).
- `torch bf16 channels_last`: channels_last + `torch.autocast("cpu", dtype=torch.bfloat16)`; the feature is cast
  back to float32 (and differs from fp32 by bf16 rounding — reported as max |Δ| and min cosine).
- `onnxruntime fp32 …`: the file `spanet export` writes, with all graph optimisations, default threads and 2.
- `onnxruntime int8 …`: that file statically quantised (QDQ, per-channel int8 weights, uint8 activations) with
  onnxruntime's quantisation tool. Not something `spanet export` does: its calibration here uses random batches,
  so only its speed is meaningful; a deployment would calibrate on real crops and re-check mAP before using it.

The rounds are interleaved (path A, B, C, A, B, C, …) so that load from other processes on the shared cores hits
every path alike; the table reports the median round and the speed-up over fp32 eager from the same run.
Like the `spanet` command, the benchmark first makes glibc keep freed memory for reuse (`spanet.runtime`);
`--release-memory` measures with glibc's default instead.
Results: benchmarks/results/infer.json and infer.md (infer_release_memory.* with --release-memory).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from spanet.deploy.export import export_onnx
from spanet.runtime import cpu_info, retain_freed_memory
from spanet.model import SPANet

RESULTS = Path(__file__).resolve().parent / "results"


def torch_runner(model: SPANet, batch: torch.Tensor, *, channels_last: bool, bf16: bool) -> Callable[[], np.ndarray]:
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        batch = batch.contiguous(memory_format=torch.channels_last)

    def run() -> np.ndarray:
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            return model.embed(batch, kind="parts").float().numpy()

    return run


def ort_runner(path: Path, batch: np.ndarray, *, threads: int, optimisation: str) -> Callable[[], np.ndarray]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, optimisation)
    if threads:
        options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def run() -> np.ndarray:
        return session.run(["features"], {"images": batch})[0]

    return run


def quantise_int8(onnx_path: Path, folder: Path, *, input_size: tuple[int, int]) -> Path:
    """Static int8 quantisation of the exported model, calibrated on a few random normal batches (speed only)."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class RandomBatches(CalibrationDataReader):
        def __init__(self) -> None:
            rng = np.random.default_rng(0)
            self._batches = iter(
                [{"images": rng.normal(size=(2, 3, *input_size)).astype(np.float32)} for _ in range(4)]
            )

        def get_next(self) -> dict | None:
            return next(self._batches, None)

    prepared = folder / "prepared.onnx"
    quant_pre_process(str(onnx_path), str(prepared), skip_symbolic_shape=True)
    out = folder / "spanet_int8.onnx"
    quantize_static(
        str(prepared), str(out), RandomBatches(), quant_format=QuantFormat.QDQ,
        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True,
    )
    return out



def cosine_min(a: np.ndarray, b: np.ndarray) -> float:
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    cos = (a64 * b64).sum(1) / (np.linalg.norm(a64, axis=1) * np.linalg.norm(b64, axis=1))
    return float(cos.min())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="batch 8, 3 rounds")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds per path (interleaved)")
    parser.add_argument("--torch-threads", type=int, default=0, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--height", type=int, default=384)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--out-dir", type=Path, default=RESULTS)
    parser.add_argument(
        "--release-memory", action="store_true", help="glibc's default allocator behaviour (spanet --release-memory)"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.batch_size, args.rounds = 8, 3
    retained = not args.release_memory and retain_freed_memory()

    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    torch.manual_seed(0)
    model = SPANet(num_classes=751, backbone="resnet50", pretrained=None).eval()
    batch = torch.randn(args.batch_size, 3, args.height, args.width)

    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = Path(tmp) / "spanet.onnx"
        print("exporting ONNX …", flush=True)
        export_report = export_onnx(model, onnx_path, input_size=(args.height, args.width), kind="parts")
        runners: dict[str, Callable[[], np.ndarray]] = {
            "torch fp32 eager": torch_runner(model, batch, channels_last=False, bf16=False),
        }
        # channels_last changes the model's parameters in place, so the NHWC paths get their own copy
        nhwc_model = SPANet(num_classes=751, backbone="resnet50", pretrained=None).eval()
        nhwc_model.load_state_dict(model.state_dict())
        runners["torch fp32 channels_last"] = torch_runner(nhwc_model, batch, channels_last=True, bf16=False)
        runners["torch bf16 channels_last"] = torch_runner(nhwc_model, batch, channels_last=True, bf16=True)
        runners["onnxruntime fp32 (all opts, default threads)"] = ort_runner(
            onnx_path, batch.numpy(), threads=0, optimisation="ORT_ENABLE_ALL"
        )
        runners["onnxruntime fp32 (all opts, 2 threads)"] = ort_runner(
            onnx_path, batch.numpy(), threads=2, optimisation="ORT_ENABLE_ALL"
        )
        runners["onnxruntime fp32 (basic opts, 2 threads)"] = ort_runner(
            onnx_path, batch.numpy(), threads=2, optimisation="ORT_ENABLE_BASIC"
        )

        int8_path = quantise_int8(onnx_path, Path(tmp), input_size=(args.height, args.width))
        runners["onnxruntime int8 static QDQ (all opts, default threads)"] = ort_runner(
            int8_path, batch.numpy(), threads=0, optimisation="ORT_ENABLE_ALL"
        )

        reference = runners["torch fp32 eager"]()
        outputs = {}
        for name, run in runners.items():  # warm-up (oneDNN primitive creation, ORT allocations) + accuracy
            outputs[name] = run()
        times: dict[str, list[float]] = {name: [] for name in runners}
        for round_number in range(args.rounds):
            for name, run in runners.items():
                start = time.perf_counter()
                run()
                times[name].append(time.perf_counter() - start)
            print(f"round {round_number + 1}/{args.rounds} done", flush=True)

    base = statistics.median(times["torch fp32 eager"])
    rows = []
    for name, samples in times.items():
        median = statistics.median(samples)
        rows.append({
            "path": name,
            "median_batch_s": round(median, 4),
            "images_per_s": round(args.batch_size / median, 2),
            "speedup_vs_fp32_eager": round(base / median, 2),
            "max_abs_diff_vs_fp32": float(np.abs(outputs[name] - reference).max()),
            "min_cosine_vs_fp32": round(cosine_min(outputs[name], reference), 6),
        })
    result = {
        "cpu": cpu_info().name,
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "onnxruntime": __import__("onnxruntime").__version__,
        "batch_size": args.batch_size,
        "input_size": [args.height, args.width],
        "rounds": args.rounds,
        "onnx_exporter": export_report.exporter,
        "onnx_opset": export_report.opset,
        "onnx_check_max_abs_diff": export_report.worst_diff,
        "quick": args.quick,
        "freed_memory_retained": retained,
        "rows": rows,
    }
    args.out_dir.mkdir(parents=True, exist_ok=True)
    suffix = ("_quick" if args.quick else "") + ("_release_memory" if args.release_memory else "")
    (args.out_dir / f"infer{suffix}.json").write_text(json.dumps(result, indent=2) + "\n")
    markdown = to_markdown(result)
    (args.out_dir / f"infer{suffix}.md").write_text(markdown)
    print(markdown)
    return 0


def to_markdown(result: dict) -> str:
    lines = [
        f"# Embedding throughput: ResNet-50 SPANet, {result['input_size'][0]}×{result['input_size'][1]}, "
        f"batch {result['batch_size']}, parts feature (12288-d)",
        "",
        f"CPU: {result['cpu']} ({result['cores']} cores, shared with other jobs), torch {result['torch']} "
        f"({result['torch_threads']} threads), onnxruntime {result['onnxruntime']}; median of {result['rounds']} "
        "interleaved rounds; freed memory "
        f"{'retained for reuse' if result.get('freed_memory_retained') else 'returned to the OS (glibc default)'}.",
        "",
        "| path | images/s | × fp32 eager | max abs Δ vs fp32 | min cosine vs fp32 |",
        "|---|---|---|---|---|",
    ]
    for row in result["rows"]:
        lines.append(
            f"| {row['path']} | {row['images_per_s']:.1f} | {row['speedup_vs_fp32_eager']:.2f} | "
            f"{row['max_abs_diff_vs_fp32']:.2e} | {row['min_cosine_vs_fp32']:.6f} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())

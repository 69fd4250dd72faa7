"""The domain-shift benchmark of `spanet adapt` on synthetic data, on the CPU, for several seeds.

    python scripts/adapt_benchmark.py                      # seeds 0 1 2, writes docs/adapt.md and docs/adapt.json
    python scripts/adapt_benchmark.py --seeds 0 --no-adapt # only the gap: direct transfer vs supervised on B

Per seed S: `spanet synth` renders domain a and domain b (`--domain`, demo size, seed S); SPANet is trained on a
(configs/cpu_demo.yaml, its own 24-epoch schedule: the demo's model) and evaluated on b's test split (direct transfer), trained on b with its
labels (the upper bound), and the a model is adapted with `spanet adapt` on b's unlabelled bounding_box_train crops
(their names' identities are ignored by adapt; they only score its clustering). All three are evaluated on b's
test split (rank-1, mAP; Market-1501 protocol). Every step is a plain `spanet` command, printed before it runs, and
the CPU minutes each run costs (user + system time of the command and its workers) are recorded. Steps already done
in --work are reused, so an interrupted benchmark is continued by running it again.

Writes --json (default docs/adapt.json) and the section "## Measured: domain shift on synthetic data" of --markdown
(default docs/adapt.md; replaced if present, appended otherwise).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

from spanet.runtime import cpu_info

ROOT = Path(__file__).resolve().parent.parent
SECTION = "## Measured: domain shift on synthetic data"
RUNS = ("direct", "adapted", "footage_tracks", "footage_no_tracks", "supervised")
LABELS = {
    "direct": "Direct transfer (trained on a, tested on b)",
    "adapted": "Adapted on b's unlabelled training crops (`spanet adapt`)",
    "footage_tracks": "Adapted on b footage's tracks (`ingest` → `adapt`, with track ids)",
    "footage_no_tracks": "Adapted on the same footage crops without track ids",
    "supervised": "Supervised on b (labels; the upper bound)",
}


def spanet() -> list[str]:
    return [sys.executable, "-m", "spanet"]


def run(command: list[str], *, log: Path | None = None) -> float:
    """Run one command (printed first); the CPU seconds it and its child processes used."""
    print("$", shlex.join(["spanet", *command[3:]] if command[:3] == spanet() else command), flush=True)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with open(log, "a") if log else open(os.devnull, "w") as sink:
        done = subprocess.run(command, stdout=sink if log else None, stderr=subprocess.STDOUT if log else None)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"failed ({done.returncode}): {shlex.join(command)}" + (f"; see {log}" if log else ""))
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def timed(record: Path, command: list[str], *, log: Path) -> dict:
    """Run `command` unless `record` says it finished; {cpu_minutes, wall_minutes} (kept in `record`)."""
    if record.is_file():  # may carry a "note" on how the run was made (listed in the docs)
        return json.loads(record.read_text())
    began = time.perf_counter()
    cpu = run(command, log=log)
    timing = {"cpu_minutes": cpu / 60, "wall_minutes": (time.perf_counter() - began) / 60, "command": shlex.join(command[2:])}
    record.write_text(json.dumps(timing, indent=2) + "\n")
    return timing


def synth(folder: Path, *, domain: str, seed: int, preset: str) -> None:
    manifest = folder / "spanet_synth.json"
    if manifest.is_file() and json.loads(manifest.read_text()).get("complete"):
        return
    run([*spanet(), "synth", str(folder), "--preset", preset, "--domain", domain, "--seed", str(seed), "--no-progress"])


def train(data: Path, output: Path, *, seed: int, args: argparse.Namespace) -> dict:
    schedule = [] if args.epochs is None else ["--set", f"optim.epochs={args.epochs}",
                                               "--set", f"optim.milestones=[{max(1, args.epochs * 3 // 4)}]"]
    command = [*spanet(), "train", "--config", args.config, "--dataset", "synthetic", "--data-root", str(data),
               "--output", str(output), *schedule,
               "--set", f"train.seed={seed}", "--set", "train.eval_every=0", "--set", "train.progress=false",
               *[item for extra in args.train_set for item in ("--set", extra)]]  # fmt: skip
    if (output / "last.pt").is_file():
        command.append("--resume")  # a finished run is kept, an interrupted one continued
    return timed(output.with_suffix(".timing.json"), command, log=output.with_suffix(".log"))


def adapt(checkpoint: Path, crops: Path, output: Path, *, seed: int, args: argparse.Namespace) -> dict:
    command = [*spanet(), "adapt", "--checkpoint", str(checkpoint), "--output", str(output), str(crops),
               "--rounds", str(args.adapt_rounds), "--epochs", str(args.adapt_epochs), "--seed", str(seed),
               "--no-progress", *args.adapt_args]  # fmt: skip
    if (output / "last.pt").is_file():
        command.append("--resume")
    return timed(output.with_suffix(".timing.json"), command, log=output.with_suffix(".log"))


def evaluate(checkpoint: Path, data: Path, out: Path, *, log: Path | None = None) -> dict:
    if not out.is_file():
        run([*spanet(), "evaluate", "--checkpoint", str(checkpoint), "--dataset", "synthetic", "--data-root", str(data),
             "--json", str(out), "--out", str(out.with_suffix("")), "--no-progress"], log=log)  # fmt: skip
    plain = json.loads(out.read_text())["plain"]
    return {"rank1": plain["rank1"], "mAP": plain["mAP"]}


def one_seed(seed: int, args: argparse.Namespace) -> dict:
    work = Path(args.work) / f"seed{seed}"
    work.mkdir(parents=True, exist_ok=True)
    data_a, data_b = work / "data_a", work / "data_b"
    synth(data_a, domain="a", seed=seed, preset=args.preset)
    synth(data_b, domain="b", seed=seed, preset=args.preset)
    results: dict = {}
    if "direct" in args.runs or "adapted" in args.runs:  # a "supervised"-only process leaves the a model to the other
        cost = train(data_a, work / "train_a", seed=seed, args=args)  # the adapted run starts from it too
    if "direct" in args.runs:
        results["source"] = {**evaluate(work / "train_a" / "last.pt", data_a, work / "eval_a_on_a.json"), **cost}
        results["direct"] = {**evaluate(work / "train_a" / "last.pt", data_b, work / "eval_a_on_b.json"), **cost}
    if "supervised" in args.runs:
        cost = train(data_b, work / "train_b", seed=seed, args=args)
        results["supervised"] = {**evaluate(work / "train_b" / "last.pt", data_b, work / "eval_b_on_b.json"), **cost}
    if "adapted" in args.runs and not args.no_adapt:
        cost = adapt(work / "train_a" / "last.pt", data_b / "bounding_box_train", work / "adapt", seed=seed, args=args)
        results["adapted"] = {**evaluate(work / "adapt" / "last.pt", data_b, work / "eval_adapted_on_b.json"), **cost}
    if args.footage is not None and (not args.footage or seed in args.footage) and not args.no_adapt:
        results.update(footage(work, seed=seed, args=args))
    return results


def footage(work: Path, *, seed: int, args: argparse.Namespace) -> dict:
    """scripts/adapt_footage.py on domain-b footage of this seed: the test-split rows and the search before/after."""
    out = work / "footage"
    run([sys.executable, str(ROOT / "scripts" / "adapt_footage.py"), "--checkpoint", str(work / "train_a" / "last.pt"),
         "--work", str(out), "--seed", str(seed), "--test-data", str(work / "data_b"),
         *[f"--adapt-arg={a}" for a in args.adapt_args]], log=work / "footage.log")  # fmt: skip
    found = json.loads((out / "results.json").read_text())
    split = found["test_split"]
    return {"footage_tracks": {**split["adapted_with_tracks"], "cpu_minutes": found.get("adapt_cpu_minutes")},
            "footage_no_tracks": {**split["adapted_without_tracks"],
                                  "cpu_minutes": found.get("adapt_without_tracks_cpu_minutes")},
            "search": {"before": found["before"], "after": found["after"], "crops": found["crops"],
                       "tracks": found["tracks"]}}  # fmt: skip


def _spread(values: list[float | None]) -> dict:
    known = [v for v in values if v is not None]  # a run timed before this script recorded it has no CPU time
    if not known:
        return {"mean": None, "std": None}
    return {"mean": statistics.mean(known), "std": statistics.stdev(known) if len(known) > 1 else 0.0}


def summarise(per_seed: dict[int, dict]) -> dict:
    """Mean and sample standard deviation per run and metric, and the share of the mAP gap adaptation closes."""
    summary: dict = {}
    for name in ("source", *RUNS):
        rows = {seed: r[name] for seed, r in per_seed.items() if name in r}
        if rows:
            summary[name] = {key: _spread([r.get(key) for r in rows.values()])
                             for key in ("rank1", "mAP", "cpu_minutes", "wall_minutes")}  # fmt: skip
            summary[name]["seeds"] = list(rows)
    gaps = {seed: r["supervised"]["mAP"] - r["direct"]["mAP"] for seed, r in per_seed.items()
            if "supervised" in r and "direct" in r}  # fmt: skip
    if not gaps:
        return summary
    summary["gap_mAP"] = {"mean": statistics.mean(gaps.values()), "per_seed": list(gaps.values())}
    for name in ("adapted", "footage_tracks", "footage_no_tracks"):  # over the seeds that have the run
        gained = {seed: per_seed[seed][name]["mAP"] - per_seed[seed]["direct"]["mAP"] for seed in gaps
                  if name in per_seed[seed]}  # fmt: skip
        if gained:
            gap = [gaps[seed] for seed in gained]
            mean_gap = statistics.mean(gap)
            summary.setdefault("gap_closed", {})[name] = {
                "of_means": statistics.mean(gained.values()) / mean_gap if mean_gap > 0 else None,
                "per_seed": [g / d if d > 0 else None for g, d in zip(gained.values(), gap)],
                "seeds": list(gained),
            }  # fmt: skip
    searches = [r["search"] for r in per_seed.values() if "search" in r]
    if searches:
        summary["search"] = {when: statistics.mean(s[when]["rank1"] for s in searches) for when in ("before", "after")}
    return summary


def markdown(report: dict) -> str:
    s, seeds = report["summary"], report["seeds"]
    pct = lambda v: f"{100 * v['mean']:.1f} ± {100 * v['std']:.1f}"  # noqa: E731
    lines = [SECTION, "",
             f"Seeds {', '.join(map(str, seeds))}; mean ± sample standard deviation; every model evaluated on domain b's "
             "test split (Market-1501 protocol, no re-ranking). CPU minutes: user + system time of the command and its "
             "loader workers, per run (adapted: the adaptation alone, on top of the direct-transfer model).", "",
             "| Model | rank-1 (%) | mAP (%) | CPU minutes per run |", "|---|---|---|---|"]  # fmt: skip
    only = lambda seen: "" if len(seen) == len(seeds) else f" (seeds {', '.join(map(str, seen))} only)"  # noqa: E731
    for name in RUNS:
        if name in s:
            cpu = s[name]["cpu_minutes"]["mean"]
            lines.append(f"| {LABELS[name]}{only(s[name]['seeds'])} | {pct(s[name]['rank1'])} | {pct(s[name]['mAP'])} | "
                         f"{'not recorded' if cpu is None else f'{cpu:.1f}'} |")  # fmt: skip
    if "source" in s:
        lines.append(f"| (the a model on a's own test split) | {pct(s['source']['rank1'])} | {pct(s['source']['mAP'])} | |")
    gap = s.get("gap_mAP")
    if gap is not None:
        lines += ["", f"Gap (supervised − direct transfer): {100 * gap['mean']:.1f} mAP points (per seed: "
                  + ", ".join(f"{100 * g:.1f}" for g in gap["per_seed"]) + ")."]  # fmt: skip
    for name, closed in s.get("gap_closed", {}).items():
        if closed["of_means"] is not None:
            per = ", ".join("n/a" if c is None else f"{100 * c:.0f} %" for c in closed["per_seed"])
            subset = only(closed["seeds"])
            of = "those seeds' gap" if subset else "it"
            lines.append(f"{LABELS[name]}{subset} closes {100 * closed['of_means']:.0f} % of {of} (per seed: {per}).")
    if "adapted" not in s:
        lines.append("Adaptation: not run here.")
    if "search" in s:
        lines += ["", "Cross-camera search on the ingested b footage (`scripts/adapt_footage.py`): each track's first "
                  "crop sent to the service for the other cameras, one row per track; the share whose first track is "
                  "the same person (queries / hits per seed):", "",
                  "| Seed | tracks | crops | before adaptation | after (`adapt` → `gallery reembed`) |", "|---|---|---|---|---|"]
        for seed, runs in report["per_seed"].items():
            if "search" in runs:
                f = runs["search"]
                cell = lambda r: f"{100 * r['rank1']:.1f} % ({r['hits']} / {r['queries']})"  # noqa: E731
                lines.append(f"| {seed} | {f['tracks']} | {f['crops']} | {cell(f['before'])} | {cell(f['after'])} |")
        lines.append(f"| mean | | | {100 * s['search']['before']:.1f} % | {100 * s['search']['after']:.1f} % |")
    lines += ["", "Per seed (rank-1 / mAP, %):", "", "| Seed | " + " | ".join(n for n in ("source", *RUNS) if n in s) + " |",
              "|---|" + "---|" * sum(n in s for n in ("source", *RUNS))]  # fmt: skip
    for seed, runs in report["per_seed"].items():
        cells = [f"{100 * runs[n]['rank1']:.1f} / {100 * runs[n]['mAP']:.1f}" if n in runs else "—"
                 for n in ("source", *RUNS) if n in s]  # fmt: skip
        lines.append(f"| {seed} | " + " | ".join(cells) + " |")
    notes = [f"- seed {seed}, {name}: {runs[name]['note']}" for seed, runs in report["per_seed"].items()
             for name in RUNS if name in runs and runs[name].get("note")]  # fmt: skip
    if notes:
        lines += ["", "Notes:", *notes]
    m = report["machine"]
    lines += ["", f"Measured on {m['cpu']} ({m['cores']} cores{m['note']}), {report['date']}. Regenerate with",
              "", "```", report["command"], "```", "", "which runs, per seed S (printed as it goes):", "", "```"]  # fmt: skip
    lines += report["commands"] + ["```", ""]
    return "\n".join(lines)


def write_section(path: Path, text: str) -> None:
    """Replace the section (up to the next `## ` heading) in `path`, or append it."""
    old = path.read_text() if path.is_file() else "# Adapting to your own cameras\n"
    start = old.find(SECTION)
    if start < 0:
        new = old.rstrip("\n") + "\n\n" + text
    else:
        end = old.find("\n## ", start + len(SECTION))
        new = old[:start] + text.rstrip("\n") + "\n" + ("\n" + old[end + 1 :] if end >= 0 else "")
    path.write_text(new)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n", 2)[2])  # fmt: skip
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--preset", default="demo", help="`spanet synth` preset of both domains (default demo)")
    parser.add_argument("--config", default="configs/cpu_demo.yaml", help="training config (default cpu_demo)")
    parser.add_argument("--epochs", type=int, default=None,
                        help="training epochs on a and on b, the step at 3/4 (default: the config's schedule)")
    parser.add_argument("--train-set", action="append", default=[], metavar="KEY=VALUE", help="extra train override")
    parser.add_argument("--adapt-rounds", type=int, default=3, help="`spanet adapt --rounds` (default 3)")
    parser.add_argument("--adapt-epochs", type=int, default=3, help="`spanet adapt --epochs` (default 3)")
    parser.add_argument("--footage", type=int, nargs="*", metavar="SEED",
                        help="also scripts/adapt_footage.py on every seed, or on the SEEDs given: domain-b footage "
                        "ingested, adapted on its tracks "
                        "(and on its crops without track ids), cross-camera search before and after")  # fmt: skip
    parser.add_argument("--adapt-arg", dest="adapt_args", action="append", default=[], metavar="ARG",
                        help="extra `spanet adapt` argument (repeatable), e.g. --adapt-arg=--lr --adapt-arg=0.02")
    parser.add_argument("--no-adapt", action="store_true", help="only direct transfer and supervised (the gap)")
    parser.add_argument("--runs", nargs="+", choices=RUNS, default=list(RUNS),
                        help="which runs (default all; e.g. two processes with 'supervised' and 'direct adapted' "
                        "share a --work folder, then a run with all of them writes the docs)")
    parser.add_argument("--work", default="bench/adapt", help="folder for data, runs and evaluations (reused)")
    parser.add_argument("--json", type=Path, default=ROOT / "docs" / "adapt.json")
    parser.add_argument("--markdown", type=Path, default=ROOT / "docs" / "adapt.md")
    parser.add_argument("--note", default="", help="added to the machine line, e.g. 'shared with other jobs'")
    args = parser.parse_args()
    os.chdir(ROOT)
    per_seed = {}
    for seed in args.seeds:
        print(f"\n== seed {seed} ==", flush=True)
        per_seed[seed] = one_seed(seed, args)
    first = Path(args.work) / f"seed{args.seeds[0]}"
    s0 = args.seeds[0]
    commands = [json.loads(p.read_text())["command"].replace(f"seed{s0}", "seedS").replace(f"train.seed={s0}", "train.seed=S")
                .replace(f"--seed {s0}", "--seed S")
                for p in (first / "train_a.timing.json", first / "train_b.timing.json", first / "adapt.timing.json")
                if p.is_file()]  # fmt: skip
    report = {
        "date": time.strftime("%Y-%m-%d"),
        "command": shlex.join(["python", "scripts/adapt_benchmark.py", *sys.argv[1:]]),
        "commands": [f"spanet synth {args.work}/seedS/data_{d} --preset {args.preset} --domain {d} --seed S" for d in "ab"]
        + commands
        + [f"spanet evaluate --checkpoint {args.work}/seedS/RUN/last.pt --dataset synthetic --data-root {args.work}/seedS/data_b"]
        + ([f"python scripts/adapt_footage.py --checkpoint {args.work}/seedS/train_a/last.pt --work {args.work}/seedS/footage "
            f"--seed S --test-data {args.work}/seedS/data_b   # synth-video, ingest, adapt, gallery reembed: its "
            "commands.log lists them"] if args.footage is not None else []),
        "machine": {"cpu": cpu_info().name, "cores": os.cpu_count(),
                    "note": f"; {args.note}" if args.note else ""},
        "settings": {k: v for k, v in vars(args).items() if k not in ("json", "markdown")},
        "seeds": args.seeds,
        "per_seed": per_seed,
        "summary": summarise(per_seed),
    }  # fmt: skip
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    write_section(args.markdown, markdown(report))
    print(markdown(report))



if __name__ == "__main__":
    main()

"""An operator's site end to end: domain-b footage -> `spanet ingest` -> `spanet adapt` on its tracks -> `spanet gallery
reembed` -> the service (`spanet serve`'s app) searched across cameras, before and after adaptation.

    python scripts/adapt_footage.py --checkpoint bench/adapt3/seed0/train_a/last.pt --work bench/footage/seed0 \
        --seed 0 --test-data bench/adapt3/seed0/data_b

Per run (every step a plain `spanet` command, printed as it runs; steps already done in --work are reused):

1. `spanet synth-video --domain b`: 3 cameras, --people walkers, --seconds of 640×360 footage with ground truth.
2. `spanet ingest` with the source model, each camera's ground-truth boxes as its detections (so that the detector
   is not what is measured), --crops-per-track crops per track.
3. Before: every track's first enrolled crop is a query, sent to the service (`POST /search`, the app `spanet serve`
   runs) for the other cameras, one row per track; a hit when the first track is the same person (the crop's frame
   and size name its ground-truth box). Only queries whose person has a track in another camera count.
4. `spanet adapt` on the gallery folder (tracks as tracklets; `TRACKLET_ARGS`), then `spanet gallery reembed` with
   the adapted model.
5. After: the same queries again, now embedded and searched with the adapted model.
6. With --test-data (a `spanet synth --domain b` dataset): both the tracks-adapted model and one adapted on the same
   crops without their track ids (copied out under Market-style names: camera and frame only matter; the identity
   prefix, from the ground truth, is used for the clustering statistics alone) are evaluated on its test split.

Writes WORK/results.json; `scripts/adapt_benchmark.py --footage` runs it per seed and puts the results into
docs/adapt.md.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from adapt_benchmark import evaluate, run
from adapt_benchmark import spanet as spanet_command

START = "2024-05-01T08:00:00+00:00"
CAMERAS = (1, 2, 3)
# Tracklets as items: one person has at most one track per camera here (3), so DBSCAN's core needs 2 of them, query
# expansion is off (k2=6 averages several people's sets: close pairs end at Jaccard distance 0) and the k-reciprocal
# sets are a few times a person's tracklets. With 2-3 items per person a radius covering the closest 0.5 % of pairs
# holds a handful of pairs (3 clusters of ~90 tracklets, 93 % left out, on the development footage): 2 %.
TRACKLET_ARGS = ("--k1", "10", "--k2", "1", "--min-samples", "2", "--eps-share", "0.02")


def spanet(*args: str, log: Path) -> float:
    """Run one `spanet` command (printed first, output to `log`); the CPU minutes it and its children used."""
    return run([*spanet_command(), *args], log=log) / 60


def truth(foot: Path) -> dict[int, dict[int, list[tuple[int, int, int, int, int]]]]:
    """camera -> frame -> [(person, x, y, w, h)] of the footage's ground truth."""
    table: dict[int, dict[int, list]] = {}
    for cam in CAMERAS:
        for line in (foot / f"cam{cam}" / "gt" / "gt.txt").read_text().splitlines():
            frame, pid, x, y, w, h = (int(float(v)) for v in line.split(",")[:6])
            table.setdefault(cam, {}).setdefault(frame, []).append((pid, x, y, w, h))
    return table


def people(gallery_dir: Path, foot: Path, checkpoint: Path) -> list[dict]:
    """Every gallery entry with its person: the ground-truth box of its frame with the crop's size."""
    from PIL import Image

    from spanet.deploy.gallery import Gallery
    from spanet.features import FeatureExtractor

    boxes = truth(foot)
    gallery = Gallery.open(gallery_dir, model_info=FeatureExtractor(checkpoint, device="cpu").info)
    try:
        entries, _ = gallery.store.query(limit=10**6, offset=0)
        rows = []
        for entry in entries:
            frame = int(entry.source.rsplit("=", 1)[1])
            path = gallery.image_path(entry)
            with Image.open(path) as image:
                size = image.size
            found = [pid for pid, _x, _y, w, h in boxes[entry.camera][frame] if (w, h) == size]
            if len(found) == 1:  # two people's boxes of one size in one frame: left out
                rows.append({"id": entry.id, "camera": entry.camera, "track": entry.track, "frame": frame,
                             "person": found[0], "image": str(path)})  # fmt: skip
        return rows
    finally:
        gallery.close()


def cross_camera_hits(gallery_dir: Path, checkpoint: Path, rows: list[dict]) -> dict:
    """Each track's first crop searched through the service in the other cameras (one row per track)."""
    from fastapi.testclient import TestClient

    from spanet.deploy.gallery import Gallery
    from spanet.deploy.service import create_app
    from spanet.features import FeatureExtractor

    person = {r["id"]: r["person"] for r in rows}
    tracks: dict[tuple[int, int], dict] = {}
    for r in sorted(rows, key=lambda r: r["frame"]):
        tracks.setdefault((r["camera"], r["track"]), r)
    extractor = FeatureExtractor(checkpoint, device="cpu")
    gallery = Gallery.open(gallery_dir, model_info=extractor.info)
    hits = queries = 0
    try:
        client = TestClient(create_app(gallery=gallery, extractor=extractor), base_url="http://127.0.0.1")
        for (camera, _track), query in sorted(tracks.items()):
            if not any(r["person"] == query["person"] and r["camera"] != camera for r in rows):
                continue  # nobody to find in another camera
            others = ",".join(str(c) for c in CAMERAS if c != camera)
            response = client.post("/search", files={"file": ("q.jpg", Path(query["image"]).read_bytes(), "image/jpeg")},
                                   data={"cameras": others, "group": "true", "top_k": "1"})  # fmt: skip
            response.raise_for_status()
            matches = response.json()["matches"]
            queries += 1
            hits += bool(matches) and person.get(matches[0]["id"]) == query["person"]
    finally:
        gallery.close()
    return {"queries": queries, "hits": hits, "rank1": hits / queries if queries else None}


def export_crops(rows: list[dict], out: Path) -> Path:
    """The gallery's crops under Market-style names (person_cCAMsTRACK_FRAME_00.jpg): no track id is read from them."""
    if (out / "done").is_file():
        return out
    out.mkdir(parents=True, exist_ok=True)
    for r in rows:
        (out / f"{r['person']:04d}_c{r['camera']}s1_{r['frame']:06d}_{r['id'] % 100:02d}.jpg").write_bytes(
            Path(r["image"]).read_bytes())
    (out / "done").write_text("")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n", 2)[2])  # fmt: skip
    parser.add_argument("--checkpoint", type=Path, required=True, help="the source model (trained on domain a)")
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0, help="footage seed and adaptation seed")
    parser.add_argument("--people", type=int, default=48)
    parser.add_argument("--seconds", type=float, default=40.0)
    parser.add_argument("--crops-per-track", type=int, default=8)
    parser.add_argument("--test-data", type=Path, help="a `spanet synth --domain b` dataset to evaluate on")
    parser.add_argument("--adapt-arg", dest="adapt_args", action="append", default=[], metavar="ARG",
                        help="extra `spanet adapt` argument (repeatable), e.g. --adapt-arg=--camera-bn")
    args = parser.parse_args()
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    log, foot, gallery = work / "commands.log", work / "foot", work / "gallery"
    results_path = work / "results.json"
    results = json.loads(results_path.read_text()) if results_path.is_file() else {}
    save = lambda: results_path.write_text(json.dumps(results, indent=2) + "\n")  # noqa: E731
    if not (foot / "spanet_video.json").is_file():
        spanet("synth-video", str(foot), "--domain", "b", "--cameras", "3", "--people", str(args.people), "--seconds",
               str(args.seconds), "--seed", str(args.seed), log=log)  # fmt: skip
    if "before" not in results:
        began = time.perf_counter()
        command = ["ingest", "--gallery", str(gallery), "--checkpoint", str(args.checkpoint), "--device", "cpu",
                   "--start-time", START, "--crops-per-track", str(args.crops_per_track), "--quiet"]  # fmt: skip
        for cam in CAMERAS:
            command += ["--camera", str(cam), str(foot / f"cam{cam}"), "--detections", str(cam),
                        str(foot / f"cam{cam}" / "gt" / "gt.txt")]  # fmt: skip
        cpu = spanet(*command, log=log)
        results["ingest"] = {"cpu_minutes": cpu, "wall_minutes": (time.perf_counter() - began) / 60}
        results["rows"] = people(gallery, foot, args.checkpoint)
        results["before"] = cross_camera_hits(gallery, args.checkpoint, results["rows"])
        save()
    print("before:", results["before"], flush=True)
    rows = results["rows"]
    results["crops"], results["tracks"] = len(rows), len({(r["camera"], r["track"]) for r in rows})
    adapted = work / "adapt"
    if "after" not in results:
        if not (adapted / "last.pt").is_file():
            results["adapt_cpu_minutes"] = spanet("adapt", "--checkpoint", str(args.checkpoint), "--output", str(adapted),
                                                  str(gallery), "--seed", str(args.seed), "--no-progress",
                                                  *TRACKLET_ARGS, *args.adapt_args, log=log)  # fmt: skip
        spanet("gallery", "reembed", str(gallery), "--checkpoint", str(adapted / "last.pt"), "--quiet", log=log)
        results["after"] = cross_camera_hits(gallery, adapted / "last.pt", rows)
        save()
    print("after:", results["after"], flush=True)
    if args.test_data:
        crops = export_crops(rows, work / "crops_without_tracks")
        untracked = work / "adapt_without_tracks"
        if not (untracked / "last.pt").is_file():
            results["adapt_without_tracks_cpu_minutes"] = spanet(
                "adapt", "--checkpoint", str(args.checkpoint), "--output", str(untracked), str(crops), "--seed",
                str(args.seed), "--no-progress", *args.adapt_args, log=log)  # fmt: skip
        results["test_split"] = {
            "source": evaluate(args.checkpoint, args.test_data, work / "eval_source.json", log=log),
            "adapted_with_tracks": evaluate(adapted / "last.pt", args.test_data, work / "eval_tracks.json", log=log),
            "adapted_without_tracks": evaluate(untracked / "last.pt", args.test_data, work / "eval_untracked.json",
                                               log=log),
        }  # fmt: skip
        print("test split:", results["test_split"], flush=True)
    results["settings"] = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    save()


if __name__ == "__main__":
    main()

"""Throughput of one data-set explanation job (xfr.jobs) in process and on local Ray actors, side
by side in one run (issue 16), and a projection from the measured per-item costs.

    python benchmarks/bench_jobs.py [--faces 200] [--shard-size 25] [--method cis|occlusion|rise]

``cis`` (default): the CMS stage's item task (:class:`xfr.experiments.cms.CISTask`: face
preparation with MTCNN and FaceMesh, then the CIS of 160 landmark occlusions) on CelebA faces
with mini-xception-gender; ``occlusion`` (16/8, 27 passes) and ``rise`` (2000 masks) on FER-2013
faces with mini-xception-fer2013.

Prints items/s for the in-process loop with 1 and with all torch threads and for 1 and 2 Ray
workers (Ray's start-up timed separately; each actor gets its share of the cores as torch
threads), the engine's overhead per item against the in-process loop with the same threads, the
share of an item's time spent in the model's forward passes (the same passes timed alone), and a
projection - stated as such, not measured - for a 16-core machine and for N GPUs. Each job writes
into a fresh temporary folder."""
from __future__ import annotations

import argparse
import os
import tempfile
import time

import torch

from xfr.jobs import init_ray, run_job


def forward_seconds(model_name: str, size: int, passes: int, batch: int = 64) -> float:
    """Seconds the model's score function takes for ``passes`` forward passes in batches."""
    from xfr import models
    from xfr.score import class_score

    f = class_score(models.load(model_name), 0)
    x = torch.rand(batch, 3, size, size)
    f(x)  # warm-up (backend sessions)
    t0 = time.perf_counter()
    n = 0
    while n < passes:
        f(x)
        n += batch
    return (time.perf_counter() - t0) * passes / n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--faces", type=int, default=200)
    ap.add_argument("--shard-size", type=int, default=25)
    ap.add_argument("--method", choices=("cis", "occlusion", "rise"), default="cis")
    args = ap.parse_args()
    if args.method == "cis":
        from xfr.data import celeba
        from xfr.experiments.cms import CISTask

        table = celeba().head(args.faces)
        items = [[str(p), int(m)] for p, m in zip(table.path, table.Male)]
        model, size = "mini-xception-gender", 224
        spec = dict(task=CISTask, methods=None, options=dict(
            dataset="celeba", mode="crop", context=0.0, canvas_size=192, cis_points=160, patch=15, canvas_patch=16,
            crop_scale=1.4, max_mesh_error=0.15, work_size=224, image_map_items=0))
        what = f"{len(items)} CelebA faces, CIS (face preparation + 160 occlusions), {model}"
    else:
        from xfr.data import fer2013

        table = fer2013()
        items = [str(p) for p in table[table.label == "happy"].path.head(args.faces)]
        model, size = "mini-xception-fer2013", 48
        methods = ({"occlusion": {"patch": 16, "stride": 8}} if args.method == "occlusion"
                   else {"rise": {"n_masks": 2000}})
        spec = dict(task="expression", methods=methods, cls="happy")
        what = f"{len(items)} FER faces, {args.method}, {model}"
    rows = []

    def job(label: str, workers: int, threads: int) -> None:
        with tempfile.TemporaryDirectory() as out:
            t0 = time.perf_counter()
            s = run_job(items, model=model, out_dir=out, shard_size=args.shard_size, workers=workers,
                        progress=False, **spec)
            wall = time.perf_counter() - t0
        rows.append(dict(label=label, threads=threads, wall=wall, rate=len(items) / wall, ok=s.ok,
                         forward=s.forward_passes, per_item=s.seconds_per_item))

    cores = os.cpu_count() or 1
    for threads in sorted({1, cores}):
        torch.set_num_threads(threads)
        job(f"in process, {threads} torch thread(s)", 0, threads)
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    init_ray()
    ray_start = time.perf_counter() - t0
    for w in (1, 2):
        job(f"Ray, {w} worker(s)", w, max(1, cores // w))
    print(f"{what}; shard size {args.shard_size}; {cores} cores; Ray start-up {ray_start:.1f} s (not included below)")
    print(f"{'run':34s} {'wall s':>8s} {'items/s':>8s} {'ok':>5s} {'forward':>8s} {'s/item':>7s} {'overhead ms/item':>17s}")
    one = rows[0]
    for r in rows:
        same = next((b for b in rows if b["label"].startswith("in process") and b["threads"] == r["threads"]), one)
        over = (r["wall"] - same["wall"]) / len(items) * 1000 if r is not same else 0.0
        print(f"{r['label']:34s} {r['wall']:8.1f} {r['rate']:8.2f} {r['ok']:5d} {r['forward']:8d} "
              f"{r['per_item']:7.3f} {over:17.1f}")

    # projection from the 1-thread in-process costs (stated as a projection: not measured here)
    torch.set_num_threads(1)
    passes_per_item = one["forward"] / max(len(items), 1)
    fwd = forward_seconds(model, size, int(round(passes_per_item * 64)), 64) / 64
    item = one["wall"] / len(items)
    rest = max(item - fwd, 1e-9)
    ray2 = next(r for r in rows if r["label"] == "Ray, 2 worker(s)")
    over_ray = max((ray2["wall"] * 2 - one["wall"]) / len(items), 0.0)  # per item, per worker-second
    print(f"\nper item, 1 thread: {item * 1000:.0f} ms = forward passes {fwd * 1000:.0f} ms "
          f"({passes_per_item:.0f} passes, timed alone) + the rest {rest * 1000:.0f} ms "
          f"(face preparation, masks, aggregation, files); Ray's cost per item-worker {over_ray * 1000:.0f} ms")
    for n in (16,):
        print(f"PROJECTION, {n} cores, {n} one-thread workers, linear scaling: "
              f"{n / (item + over_ray):.1f} items/s ({n / (item + over_ray) * 3600:.0f} items/h)")
    for g in (1, 4, 8):
        print(f"PROJECTION, {g} GPU(s), one actor per GPU: at most {g / rest:.1f} items/s (bound by the "
              f"{rest * 1000:.0f} ms of CPU-side work per item, if the forward passes cost nothing)")


if __name__ == "__main__":
    main()

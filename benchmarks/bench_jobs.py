"""Throughput of one data-set explanation job (xfr.jobs) in process and on local Ray actors, side
by side in one run (issue 16): occlusion maps of FER-2013 faces with mini-xception-fer2013.

    python benchmarks/bench_jobs.py [--faces 200] [--shard-size 25] [--method occlusion|rise]

Prints items/s for the in-process loop with 1 and with all torch threads and for 1 and 2 Ray
workers (Ray's start-up timed separately), and the engine's overhead per item against the
single-thread in-process loop. Each job writes into a fresh temporary folder."""
from __future__ import annotations

import argparse
import os
import tempfile
import time

import torch

from xfr.data import fer2013
from xfr.jobs import init_ray, run_job


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--faces", type=int, default=200)
    ap.add_argument("--shard-size", type=int, default=25)
    ap.add_argument("--method", choices=("occlusion", "rise"), default="occlusion",
                    help="occlusion 16/8 (27 passes per face) or RISE with 2000 masks (a heavier item)")
    args = ap.parse_args()
    table = fer2013()
    items = [str(p) for p in table[table.label == "happy"].path.head(args.faces)]
    methods = ({"occlusion": {"patch": 16, "stride": 8}} if args.method == "occlusion"
               else {"rise": {"n_masks": 2000}})
    rows = []

    def job(label: str, workers: int) -> None:
        with tempfile.TemporaryDirectory() as out:
            t0 = time.perf_counter()
            s = run_job(items, "expression", "mini-xception-fer2013", methods, out, cls="happy",
                        shard_size=args.shard_size, workers=workers, progress=False)
            wall = time.perf_counter() - t0
        rows.append((label, wall, len(items) / wall, s.ok, s.forward_passes))

    cores = os.cpu_count() or 1
    for threads in (1, cores):
        torch.set_num_threads(threads)
        job(f"in process, {threads} torch thread(s)", 0)
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    init_ray()
    ray_start = time.perf_counter() - t0
    for w in (1, 2):
        job(f"Ray, {w} worker(s)", w)
    base = next(r for r in rows if r[0].startswith("in process, 1"))
    print(f"{len(items)} FER faces, {args.method}, shard size {args.shard_size}, {cores} cores; "
          f"Ray start-up {ray_start:.1f} s (not included below)")
    print(f"{'run':34s} {'wall s':>8s} {'items/s':>8s} {'ok':>5s} {'forward':>8s} {'overhead ms/item':>17s}")
    for label, wall, rate, ok, fwd in rows:
        over = (wall - base[1]) / len(items) * 1000
        print(f"{label:34s} {wall:8.1f} {rate:8.1f} {ok:5d} {fwd:8d} {over:17.1f}")


if __name__ == "__main__":
    main()

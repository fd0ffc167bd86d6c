"""Randomization sanity check (Adebayo et al. 2018; S-RISE §4.2; CMS §4.1.3) on the FER-2013
mini-Xception with real FER-2013 PrivateTest faces.

For each face (the first correctly classified image of each of the classes in ``--classes``):
the map of the trained model is compared with the maps after cascading re-initialization of the
model's layers from the output side (:func:`xfr.metrics.randomization_test`), and, as the
reference for "same model, different explainer run", two maps of the trained model (occlusion
with two fills, RISE with two seeds); and the trained map against the fully randomized model's
map made with the other run's settings (RISE with one seed on both models shares the masks, and
the uneven coverage of 500 random masks then shows in both maps whatever the model). The score is the softmax probability of the class the
trained model predicts. Prints Spearman / SSIM per step and the summary

    Spearman(trained map, fully randomized map)  vs  Spearman(two maps of the trained model)

and saves a figure of the cascade.

    .venv/bin/python scripts/randomization_fer.py [reports/randomization_fer.png] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from xfr.data import fer2013
from xfr.explain import occlusion, rise
from xfr.io import load_image
from xfr.metrics import cascading_randomization, map_ssim, randomization_test, spearman
from xfr.models.xception import load_fer2013_mini_xception


def class_prob(model, cls: int):
    def f(x):
        return torch.softmax(model(x), dim=1)[:, cls]

    return f


def pick_faces(model, classes: list[str]) -> list[tuple[Path, str, int]]:
    df = fer2013()
    picked = []
    with torch.inference_mode():
        for name in classes:
            for row in df[df.label == name].itertuples():
                y = int(model(load_image(row.path)[None]).argmax(1))
                if y == row.y:
                    picked.append((row.path, name, y))
                    break
    return picked


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("png", nargs="?", type=Path, default=Path("reports/randomization_fer.png"))
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--classes", default="happy,surprise,angry,neutral")
    ap.add_argument("--patch", type=int, default=8)
    ap.add_argument("--stride", type=int, default=4)
    ap.add_argument("--rise-masks", type=int, default=500)
    args = ap.parse_args(argv)
    t0 = time.time()
    torch.manual_seed(0)
    model = load_fer2013_mini_xception()
    faces = pick_faces(model, args.classes.split(","))

    def occ(fill):
        return lambda m, img, cls: occlusion(class_prob(m, cls), img, patch=args.patch,
                                             stride=args.stride, fill=fill).numpy()

    def ris(seed):
        return lambda m, img, cls: rise(class_prob(m, cls), img, n_masks=args.rise_masks,
                                        seed=seed).numpy()

    explainers = {"occlusion": (occ(0.0), occ(0.5), "fill 0 vs fill 0.5"),
                  "rise": (ris(0), ris(1), "seed 0 vs seed 1")}
    rows, figs = [], []
    for path, label, cls in faces:
        img = load_image(path)
        for name, (explain, explain_other, how) in explainers.items():
            res = randomization_test(model, lambda m: explain(m, img, cls), seed=0)  # noqa: B023 (called within the iteration)
            other = explain_other(model, img, cls)
            *_, (_, fully_random) = cascading_randomization(model, seed=0)
            other_random = explain_other(fully_random, img, cls)
            row = {
                "image": path.name, "class": label, "explainer": name,
                "spearman_fully_randomized": float(res.spearman[-1]),
                "ssim_fully_randomized": float(res.ssim[-1]),
                "spearman_abs_fully_randomized": float(res.spearman_abs[-1]),
                # the other run's settings on the fully randomized model: nothing shared but the
                # image (RISE with one seed shares its masks, whose uneven coverage is in both maps)
                "spearman_fully_randomized_other_run": spearman(res.original_map, other_random),
                "spearman_trained_two_runs": spearman(res.original_map, other),
                "ssim_trained_two_runs": map_ssim(res.original_map, other),
                "trained_two_runs": how,
                "spearman_per_step": [round(float(v), 3) for v in res.spearman],
                "layers": res.layers,
            }
            rows.append(row)
            if name == "occlusion":
                figs.append((img, label, res))
            print(f"{path.name} ({label}) {name}: Spearman trained vs fully randomized "
                  f"{row['spearman_fully_randomized']:+.3f} (SSIM {row['ssim_fully_randomized']:+.3f}); "
                  f"trained, {how}: {row['spearman_trained_two_runs']:+.3f} "
                  f"(SSIM {row['ssim_trained_two_runs']:+.3f}); trained vs fully randomized with the "
                  f"other run's settings {row['spearman_fully_randomized_other_run']:+.3f}; "
                  f"per step {row['spearman_per_step']}")
    summary = {}
    for name in explainers:
        sub = [r for r in rows if r["explainer"] == name]
        summary[name] = {
            "mean_spearman_fully_randomized": float(np.nanmean([r["spearman_fully_randomized"] for r in sub])),
            "mean_spearman_trained_two_runs": float(np.nanmean([r["spearman_trained_two_runs"] for r in sub])),
            "mean_spearman_fully_randomized_other_run": float(np.nanmean(
                [r["spearman_fully_randomized_other_run"] for r in sub])),
            "mean_ssim_fully_randomized": float(np.nanmean([r["ssim_fully_randomized"] for r in sub])),
            "mean_ssim_trained_two_runs": float(np.nanmean([r["ssim_trained_two_runs"] for r in sub])),
            "n_images": len(sub),
        }
        print(f"{name}: mean Spearman trained vs fully randomized "
              f"{summary[name]['mean_spearman_fully_randomized']:+.3f}, trained two runs "
              f"({sub[0]['trained_two_runs']}) {summary[name]['mean_spearman_trained_two_runs']:+.3f}, "
              f"trained vs fully randomized with the other run's settings "
              f"{summary[name]['mean_spearman_fully_randomized_other_run']:+.3f}")
    print(f"layers randomized, output side first: {rows[0]['layers']}")
    print(f"seconds: {time.time() - t0:.1f}")
    plot(figs, args.png)
    print(f"figure: {args.png}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"summary": summary, "rows": rows}, indent=2))
    return 0


def plot(figs, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n_steps = len(figs[0][2].maps)
    steps = sorted({0, 1, 3, n_steps // 2, n_steps - 1})
    fig, axes = plt.subplots(len(figs), 2 + len(steps), figsize=(2 * (2 + len(steps)), 2.1 * len(figs)),
                             squeeze=False)
    for r, (img, label, res) in enumerate(figs):
        axes[r, 0].imshow(img.permute(1, 2, 0).numpy())
        axes[r, 0].set_title(label, fontsize=8)
        axes[r, 1].imshow(res.original_map, cmap="jet")
        axes[r, 1].set_title("trained", fontsize=8)
        for c, s in enumerate(steps):
            axes[r, 2 + c].imshow(res.maps[s], cmap="jet")
            axes[r, 2 + c].set_title(f"top {s + 1} layers random\nrho={res.spearman[s]:+.2f}",
                                     fontsize=7)
        for ax in axes[r]:
            ax.axis("off")
    fig.suptitle("occlusion on mini-Xception (FER-2013): cascading randomization", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())

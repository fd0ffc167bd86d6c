"""How the RISE family's scoring of the masks decides whether a verification map is signal or
noise: our three scorings against the two peers' (xaitk-saliency), on the same masks and the
same forward passes.

For the first ``--pairs`` genuine LFW pairs (dlib-resnet, 112 px chips) the probe is explained
against its mate with RISE (8x8 grid, p = 0.5) and S-RISE (patches kept) masks, ``--masks``
masks per seed, two seeds; every scoring below is computed from the same masks and the same
embeddings of the masked probes:

- ``raw``: the papers' sum (1/N) sum_k s_k m_k of the cosine similarities (S-RISE's H);
- ``centred``: the same with the mean similarity subtracted (our default);
- ``coverage``: the per-pixel mean similarity of the masks keeping the pixel, minus the mean;
- ``xaitk SimilarityScoring``: xaitk-saliency's descriptor-similarity scoring
  (``gen_descriptor_sim_sal.SimilarityScoring``, cosine): the increase of the distance to the
  mate caused by each mask, clipped at 0, on the removed regions, normalized by their coverage;
- ``xaitk RISEScoring(p1=0.5)``: its debiased RISE (Hatakeyama et al.) on the cosine similarity:
  sum_k s_k (m_k - p1), max-abs scaled.

(torchray's ``rise`` is the raw sum of its sigmoid outputs divided by N: ``raw`` up to a
monotone transform of the score.) For each: the seed-to-seed Spearman of the maps, the
Spearman between the trained model's map and the fully randomized model's map with other masks
(the sanity check; near 0 passes) and the deletion / insertion AUC of the seed-0 map on the
cosine (mean fill; deletion lower, insertion higher = better). Writes reports/scorings_lfw.{json,md}.

    python benchmarks/compare_scorings.py [--pairs 4] [--masks 1000]
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pairs", type=int, default=4)
    ap.add_argument("--masks", type=int, default=1000)
    ap.add_argument("--out", default=str(ROOT / "reports" / "scorings_lfw"))
    args = ap.parse_args()

    from xaitk_saliency.impls.gen_classifier_conf_sal.rise_scoring import RISEScoring
    from xaitk_saliency.impls.gen_descriptor_sim_sal.similarity_scoring import SimilarityScoring

    from xfr import models
    from xfr.data import lfw_pairs
    from xfr.experiments.expressions import resize_face
    from xfr.experiments.srise import fully_randomized
    from xfr.explain.common import GroupedMaskSums
    from xfr.explain.reliability import run_grouped, spearman
    from xfr.metrics import deletion, insertion
    from xfr.models.align import detect_and_align
    from xfr.models.backends import accelerated
    from xfr.score import verification_score

    t0 = time.perf_counter()
    model = models.load("dlib-resnet")
    randomized = fully_randomized(model, 0)
    pairs = [p for p in lfw_pairs() if p.same][:args.pairs]
    methods = {"rise": dict(s=8), "s-rise": dict(patches="keep")}

    def raw_embedder(net, backend):
        acc = accelerated(net, backend)

        def embed(x):
            with torch.inference_mode():
                return acc(x).float()
        return embed

    embed_trained, embed_random = raw_embedder(model, "auto"), raw_embedder(randomized, "openvino")

    def maps_of(run, emb: torch.Tensor, ref: torch.Tensor, probe: torch.Tensor) -> dict:
        """Every scoring's map of ``run``'s masks given the masked probes' embeddings."""
        cos = torch.nn.functional.cosine_similarity(emb, ref[None].expand_as(emb)).double()
        acc = GroupedMaskSums(run.acc.hw)
        masks = []
        for start in range(0, run.n, 256):
            m = run.masks[start:start + 256]
            acc(m, cos[start:start + len(m)], start)
            masks.append(m.numpy())
        masks_np = np.concatenate(masks).astype(np.float32)
        out = {s: acc.map(s).float() for s in ("raw", "centred", "coverage")}
        sim = SimilarityScoring(proximity_metric="cosine").generate(
            probe.numpy(), ref[None].numpy(), emb.numpy(), masks_np)
        out["xaitk SimilarityScoring"] = torch.from_numpy(np.asarray(sim[0], dtype=np.float32))
        debiased = RISEScoring(p1=0.5).generate(np.ones(1), cos.numpy()[:, None], masks_np)
        out["xaitk RISEScoring(p1=0.5)"] = torch.from_numpy(np.asarray(debiased[0], dtype=np.float32))
        return out

    rows = []
    for i, pair in enumerate(pairs):
        x = resize_face(detect_and_align(pair.a, "dlib150"), 112)
        y = resize_face(detect_and_align(pair.b, "dlib150"), 112)
        f_cos = verification_score(model, y)
        for method, kw in methods.items():
            got = {}
            for key, embed, seed in (("seed0", embed_trained, 0), ("seed1", embed_trained, 1),
                                     ("randomized", embed_random, 1)):
                ref = embed(y[None])[0]
                probe_e = embed(x[None])[0]
                store: list[torch.Tensor] = []

                def f(images, embed=embed, ref=ref, store=store):
                    e = embed(images)
                    store.append(e)
                    return torch.nn.functional.cosine_similarity(e, ref[None].expand_as(e))

                run = run_grouped(f, x, method, args.masks, seed, **kw)
                got[key] = maps_of(run, torch.cat(store), ref, probe_e)
            for scoring in got["seed0"]:
                m0 = got["seed0"][scoring]
                d = deletion(f_cos, x, m0, step=0.05)
                ins = insertion(f_cos, x, m0, step=0.05)
                rows.append(dict(pair=i, probe=pair.a.name, method=method, scoring=scoring,
                                 seed_to_seed=spearman(m0, got["seed1"][scoring]),
                                 trained_vs_randomized=spearman(m0, got["randomized"][scoring]),
                                 deletion_auc=d.auc, insertion_auc=ins.auc))
            print(pair.a.name, method, flush=True)
    table = pd.DataFrame(rows)
    summary = table.groupby(["method", "scoring"], sort=False).agg(
        seed_to_seed=("seed_to_seed", "mean"), seed_to_seed_min=("seed_to_seed", "min"),
        seed_to_seed_max=("seed_to_seed", "max"), trained_vs_randomized=("trained_vs_randomized", "mean"),
        deletion_auc=("deletion_auc", "mean"), insertion_auc=("insertion_auc", "mean")).reset_index()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = dict(date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), machine=platform.machine(),
                cpus=torch.get_num_threads(), pairs=args.pairs, masks=args.masks,
                seconds=round(time.perf_counter() - t0, 1),
                command=f"python benchmarks/compare_scorings.py --pairs {args.pairs} --masks {args.masks}")
    out.with_suffix(".json").write_text(json.dumps(dict(meta=meta, per_pair=rows,
                                                        summary=summary.to_dict("records")), indent=1))
    md = [f"# Scorings of the RISE family on verification ({meta['date']})", "",
          f"dlib-resnet, first {args.pairs} genuine LFW pairs, {args.masks} masks per seed; "
          f"`{meta['command']}`. Seed-to-seed: Spearman of the maps of seeds 0 and 1 (mean, min, max over "
          "pairs); trained vs randomized: Spearman between the trained model's map and the fully randomized "
          "model's map with other masks (near 0 passes the sanity check); deletion / insertion AUC on the "
          "cosine (mean fill).", "",
          summary.to_markdown(index=False, floatfmt=".3f")]
    out.with_suffix(".md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""xfr.explain.runner: the method runner (LIME / LIME-map sharing one run, seeds, batch sizes), seed runs,
stability table, methods.csv rows."""
import numpy as np
import pytest
import torch

from tests.experiments.test_expressions import smooth_score
from xfr.explain import lime_explain, rise, rise_gauss
from xfr.explain.runner import run_methods, seed_runs, stability_table


def test_run_methods_lime_and_lime_map_share_one_run():
    img = torch.rand(3, 32, 32)
    segments = np.repeat(np.arange(4), 256).reshape(32, 32)
    kw = dict(n_samples=20, segments=segments)
    res = run_methods(smooth_score, img, {"lime": kw, "lime-map": kw}, seed=3, batch_size=7)
    direct = lime_explain(smooth_score, img, seed=3, **kw)
    assert torch.allclose(res["lime"].map, direct.lime_map)
    assert torch.allclose(res["lime-map"].map, direct.saliency)
    assert res["lime"].n_forward == res["lime-map"].n_forward == 20  # one run, not two
    assert res["lime"].extras["shared_with"] == "lime-map"


def test_run_methods_passes_seed_and_keeps_order():
    img = torch.rand(3, 24, 24)
    res = run_methods(smooth_score, img, {"rise-gauss": dict(n_masks=12), "rise": dict(n_masks=10)},
                        seed=5, batch_size=4)
    assert list(res) == ["rise-gauss", "rise"]
    assert torch.allclose(res["rise"].map, rise(smooth_score, img, n_masks=10, seed=5))
    assert torch.allclose(res["rise-gauss"].map, rise_gauss(smooth_score, img, n_masks=12, seed=5))
    assert res["rise"].n_forward == 10
    # a seed given in the method's arguments wins
    res2 = run_methods(smooth_score, img, {"rise": dict(n_masks=10, seed=1)}, seed=5)
    assert torch.allclose(res2["rise"].map, rise(smooth_score, img, n_masks=10, seed=1))
    with pytest.raises(ValueError, match="unknown methods"):
        run_methods(smooth_score, img, {"nope": {}})


def test_seed_runs_reuse_first_and_differ_by_seed():
    img = torch.rand(3, 24, 24)
    methods = {"rise": dict(n_masks=8)}
    first = run_methods(smooth_score, img, methods, seed=0)
    runs = seed_runs(smooth_score, img, methods, [0, 1, 2], first=first)
    assert runs["rise"][0] is first["rise"]
    assert torch.allclose(runs["rise"][2].map, rise(smooth_score, img, n_masks=8, seed=2))
    assert not torch.allclose(runs["rise"][1].map, runs["rise"][2].map)


def test_stability_table_identical_and_different_maps():
    from xfr.report import Timed

    a = torch.rand(16, 16)
    same = [Timed(a, 1.0, 10), Timed(a * 3 + 1, 1.0, 10)]  # same after min-max scaling
    other = [Timed(a, 1.0, 10), Timed(torch.rand(16, 16), 1.0, 10), Timed(torch.rand(16, 16), 1.0, 10)]
    stab, pairs = stability_table({"minplus": same, "rise": other})
    s = stab.set_index("method")
    assert s.loc["MinPlus", "pearson"] == pytest.approx(1.0)
    assert s.loc["MinPlus", "pixel_std"] == pytest.approx(0.0, abs=1e-6)
    assert s.loc["RISE", "pearson"] < 0.5 and s.loc["RISE", "pixel_std"] > 0.1
    assert len(pairs[pairs.method == "RISE"]) == 3  # 3 runs -> 3 pairs



"""The reliability stage's glue (xfr.experiments.reliability): curves, summary and defaults on an
analytic score, the candidate verification scores, rescored maps."""
import numpy as np
import pytest
import torch

from xfr.experiments import reliability as RL
from xfr.explain.reliability import run_grouped

H = W = 24


def region_mean(x):
    return x[:, :, 6:12, 8:16].mean(dim=(1, 2, 3))


def _faces(n=2):
    imgs = [torch.rand(3, H, W, generator=torch.Generator().manual_seed(i)) for i in range(n)]
    return RL.TaskFaces("toy", "analytic", [f"face{i}" for i in range(n)], imgs, lambda i: region_mean)


def test_curves_summary_and_defaults():
    methods = {"rise": {"method": "rise", "s": 4}, "s-rise keep": {"method": "s-rise", "patches": "keep",
                                                                   "n_patches": 6, "kernel": 7, "sigma": 2.0}}
    table = RL.curves(_faces(), methods, [20, 200], [0, 1], ["centred", "raw"])
    assert set(table.columns) >= {"task", "method", "scoring", "face", "n_masks", "spearman"}
    assert len(table) == 2 * 2 * 2 * 2  # faces x methods x scorings x counts
    summ = RL.summary(table, 0.9)
    rise = summ[(summ.method == "rise") & (summ.scoring == "centred")].iloc[0]
    assert rise.rho_200 > rise.rho_20  # more masks, more agreement
    d = RL.chosen_defaults(summ, "centred", cap=8000)
    assert set(d.method) == {"rise", "s-rise keep"}
    for r in d.itertuples():
        assert (r.default_masks is None) == (not r.stable_within_cap)
        if r.default_masks is not None:
            assert r.default_masks >= 500 and r.default_masks % 100 == 0
    m = RL.metrics(summ, d)
    assert "defaults" in m["toy"]
    with pytest.raises(ValueError, match="two seeds"):
        RL.curves(_faces(1), methods, [20], [0], ["centred"])


def test_score_values_known_answers():
    ref = torch.tensor([1.0, 0.0])
    emb = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    mean = torch.tensor([0.5, 0.0])

    class Fit:
        def curve(self, d):
            return 1.0 - np.asarray(d)

    v = RL.score_values(emb, ref, mean, Fit())
    np.testing.assert_allclose(v["cosine"], [1.0, 0.0])
    np.testing.assert_allclose(v["neg_euclidean"], [-1.0, -np.sqrt(2.0)])
    np.testing.assert_allclose(v["centred_cosine"], [1.0, -0.5 / np.sqrt(1.25)])
    np.testing.assert_allclose(v["cscore"], [1.0, 0.0])


def test_separation_auc_and_d_prime():
    same = np.array([True] * 5 + [False] * 5)
    s = RL.separation(np.r_[np.linspace(0.8, 0.9, 5), np.linspace(0.1, 0.2, 5)], same)
    assert s["auc"] == 1.0 and s["d_prime"] > 5 and s["genuine_min"] == pytest.approx(0.8)


def test_rescored_maps_with_the_run_s_own_scores_give_its_maps():
    x = torch.rand(3, H, W, generator=torch.Generator().manual_seed(3))
    run = run_grouped(region_mean, x, "rise", 30, 2, batch_size=7, s=4)
    maps = RL.rescored_maps(run, run.scores.numpy(), ("raw", "centred"), batch_size=11)
    for scoring in ("raw", "centred"):
        torch.testing.assert_close(maps[scoring], run.map(scoring))
    other = RL.rescored_maps(run, np.zeros(30), ("centred",))
    assert float(other["centred"].abs().max()) == 0.0

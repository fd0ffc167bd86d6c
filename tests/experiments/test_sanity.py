"""xfr.experiments.sanity: depths, the cascade of maps (checked against explaining each
randomized copy directly), comparison curves, summary rows, figures."""
import numpy as np
import pytest
import torch

from xfr.experiments import sanity as S
from xfr.explain import occlusion, srise
from xfr.explain.masks import SRiseMasks
from xfr.metrics import cascading_randomization, map_ssim, spearman
from xfr.metrics.randomization import cascade_maps
from xfr.score import attribute_score


class TinyNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 4, 5, padding=2)
        self.mid = torch.nn.Conv2d(4, 4, 3, padding=1)
        self.fc = torch.nn.Linear(4 * 4, 3)

    def forward(self, x):
        h = torch.relu(self.mid(torch.relu(self.conv(x))))
        return self.fc(torch.nn.functional.adaptive_avg_pool2d(h, 2).flatten(1))


def make_score(net):
    return attribute_score(net, 1)


METHODS = {"occlusion": dict(patch=8, stride=4), "s-rise": dict(n_masks=12, n_patches=5, kernel=7, sigma=2.0)}


@pytest.fixture(scope="module")
def cascade():
    torch.manual_seed(1)
    image = torch.rand(3, 24, 24)
    model = TinyNet().eval()
    cm = cascade_maps(model, make_score, image, METHODS, depths=[1, -1], seed=3,
                        randomization_seed=7, batch_size=5)
    return model, image, cm


def test_cascade_maps_equal_explaining_each_randomized_copy(cascade):
    model, image, cm = cascade
    assert cm.layers == ["fc", "mid", "conv"] and cm.depths == [0, 1, 3]
    # depth 0: the trained model, untouched (atol as below: batched float sums differ in the 5th digit)
    assert np.allclose(cm.maps["occlusion"][0], occlusion(make_score(model), image, patch=8, stride=4), atol=1e-6)
    copies = [net for _, net in cascading_randomization(model, cm.layers, seed=7)]
    for depth in (1, 3):
        f = make_score(copies[depth - 1])
        assert np.allclose(cm.maps["occlusion"][depth], occlusion(f, image, patch=8, stride=4), atol=1e-6)
        assert np.allclose(cm.maps["s-rise"][depth],
                           srise(f, image, seed=3, **METHODS["s-rise"]), atol=1e-6)
        assert cm.scores[depth] == pytest.approx(float(f(image[None])[0]), abs=1e-6)
    # the extra trained run of the random method uses seed + 1
    assert np.allclose(cm.other_seed["s-rise"], srise(make_score(model), image, seed=4, **METHODS["s-rise"]),
                       atol=1e-4)  # batch size 5 vs 64: float sums differ, min-max scaling enlarges them
    assert "occlusion" not in cm.other_seed
    assert cm.n_forward["s-rise"] == [12, 12, 12]
    # the original model is not modified
    assert torch.equal(model.fc.weight, TinyNet().fc.weight)


def test_curves_and_summary(cascade):
    _, _, cm = cascade
    table = S.curves("toy", cm)
    same = table[table.comparison == "same_seed"]
    assert set(same.depth) == {0, 1, 3}
    assert np.allclose(same[same.depth == 0][["spearman", "ssim"]].to_numpy(), 1.0)
    row = same[(same.method == "occlusion") & (same.depth == 3)].iloc[0]
    assert row.spearman == pytest.approx(spearman(cm.maps["occlusion"][0], cm.maps["occlusion"][3]))
    assert row.ssim == pytest.approx(map_ssim(cm.maps["occlusion"][0], cm.maps["occlusion"][3]))
    assert row.layer == "conv"
    other = table[table.comparison == "other_seed"]
    assert set(other.method) == {"S-RISE"}
    assert other[other.depth == 0].spearman.iloc[0] == pytest.approx(
        spearman(cm.other_seed["s-rise"], cm.maps["s-rise"][0]))
    rows = {r["method"]: r for r in S.summary_rows("toy", cm, table)}
    assert rows["occlusion"]["randomized_layers"] == 3
    assert rows["occlusion"]["spearman_randomized"] == pytest.approx(row.spearman)
    assert "spearman_trained_two_seeds" in rows["S-RISE"] and "spearman_trained_two_seeds" not in rows["occlusion"]
    assert rows["S-RISE"]["forward_passes"] == 12


def test_figures(cascade, tmp_path):
    _, image, cm = cascade
    table = S.curves("toy", cm)
    S.fig_cascade(image, cm, table, tmp_path / "c.png", title="t")
    fig = S.fig_curves(table)
    fig.savefig(tmp_path / "k.png")
    assert (tmp_path / "c.png").stat().st_size > 0 and (tmp_path / "k.png").stat().st_size > 0


def test_srise_mask_mean():
    masks = SRiseMasks((20, 20), 10, 3, 5, 1.5, seed=2)
    expected = float(masks[0:10].double().mean())
    assert S.srise_mask_mean((20, 20), 10, 3, 5, 1.5, seed=2) == pytest.approx(expected)

"""Invariance: same seed -> same map; every method gives the same map for batch sizes 1, 7, 64."""
import pytest
import torch

from xfr.explain import (
    avg,
    lime,
    lime_map,
    minplus,
    minplus_maps,
    occlusion,
    rise,
    rise_gauss,
    srise,
    srise_pair,
    srise_triplet,
    xmaps,
    xmaps_methods,
)

HW = (16, 20)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _image(seed=0):
    return torch.rand(3, *HW, generator=torch.Generator().manual_seed(seed))


_W = torch.randn(3, *HW, generator=torch.Generator().manual_seed(10))
_P = torch.randn(3 * HW[0] * HW[1], 6, generator=torch.Generator().manual_seed(11))


def score(x):
    """A small nonlinear analytic score."""
    return torch.sigmoid((x * _W).sum(dim=(1, 2, 3)) / 10.0)


def embed(x):
    return torch.tanh(x.flatten(1) @ _P / 10.0)


SINGLE = {
    "occlusion": lambda bs, seed: occlusion(score, _image(), patch=5, stride=3, batch_size=bs),
    "minplus": lambda bs, seed: minplus(score, _image(), t_max=3, batch_size=bs),
    "avg": lambda bs, seed: avg(score, _image(), t_max=3, batch_size=bs),
    "lime": lambda bs, seed: lime(score, _image(), n_samples=70, kernel_size=2, max_dist=6,
                                  seed=seed, batch_size=bs),
    "lime-map": lambda bs, seed: lime_map(score, _image(), n_samples=70, kernel_size=2,
                                          max_dist=6, seed=seed, batch_size=bs),
    "rise": lambda bs, seed: rise(score, _image(), n_masks=70, s=4, seed=seed, batch_size=bs),
    "rise-gauss": lambda bs, seed: rise_gauss(score, _image(), n_masks=70, n_blobs=5, seed=seed,
                                              batch_size=bs),
    "s-rise": lambda bs, seed: srise(score, _image(), n_masks=70, n_patches=6, kernel=6,
                                     sigma=2.0, seed=seed, batch_size=bs),
    "s-rise-pair": lambda bs, seed: torch.stack(srise_pair(
        embed, _image(), _image(1), n_masks=70, n_patches=6, kernel=6, sigma=2.0, seed=seed,
        batch_size=bs)),
    "s-rise-triplet": lambda bs, seed: torch.stack([getattr(srise_triplet(
        embed, _image(), _image(1), _image(2), n_masks=40, n_patches=6, kernel=6, sigma=2.0,
        seed=seed, batch_size=bs), k) for k in ("probe_mate", "mate", "probe_nonmate", "nonmate")]),
}
for _m in (1, 2, 3):
    SINGLE[f"xmaps-{_m}"] = (lambda m: lambda bs, seed: torch.stack(
        [(r := xmaps(embed, _image(), _image(1), method=m, patch_sizes=(3, 5), stride=2,
                     batch_size=bs)).map1, r.map2]))(_m)
RANDOM = ["lime", "lime-map", "rise", "rise-gauss", "s-rise", "s-rise-pair", "s-rise-triplet"]


@pytest.mark.parametrize("name", sorted(SINGLE))
def test_same_map_for_batch_sizes_1_7_64(name):
    maps = [SINGLE[name](bs, 3) for bs in (1, 7, 64)]
    assert maps[0].dtype == torch.float32 and maps[0].shape[-2:] == HW
    assert torch.isfinite(maps[0]).all()
    for other in maps[1:]:
        torch.testing.assert_close(other, maps[0], rtol=1e-5, atol=1e-5)  # float sums of a batched conv differ in the 6th digit


@pytest.mark.parametrize("name", RANDOM)
def test_same_seed_same_map_other_seed_other_map(name):
    a, b, c = SINGLE[name](16, 5), SINGLE[name](16, 5), SINGLE[name](16, 6)
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


def test_minplus_partial_maps_are_deterministic_and_sparse_on_the_grid():
    m1 = minplus_maps(score, _image(), t_max=3, batch_size=5)
    m2 = minplus_maps(score, _image(), t_max=3, batch_size=64)
    for a, b in zip(m1.as_list(), m2.as_list()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    step = m1.step
    off_grid = torch.ones(HW, dtype=torch.bool)
    off_grid[step::step, step::step] = False
    for h in m1.as_list():
        assert float(h[off_grid].abs().max()) == 0.0
    # forward passes: 2 base scores + iterations x grid size
    grid = len(range(step, HW[0], step)) * len(range(step, HW[1], step))
    assert m1.n_forward == 2 + (m1.iterations_minus + m1.iterations_plus) * grid


def test_xmaps_methods_shares_the_occlusions_and_equals_each_method_alone():
    calls = {"n": 0}

    def counting_embed(x):
        calls["n"] += x.shape[0]
        return embed(x)

    together = xmaps_methods(counting_embed, _image(), _image(1), methods=(1, 2, 3),
                             patch_sizes=(3, 5), stride=2)
    n_together = calls["n"]
    calls["n"] = 0
    alone = {m: xmaps(counting_embed, _image(), _image(1), method=m, patch_sizes=(3, 5), stride=2)
             for m in (1, 2, 3)}
    assert calls["n"] == 3 * n_together  # one set of occluded embeddings serves all three
    for m in (1, 2, 3):
        torch.testing.assert_close(together[m].map1, alone[m].map1)
        torch.testing.assert_close(together[m].map2, alone[m].map2)

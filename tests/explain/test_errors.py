"""Bad input gives a clear ValueError."""
import numpy as np
import pytest
import torch

from xfr.explain import lime, minplus, occlusion, rise, rise_gauss, srise, srise_pair, xmaps

IMG = torch.rand(3, 24, 24, generator=torch.Generator().manual_seed(0))
f = lambda x: x.mean(dim=(1, 2, 3))
embed = lambda x: x.flatten(1)[:, :8]


@pytest.mark.parametrize("call,match", [
    # a sigma (window width), stride or patch size that does not fit the image
    (lambda: minplus(f, IMG, width=0), "width"),
    (lambda: minplus(f, IMG, width=100), "width"),
    (lambda: minplus(f, IMG, step=0), "step"),
    (lambda: minplus(f, IMG, step=24), "step"),
    (lambda: minplus(f, IMG, t_max=0), "t_max"),
    (lambda: minplus(f, IMG, theta=float("nan")), "theta"),
    (lambda: minplus(f, IMG, width=2.5), "width"),
    (lambda: occlusion(f, IMG, patch=0), "patch"),
    (lambda: occlusion(f, IMG, patch=30), "patch"),
    (lambda: occlusion(f, IMG, patch=4, stride=0), "stride"),
    (lambda: occlusion(f, IMG, patch=4, stride=5), "stride"),
    (lambda: occlusion(f, IMG, shape="circle"), "shape"),
    (lambda: occlusion(f, IMG, shape="gaussian", std=0), "std"),
    (lambda: rise(f, IMG, s=0), "s must"),
    (lambda: rise(f, IMG, s=25), "s must"),
    (lambda: rise(f, IMG, p=0), "p must"),
    (lambda: rise(f, IMG, p=1.5), "p must"),
    (lambda: rise_gauss(f, IMG, width_range=(0, 10)), "width_range"),
    (lambda: rise_gauss(f, IMG, width_range=(10, 500)), "width_range"),
    (lambda: srise(f, IMG, kernel=40), "kernel"),
    (lambda: srise(f, IMG, kernel=8, sigma=0), "sigma"),
    (lambda: srise(f, IMG, kernel=8, sigma=float("nan")), "sigma"),
    (lambda: xmaps(embed, IMG, IMG, patch_sizes=(28,)), "patch size"),
    (lambda: xmaps(embed, IMG, IMG, patch_sizes=(7,), stride=0), "stride"),
    (lambda: xmaps(embed, IMG, IMG, patch_sizes=()), "patch_sizes"),
    (lambda: xmaps(embed, IMG, IMG, method=4), "method"),
    (lambda: xmaps(embed, IMG, IMG[:, :20]), "same shape"),
    (lambda: srise_pair(embed, IMG, IMG[:, :20]), "same shape"),
    # an empty mask set
    (lambda: rise(f, IMG, n_masks=0), "n_masks"),
    (lambda: rise_gauss(f, IMG, n_masks=0), "n_masks"),
    (lambda: srise(f, IMG, n_masks=0), "n_masks"),
    (lambda: lime(f, IMG, n_samples=0), "n_samples"),
    # other arguments
    (lambda: rise(f, IMG, seed=-1), "seed"),
    (lambda: lime(f, IMG, segments=np.zeros((5, 5), int)), "segments"),
    (lambda: occlusion(f, IMG, batch_size=0), "batch_size"),
    (lambda: occlusion(f, IMG.numpy()), "torch.Tensor"),
    (lambda: occlusion(f, IMG[0]), r"\[C,H,W\]"),
])
def test_bad_parameters_raise_value_error(call, match):
    with pytest.raises(ValueError, match=match):
        call()


BAD_SCORES = {
    "wrong shape": (lambda x: x.mean(dim=(2, 3)), "shape"),
    "NaN": (lambda x: torch.full((x.shape[0],), float("nan")), "NaN"),
    "inf": (lambda x: x.mean(dim=(1, 2, 3)) / 0.0, "NaN or inf"),
    "numpy": (lambda x: x.mean(dim=(1, 2, 3)).numpy(), "torch.Tensor"),
    "scalar": (lambda x: x.mean(), "shape"),
}
EXPLAINERS = {
    "occlusion": lambda g: occlusion(g, IMG, patch=8, stride=8),
    "minplus": lambda g: minplus(g, IMG, t_max=1),
    "rise": lambda g: rise(g, IMG, n_masks=4),
    "rise-gauss": lambda g: rise_gauss(g, IMG, n_masks=4),
    "lime": lambda g: lime(g, IMG, n_samples=4),
    "s-rise": lambda g: srise(g, IMG, n_masks=4, kernel=8),
}


@pytest.mark.parametrize("bad", sorted(BAD_SCORES))
@pytest.mark.parametrize("method", sorted(EXPLAINERS))
def test_bad_score_function_raises_value_error(method, bad):
    g, match = BAD_SCORES[bad]
    with pytest.raises(ValueError, match=match):
        EXPLAINERS[method](g)


def test_bad_embedder_raises_value_error():
    with pytest.raises(ValueError, match="embeddings"):
        xmaps(lambda x: x.mean(dim=(1, 2, 3)), IMG, IMG, patch_sizes=(7,))

"""Cascading randomization sanity check (Adebayo et al.) on a tiny CNN."""
import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity
from torch import nn

from xfr.engine import perturb
from xfr.metrics import (
    cascading_randomization,
    higher_is_better,
    map_ssim,
    parameter_layers,
    randomization_test,
)
from xfr.metrics.randomization import check_depths


class TinyCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 16 * 16, 2)

    def forward(self, x):
        x = torch.relu(self.bn(self.conv1(x)))
        x = torch.relu(self.conv2(x))
        return self.fc(x.flatten(1))


def tiny_model():
    torch.manual_seed(0)
    model = TinyCNN().eval()
    with torch.no_grad():  # a "trained" look: the class-0 logit reads the top-left quadrant only
        model.bn.running_mean.fill_(0.1)
        model.bn.running_var.fill_(2.0)
        w = torch.zeros(2, 4, 16, 16)
        w[0, :, :8, :8] = 0.05
        model.fc.weight.copy_(w.flatten(1))
    return model


IMAGE = torch.rand(1, 16, 16, generator=torch.Generator().manual_seed(1))


def occlusion_map(model, image=IMAGE, patch=4):
    """Drop of the class-0 logit when a patch x patch square is set to 0 (stride 2)."""
    def f(x):
        return model(x)[:, 0]

    base = f(image[None]).item()
    starts = range(0, 16 - patch + 1, 2)
    masks = torch.ones(len(starts) ** 2, 16, 16)
    for k, (i, j) in enumerate((i, j) for i in starts for j in starts):
        masks[k, i:i + patch, j:j + patch] = 0
    scores = perturb(f, image, masks, fill=0.0).scores
    sal = torch.zeros(16, 16)
    cnt = torch.zeros(16, 16)
    for k in range(len(masks)):
        sal += (base - scores[k]) * (1 - masks[k])
        cnt += 1 - masks[k]
    return (sal / cnt.clamp(min=1)).numpy()


def test_layers_top_first_and_original_untouched():
    model = tiny_model()
    assert parameter_layers(model) == ["fc", "conv2", "bn", "conv1"]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    steps = list(cascading_randomization(model, seed=0))
    assert [name for name, _ in steps] == ["fc", "conv2", "bn", "conv1"]
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), f"original model changed: {k}"
    # cumulative: after step j the top j+1 layers differ from the original, the others do not
    order = ["fc", "conv2", "bn", "conv1"]
    for j, (_, m) in enumerate(steps):
        for i, layer in enumerate(order):
            changed = any(
                not torch.equal(v, before[f"{layer}.{k}"])
                for k, v in dict(m.named_modules())[layer].state_dict().items()
                if k != "num_batches_tracked"
            )
            assert changed == (i <= j), (j, layer)
    # BatchNorm running statistics are reset too
    bn = dict(steps[2][1].named_modules())["bn"]
    assert torch.all(bn.running_mean == 0) and torch.all(bn.running_var == 1)
    assert steps[-1][1] is not steps[-2][1]  # fresh copies


def test_independent_mode_and_determinism():
    model = tiny_model()
    steps = list(cascading_randomization(model, seed=0, cascading=False))
    before = model.state_dict()
    _, m = steps[1]  # only conv2 randomized
    assert not torch.equal(m.conv2.weight, before["conv2.weight"])
    assert torch.equal(m.fc.weight, before["fc.weight"])
    again = list(cascading_randomization(model, seed=0, cascading=False))
    assert torch.equal(again[1][1].conv2.weight, m.conv2.weight)
    other = list(cascading_randomization(model, seed=1, cascading=False))
    assert not torch.equal(other[1][1].conv2.weight, m.conv2.weight)
    with pytest.raises(ValueError, match="unknown layer"):
        next(cascading_randomization(model, layers=["nope"]))


def test_model_dependent_explainer_decorrelates():
    model = tiny_model()
    res = randomization_test(model, occlusion_map, seed=0)
    assert res.layers == ["fc", "conv2", "bn", "conv1"]
    assert res.spearman.shape == res.ssim.shape == res.spearman_abs.shape == (4,)
    # the trained map is concentrated on the top-left quadrant; random weights look elsewhere
    orig = np.abs(res.original_map)
    assert orig[:8, :8].mean() > 10 * orig[8:, 8:].mean()
    assert res.spearman[-1] < 0.5 and res.ssim[-1] < 0.5
    assert not higher_is_better("randomization_spearman")


def test_model_independent_explainer_fails_the_check():
    """An "explainer" that ignores the model (an edge map of the input) gives identical maps."""
    model = tiny_model()

    def edges(_model):
        x = IMAGE[0].numpy()
        return np.abs(np.diff(x, axis=0, append=0)) + np.abs(np.diff(x, axis=1, append=0))

    res = randomization_test(model, edges)
    np.testing.assert_allclose(res.spearman, 1.0)
    np.testing.assert_allclose(res.ssim, 1.0)


def test_map_ssim_matches_skimage():
    rng = np.random.default_rng(0)
    a, b = rng.random((20, 20)), rng.random((20, 20))
    a01 = (a - a.min()) / (a.max() - a.min())
    b01 = (b - b.min()) / (b.max() - b.min())
    assert map_ssim(a, b) == pytest.approx(structural_similarity(a01, b01, data_range=1.0))
    assert map_ssim(a, 3 * a + 2) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="too small"):
        map_ssim(np.ones((2, 2)), np.ones((2, 2)))


def test_check_depths():
    assert check_depths([4, 1, -1, 1], 10) == [1, 4, 10]
    with pytest.raises(ValueError):
        check_depths([0], 10)
    with pytest.raises(ValueError):
        check_depths([11], 10)
    with pytest.raises(ValueError):
        check_depths([], 10)

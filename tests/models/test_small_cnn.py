"""Small expression CNN for the data randomization test (Adebayo et al.): input convention,
determinism for a seed, shuffled labels are a permutation, map similarity, errors; one slow run
on FER-2013."""
import numpy as np
import pytest
import torch
from torch import nn

from xfr.metrics import higher_is_better, map_similarity, map_ssim, spearman
from xfr.models.small_cnn import ExpressionCNN, accuracy, stratified_split, train_expression_cnn


def toy_data(n=48, seed=0):
    """Grey 48x48 faces whose class (0..6) is the row of a bright band: learnable."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 7
    x = torch.rand(n, 1, 48, 48, generator=g) * 0.2
    for i in range(n):
        x[i, 0, 6 * int(y[i]):6 * int(y[i]) + 6] += 0.7
    return x, y


def test_standard_layers_and_input_convention():
    torch.manual_seed(0)
    model = ExpressionCNN().eval()
    kinds = {type(m) for m in model.modules()} - {ExpressionCNN, nn.Sequential}
    assert kinds <= {nn.Conv2d, nn.BatchNorm2d, nn.ReLU, nn.MaxPool2d, nn.Flatten, nn.Dropout, nn.Linear}
    rgb = torch.rand(2, 3, 96, 96)
    grey = (rgb * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
    with torch.no_grad():
        assert model(rgb).shape == (2, 7)
        assert torch.allclose(model(rgb), model(grey), atol=1e-5)
    x = model.preprocess(torch.ones(1, 1, 48, 48))
    assert x.shape == (1, 1, 48, 48) and torch.all(x == 1.0)
    assert model.classes[0] == "angry" and isinstance(model.target_layer, nn.Conv2d)
    with pytest.raises(ValueError, match=r"faces must be a Tensor \[N,3,H,W\]"):
        model(torch.rand(2, 2, 48, 48))


def test_seeded_training_is_deterministic_and_learns():
    x, y = toy_data()
    m1, h1 = train_expression_cnn(x, y, epochs=3, seed=3, batch_size=16, threads=1, held_out=(x, y))
    m2, h2 = train_expression_cnn(x, y, epochs=3, seed=3, batch_size=16, threads=1)
    for (k, a), (_, b) in zip(m1.state_dict().items(), m2.state_dict().items()):
        assert torch.equal(a, b), k
    assert h1.loss == h2.loss and h1.loss[-1] < h1.loss[0]
    assert h1.held_out_accuracy[-1] == accuracy(m1, x, y) and np.isnan(h2.held_out_accuracy[0])
    m3, _ = train_expression_cnn(x, y, epochs=1, seed=4, batch_size=16, threads=1)
    assert not torch.equal(m1.state_dict()["head.2.weight"], m3.state_dict()["head.2.weight"])


def test_shuffled_labels_are_a_permutation():
    x, y = toy_data()
    _, h = train_expression_cnn(x, y, epochs=1, seed=0, shuffle_labels=True, batch_size=16, threads=1)
    assert h.shuffle_labels and not torch.equal(h.labels, y)
    assert torch.equal(torch.sort(h.labels).values, torch.sort(y).values)
    _, h2 = train_expression_cnn(x, y, epochs=1, seed=0, shuffle_labels=True, batch_size=16, threads=1)
    assert torch.equal(h.labels, h2.labels)


def test_training_errors_and_split():
    x, y = toy_data(14)
    with pytest.raises(ValueError, match=r"labels must be \[N\]"):
        train_expression_cnn(x, y[:5], epochs=1)
    with pytest.raises(ValueError, match="class indices"):
        train_expression_cnn(x, y + 7, epochs=1)
    with pytest.raises(ValueError, match="images must be a Tensor"):
        train_expression_cnn(x[:, 0], y, epochs=1)
    with pytest.raises(ValueError, match="epochs and batch_size"):
        train_expression_cnn(x, y, epochs=0)
    tr, te = stratified_split(np.repeat(np.arange(7), 10), 0.2, seed=0)
    assert len(te) == 14 and len(np.intersect1d(tr, te)) == 0 and len(tr) + len(te) == 70
    with pytest.raises(ValueError, match="held_out must be"):
        stratified_split(np.arange(5), 1.5)


def test_map_similarity():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(3, 16, 16))
    res = map_similarity(a, a)
    assert np.allclose(res.spearman, 1.0) and np.allclose(res.ssim, 1.0) and np.allclose(res.spearman_abs, 1.0)
    res = map_similarity(a, -a)
    assert np.allclose(res.spearman, -1.0) and np.allclose(res.spearman_abs, 1.0)
    b = rng.normal(size=(3, 16, 16))
    res = map_similarity(torch.from_numpy(a), b)
    assert res.spearman[1] == pytest.approx(spearman(a[1], b[1])) and res.ssim[2] == pytest.approx(map_ssim(a[2], b[2]))
    assert not higher_is_better("data_randomization_spearman")
    with pytest.raises(ValueError, match="3 maps in maps_a but 2"):
        map_similarity(a, b[:2])
    with pytest.raises(ValueError, match="shape"):
        map_similarity(a[0], b[0, :8])


@pytest.mark.slow
def test_true_labels_beat_shuffled_on_fer(data_dir):
    from xfr.data import fer2013
    from xfr.models.small_cnn import load_fer_images

    x, y = load_fer_images(fer2013())
    tr, te = stratified_split(y.numpy(), 0.2, seed=0)
    _, true = train_expression_cnn(x[tr], y[tr], epochs=4, seed=0, held_out=(x[te], y[te]))
    _, shuf = train_expression_cnn(x[tr], y[tr], epochs=4, seed=0, shuffle_labels=True, held_out=(x[te], y[te]))
    assert true.held_out_accuracy[-1] > 0.3 > shuf.held_out_accuracy[-1]

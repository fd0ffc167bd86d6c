"""Keras HDF5 reader (xfr.models.keras_h5) and the Arriaga et al. Xception ports (xfr.models.xception).

Fast tests check each Keras layer against hand-derived known answers (TF 'same' padding is
asymmetric) and a synthetic HDF5 file; slow tests compare the real models with the reference
outputs of scripts/make_xception_reference.py (an independent numpy forward pass), check
gradients, Grad-CAM's target layer, accuracy on real FER-2013 faces and error messages.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import h5py
import numpy as np
import pytest
import torch

import xfr.assets
from xfr.assets import AssetError
from xfr.models import keras_h5 as K
from xfr.models import xception as X

REFERENCE = Path(__file__).parent / "data" / "xception_reference.npz"
LOADERS = {
    "fer2013_mini": X.load_fer2013_mini_xception,
    "gender_mini": X.load_gender_mini_xception,
    "fer2013_big": X.load_fer2013_big_xception,
}


# ----------------------------------------------------------------------------- helpers
def layer(kind, config=None, weights=None, name="l"):
    return K.build_layer(K.KerasLayer(name, kind, dict(config or {}), (), weights or {}))


def nchw(x_hwc: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x_hwc.transpose(2, 0, 1)))[None].float()


def hwc(t: torch.Tensor) -> np.ndarray:
    return t[0].detach().permute(1, 2, 0).numpy()


def naive_conv(x, kernel, stride, pads):
    """out[i,j,o] = sum_{a,b,c} xpad[i*s+a, j*s+b, c] * kernel[a,b,c,o] (zero padding ``pads``)."""
    (pt, pb), (pl, pr) = pads
    xp = np.pad(x, [(pt, pb), (pl, pr), (0, 0)])
    kh, kw, _, cout = kernel.shape
    oh = (xp.shape[0] - kh) // stride + 1
    ow = (xp.shape[1] - kw) // stride + 1
    out = np.zeros((oh, ow, cout))
    for i in range(oh):
        for j in range(ow):
            patch = xp[i * stride:i * stride + kh, j * stride:j * stride + kw]
            out[i, j] = np.tensordot(patch, kernel, axes=([0, 1, 2], [0, 1, 2]))
    return out


def write_keras_h5(path, layers, weights, inputs, outputs, with_config=True):
    """A Keras-2.0-style model file: model_config JSON + model_weights/<layer>/<layer>/<w>:0."""
    with h5py.File(path, "w") as fh:
        cfg = {"class_name": "Model", "config": {
            "name": "synthetic", "input_layers": [[n, 0, 0] for n in inputs],
            "output_layers": [[n, 0, 0] for n in outputs],
            "layers": [{"name": n, "class_name": kind, "config": dict(c, name=n),
                        "inbound_nodes": [[[s, 0, 0, {}] for s in src]] if src else []}
                       for n, kind, c, src in layers]}}
        if with_config:
            fh.attrs["model_config"] = json.dumps(cfg).encode()
        fh.attrs["keras_version"] = b"2.0.5"
        g = fh.create_group("model_weights")
        g.attrs["layer_names"] = np.array([n.encode() for n, *_ in layers])
        for n, *_ in layers:
            lg = g.create_group(n)
            names = [f"{n}_1/{w}:0" for w in weights.get(n, {})]
            lg.attrs["weight_names"] = np.array([s.encode() for s in names], dtype="S64")
            for full, arr in zip(names, weights.get(n, {}).values()):
                lg.create_dataset(full, data=arr.astype(np.float32))


def synthetic_model(path: Path, rng: np.random.Generator):
    """Input 9x8x1 -> Conv2D 3x3/2 same (+bias) -> BN -> relu -> SeparableConv2D (dm 2) ->
    MaxPool 3x3/2 same -> Add(with 1x1/2 conv branch) -> Conv2D 3 classes -> GAP -> softmax."""
    w = {
        "conv_a": {"kernel": rng.normal(size=(3, 3, 1, 4)), "bias": rng.normal(size=4)},
        "bn_a": {"gamma": rng.uniform(0.5, 2, 4), "beta": rng.normal(size=4),
                 "moving_mean": rng.normal(size=4), "moving_variance": rng.uniform(0.5, 2, 4)},
        "sep": {"depthwise_kernel": rng.normal(size=(3, 3, 4, 2)),
                "pointwise_kernel": rng.normal(size=(1, 1, 8, 5))},
        "res": {"kernel": rng.normal(size=(1, 1, 4, 5))},
        "head": {"kernel": rng.normal(size=(3, 3, 5, 3)), "bias": rng.normal(size=3)},
    }
    layers = [
        ("in", "InputLayer", {"batch_input_shape": [None, 9, 8, 1]}, []),
        ("conv_a", "Conv2D", {"filters": 4, "kernel_size": [3, 3], "strides": [2, 2],
                              "padding": "same", "use_bias": True, "activation": "linear"}, ["in"]),
        ("bn_a", "BatchNormalization", {"epsilon": 0.01}, ["conv_a"]),
        ("act_a", "Activation", {"activation": "relu"}, ["bn_a"]),
        ("sep", "SeparableConv2D", {"filters": 5, "kernel_size": [3, 3], "padding": "same",
                                    "depth_multiplier": 2, "use_bias": False}, ["act_a"]),
        ("pool", "MaxPooling2D", {"pool_size": [3, 3], "strides": [2, 2], "padding": "same"},
         ["sep"]),
        ("res", "Conv2D", {"filters": 5, "kernel_size": [1, 1], "strides": [2, 2],
                           "padding": "same", "use_bias": False}, ["act_a"]),
        ("add", "Add", {}, ["pool", "res"]),
        ("head", "Conv2D", {"filters": 3, "kernel_size": [3, 3], "padding": "same"}, ["add"]),
        ("gap", "GlobalAveragePooling2D", {}, ["head"]),
        ("predictions", "Activation", {"activation": "softmax"}, ["gap"]),
    ]
    write_keras_h5(path, layers, w, ["in"], ["predictions"])
    return w


def synthetic_numpy_forward(w, x):
    """The synthetic model by hand, pads worked out from TF's rule for these sizes."""
    y = naive_conv(x, w["conv_a"]["kernel"], 2, ((1, 1), (0, 1))) + w["conv_a"]["bias"]  # 9x8->5x4
    bn = w["bn_a"]
    y = (y - bn["moving_mean"]) / np.sqrt(bn["moving_variance"] + 0.01) * bn["gamma"] + bn["beta"]
    a = np.maximum(y, 0)
    dk = w["sep"]["depthwise_kernel"]  # channel c, multiplier m -> output channel 2c+m
    dw = np.concatenate([naive_conv(a[..., c:c + 1], dk[:, :, c:c + 1, :], 1, ((1, 1), (1, 1)))
                         for c in range(4)], axis=-1)
    s = dw @ w["sep"]["pointwise_kernel"][0, 0]
    # 3x3/2 'same' pooling of 5x4: rows pad (1,1) -> windows [0,1],[1..3],[3,4]; cols (0,1)
    rows, cols = [(0, 2), (1, 4), (3, 5)], [(0, 3), (2, 4)]
    pooled = np.array([[s[r0:r1, c0:c1].max(axis=(0, 1)) for c0, c1 in cols] for r0, r1 in rows])
    res = a[::2, ::2] @ w["res"]["kernel"][0, 0]  # 1x1/2 'same' on 5x4: no padding
    h = naive_conv(pooled + res, w["head"]["kernel"], 1, ((1, 1), (1, 1))) + w["head"]["bias"]
    return h.mean(axis=(0, 1))


# ----------------------------------------------------------------------------- fast tests
def test_same_padding_known_values():
    assert K.same_padding(60, 3, 2) == (0, 1)  # even size, 3x3/2 pool: extra row after
    assert K.same_padding(29, 3, 2) == (1, 1)
    assert K.same_padding(64, 1, 2) == (0, 0)
    assert K.same_padding(5, 3, 1) == (1, 1)
    assert K.same_padding(6, 4, 1) == (1, 2)  # even kernel
    assert K.same_padding(7, 3, 1, dilation=2) == (2, 2)


@pytest.mark.parametrize("size", [6, 7, 8])
def test_maxpool_same_matches_tf_windows(size):
    rng = np.random.default_rng(size)
    x = rng.normal(size=(size, size + 1, 3))
    out = hwc(layer("MaxPooling2D", {"pool_size": [3, 3], "strides": [2, 2],
                                     "padding": "same"})(nchw(x)))
    for i in range(out.shape[0]):
        for j in range(out.shape[1]):
            # window starts at i*2 - pad_before; for 3x3/2 pad_before is 1 on odd sizes (total
            # padding 2), 0 on even ones (total 1, put after)
            pt, pl = size % 2, (size + 1) % 2
            r0, c0 = max(2 * i - pt, 0), max(2 * j - pl, 0)
            want = x[r0:2 * i - pt + 3, c0:2 * j - pl + 3].max(axis=(0, 1))
            np.testing.assert_allclose(out[i, j], want, rtol=1e-6)
    assert out.shape[:2] == (-(-size // 2), -(-(size + 1) // 2))


def test_avgpool_same_averages_valid_cells_only():
    x = np.arange(16, dtype=float).reshape(4, 4, 1)
    out = hwc(layer("AveragePooling2D", {"pool_size": [3, 3], "strides": [2, 2],
                                         "padding": "same"})(nchw(x)))
    # 4x4, pads (0,1): windows rows/cols [0..2] and [2..3]
    want = np.array([[x[0:3, 0:3].mean(), x[0:3, 2:4].mean()],
                     [x[2:4, 0:3].mean(), x[2:4, 2:4].mean()]])
    np.testing.assert_allclose(out[..., 0], want, rtol=1e-6)


@pytest.mark.parametrize("kernel,stride,shape,pads", [
    (3, 2, (6, 7), ((0, 1), (1, 1))),
    (4, 1, (5, 6), ((1, 2), (1, 2))),
    (3, 1, (5, 5), ((1, 1), (1, 1))),
])
def test_conv2d_same_matches_naive(kernel, stride, shape, pads):
    rng = np.random.default_rng(kernel * 10 + stride)
    x = rng.normal(size=(*shape, 2))
    k = rng.normal(size=(kernel, kernel, 2, 3))
    b = rng.normal(size=3)
    conv = layer("Conv2D", {"strides": [stride, stride], "padding": "same", "use_bias": True},
                 {"kernel": k, "bias": b})
    np.testing.assert_allclose(hwc(conv(nchw(x))), naive_conv(x, k, stride, pads) + b,
                               rtol=1e-4, atol=1e-5)


def test_separable_conv_depth_multiplier_channel_order():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5, 4, 3))
    dk = rng.normal(size=(3, 3, 3, 2))
    pk = rng.normal(size=(1, 1, 6, 4))
    sep = layer("SeparableConv2D", {"padding": "valid", "depth_multiplier": 2, "use_bias": False},
                {"depthwise_kernel": dk, "pointwise_kernel": pk})
    # Keras: depthwise output channel c*2+m comes from input c and multiplier m
    dw = np.stack([naive_conv(x[..., c:c + 1], dk[:, :, c:c + 1, m:m + 1], 1, ((0, 0), (0, 0)))[..., 0]
                   for c in range(3) for m in range(2)], axis=-1)
    np.testing.assert_allclose(hwc(sep(nchw(x))), dw @ pk[0, 0], rtol=1e-4, atol=1e-5)


def test_batchnorm_uses_moving_statistics_in_train_mode_too():
    rng = np.random.default_rng(1)
    wts = {"gamma": rng.uniform(1, 2, 3), "beta": rng.normal(size=3),
           "moving_mean": rng.normal(size=3), "moving_variance": rng.uniform(1, 2, 3)}
    bn = layer("BatchNormalization", {"epsilon": 0.5}, wts)
    x = rng.normal(size=(4, 4, 3))
    want = (x - wts["moving_mean"]) / np.sqrt(wts["moving_variance"] + 0.5) * wts["gamma"] \
        + wts["beta"]
    np.testing.assert_allclose(hwc(bn.train()(nchw(x))), want, rtol=1e-5, atol=1e-6)


def test_synthetic_h5_graph_matches_numpy(tmp_path):
    rng = np.random.default_rng(7)
    w = synthetic_model(tmp_path / "m.h5", rng)
    model = K.read_keras_h5(tmp_path / "m.h5")
    assert model.input_shape == (9, 8, 1) and model.outputs == ("predictions",)
    assert model.layer("sep").weights["pointwise_kernel"].shape == (1, 1, 8, 5)
    x = rng.uniform(-1, 1, size=(9, 8, 1))
    want = synthetic_numpy_forward(w, x)
    probs = K.KerasGraph(model)(nchw(x))[0].detach().numpy()
    np.testing.assert_allclose(probs, np.exp(want) / np.exp(want).sum(), rtol=1e-4, atol=1e-6)
    clf = X.XceptionClassifier(model, ("a", "b", "c"))
    assert clf.target_layer_name == "head"
    logits = clf.net(nchw(x))[0].detach().numpy()
    np.testing.assert_allclose(logits, want, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="3 outputs but 2 class names"):
        X.XceptionClassifier(model, ("a", "b"))


def test_sequential_model_file(tmp_path):
    """Keras 2.0 Sequential files list layers without inbound nodes: they are chained."""
    rng = np.random.default_rng(5)
    k, b = rng.normal(size=(3, 3, 1, 2)), rng.normal(size=2)
    cfg = {"class_name": "Sequential", "config": [
        {"class_name": "Conv2D", "config": {"name": "c", "batch_input_shape": [None, 6, 6, 1],
                                            "padding": "valid", "activation": "relu"}},
        {"class_name": "GlobalAveragePooling2D", "config": {"name": "g"}},
    ]}
    with h5py.File(tmp_path / "s.h5", "w") as fh:
        fh.attrs["model_config"] = json.dumps(cfg)
        g = fh.create_group("model_weights").create_group("c")
        g.attrs["weight_names"] = np.array([b"c/kernel:0", b"c/bias:0"])
        g.create_dataset("c/kernel:0", data=k)
        g.create_dataset("c/bias:0", data=b)
    model = K.read_keras_h5(tmp_path / "s.h5")
    assert [layer.name for layer in model.layers] == ["input", "c", "g"]
    assert model.input_shape == (6, 6, 1) and model.outputs == ("g",)
    x = rng.normal(size=(6, 6, 1))
    want = np.maximum(naive_conv(x, k, 1, ((0, 0), (0, 0))) + b, 0).mean(axis=(0, 1))
    got = K.KerasGraph(model)(nchw(x))[0].detach().numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_classifier_preprocessing_matches_opencv(tmp_path):
    """RGB -> BT.601 grey -> bilinear (cv2 INTER_LINEAR) resize -> [-1, 1], for up- and
    downscaling, against OpenCV in float."""
    synthetic_model(tmp_path / "m.h5", np.random.default_rng(0))
    clf = X.XceptionClassifier(K.read_keras_h5(tmp_path / "m.h5"), ("a", "b", "c"))
    rng = np.random.default_rng(3)
    for h, w in ((5, 4), (23, 17), (9, 8)):
        rgb = rng.uniform(0, 1, size=(h, w, 3)).astype(np.float32)
        gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        want = (cv2.resize(gray, (8, 9), interpolation=cv2.INTER_LINEAR) - 0.5) * 2
        got = clf.preprocess(nchw(rgb))[0, 0].numpy()
        np.testing.assert_allclose(got, want, atol=2e-6)


def test_unsupported_layer_and_missing_weight(tmp_path):
    with pytest.raises(NotImplementedError, match="Dense"):
        layer("Dense", {"units": 3})
    with pytest.raises(AssetError, match="lacks weight 'kernel'"):
        layer("Conv2D", {"use_bias": False}, {})
    with pytest.raises(NotImplementedError, match="channels_first"):
        layer("MaxPooling2D", {"data_format": "channels_first"})


def test_truncated_or_non_keras_file_raises_asset_error(tmp_path):
    synthetic_model(tmp_path / "m.h5", np.random.default_rng(0))
    data = (tmp_path / "m.h5").read_bytes()
    (tmp_path / "cut.h5").write_bytes(data[: len(data) // 3])
    with pytest.raises(AssetError, match="truncated or corrupt"):
        K.read_keras_h5(tmp_path / "cut.h5")
    write_keras_h5(tmp_path / "weights_only.h5", [("in", "InputLayer", {}, [])], {}, ["in"],
                   ["in"], with_config=False)
    with pytest.raises(AssetError, match="no 'model_config'"):
        K.read_keras_h5(tmp_path / "weights_only.h5")
    with pytest.raises(AssetError, match="does not exist"):
        K.read_keras_h5(tmp_path / "nothing.h5")


def test_pad_context_and_offset_crop():
    img = torch.rand(2, 3, 10, 20)
    out = X.pad_context(img, 0.3)
    assert out.shape == (2, 3, 16, 32)
    assert torch.equal(out[..., 3:13, 6:26], img)
    assert torch.equal(out[..., 0, 6:26], img[..., 0, :])  # edge replicated
    crop = X.crop_with_offsets(img[0], (5.2, 2.0, 9.6, 6.0), offsets=(3, 4))
    assert crop.shape == (3, 10, 11)  # x 5-3=2 .. 10+3=13, y 2-4 -> 0 (clipped) .. 6+4=10


# ----------------------------------------------------------------------------- real models
@pytest.fixture(scope="module")
def reference():
    return dict(np.load(REFERENCE))


@pytest.fixture(scope="module")
def models():
    return {key: fn() for key, fn in LOADERS.items()}


@pytest.mark.slow
@pytest.mark.parametrize("key", list(LOADERS))
def test_matches_independent_numpy_reference(key, reference, models):
    """Probabilities equal those of scripts/make_xception_reference.py (numpy, float64) to 1e-4:
    the network alone on the reference's 64x64 inputs, and the whole module (grey, resize,
    normalization) on the raw 48x48 FER images and on 120x120 colour UTKFace crops."""
    model = models[key]
    with torch.no_grad():
        net_in = torch.from_numpy(reference["fer_x64"])[:, None]
        p_net = torch.softmax(model.net(net_in), 1).numpy()
        fer = torch.from_numpy(reference["fer_u8"]).float().div(255)[:, None].expand(-1, 3, -1, -1)
        p_fer = model.predict_proba(fer).numpy()
        utk = torch.from_numpy(reference["utk_rgb_u8"]).permute(0, 3, 1, 2).float().div(255)
        p_utk = model.predict_proba(utk).numpy()
        x_utk = model.preprocess(utk)[:, 0].numpy()
    want_fer, want_utk = reference[f"{key}_fer_probs"], reference[f"{key}_utk_probs"]
    assert np.abs(p_net - want_fer).max() < 1e-4
    assert np.abs(p_fer - want_fer).max() < 1e-4
    assert np.abs(p_utk - want_utk).max() < 1e-4
    assert np.abs(x_utk - reference["utk_x64"]).max() < 1e-5


@pytest.mark.slow
def test_interface_registry_and_batch_invariance(models):
    from xfr.data import FER_CLASSES
    from xfr.models import load

    fer = load("mini-xception-fer2013")
    assert fer.classes == FER_CLASSES == X.FER2013_CLASSES
    assert models["gender_mini"].classes == ("woman", "man")
    for key, model in models.items():
        assert model.input_size == (64, 64), key  # from each file's model_config
        faces = torch.rand(5, 3, 57, 41)
        with torch.no_grad():
            logits = model(faces)
            single = torch.cat([model(faces[i:i + 1]) for i in range(5)])
        assert logits.shape == (5, len(model.classes)) and logits.dtype == torch.float32
        torch.testing.assert_close(logits, single, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match=r"\[N,3,H,W\]"):
        fer(torch.rand(3, 48, 48))


@pytest.mark.slow
def test_gradients_reach_the_input(reference):
    """d logit / d input exists, and matches a central finite difference (float64). A little
    noise breaks the exact ties of flat uint8 regions, where max pooling is not differentiable."""
    model = X.load_fer2013_mini_xception().double()
    gen = torch.Generator().manual_seed(0)
    faces = torch.from_numpy(reference["fer_u8"][:2]).double().div(255)[:, None].repeat(1, 3, 1, 1)
    faces = 0.9 * faces + 0.1 * torch.rand(faces.shape, generator=gen, dtype=torch.float64)
    faces.requires_grad_(True)
    cls = 3
    model(faces)[:, cls].sum().backward()
    grad = faces.grad
    assert grad.shape == faces.shape and torch.isfinite(grad).all() and grad.abs().sum() > 0
    direction = torch.randn(faces.shape, generator=gen, dtype=torch.float64)
    eps = 1e-7
    with torch.no_grad():
        up = model(faces + eps * direction)[:, cls].sum()
        down = model(faces - eps * direction)[:, cls].sum()
    numeric = (up - down) / (2 * eps)
    analytic = (grad * direction).sum()
    assert torch.isclose(numeric, analytic, rtol=1e-4, atol=1e-6), (numeric, analytic)


@pytest.mark.slow
def test_target_layer_maps_average_to_the_logits(models):
    """Grad-CAM's layer: the class-score maps whose global average are the logits."""
    for model in models.values():
        seen = {}
        handle = model.target_layer.register_forward_hook(lambda m, i, o: seen.update(a=o))  # noqa: B023
        with torch.no_grad():
            logits = model(torch.rand(2, 3, 48, 48))
        handle.remove()
        assert seen["a"].shape[:2] == (2, len(model.classes))
        torch.testing.assert_close(seen["a"].mean(dim=(2, 3)), logits)


@pytest.mark.slow
def test_real_fer_faces_are_classified_well_above_chance(models):
    """10 PrivateTest images per class (70): accuracy at least twice chance (1/7)."""
    from xfr.data import fer2013
    from xfr.io import load_image

    df = fer2013().groupby("y").head(10)
    faces = torch.stack([load_image(p) for p in df["path"]])
    with torch.no_grad():
        pred = models["fer2013_mini"](faces).argmax(1).numpy()
    accuracy = float((pred == df["y"].to_numpy()).mean())
    chance = 1 / len(X.FER2013_CLASSES)
    assert len(df) == 70 and accuracy >= 2 * chance, accuracy


@pytest.mark.slow
def test_missing_or_corrupt_weights_raise_asset_error(tmp_path, monkeypatch):
    real = xfr.assets.model_file("fer/emotion_model.hdf5")
    mirror = tmp_path / "mirror"
    monkeypatch.setattr(xfr.assets, "mirror_dirs", lambda: [mirror])
    monkeypatch.setattr(xfr.assets, "cache_dir", lambda: tmp_path / "cache")
    monkeypatch.delenv("XFR_DOWNLOAD", raising=False)
    with pytest.raises(AssetError, match=r"models/fer/emotion_model\.hdf5 .*not found"):
        X.load_fer2013_mini_xception()
    target = mirror / "models" / "fer" / "emotion_model.hdf5"
    target.parent.mkdir(parents=True)
    shutil.copyfile(real, target)
    target.write_bytes(target.read_bytes()[:100_000])  # truncated copy
    with pytest.raises(AssetError, match="sha256"):
        X.load_fer2013_mini_xception()

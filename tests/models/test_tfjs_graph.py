"""TF.js graph executor (xfr.models.tfjs_graph) and the human-models loaders (xfr.models.human).

Op-level checks compare the executor, on tiny hand-built graphs, with naive numpy loops written
from TensorFlow's op definitions (NHWC, 'SAME' = ceil(n/s) outputs, extra padding after). The
end-to-end check runs human-models' gender.json, whose weights are bit-identical to Arriaga's
gender_mini_XCEPTION.21-0.95.hdf5, against the independent Keras-HDF5 port (xfr.models.xception).
"""
from __future__ import annotations

import base64
import json
import math

import numpy as np
import pytest
import torch

from xfr.models.tfjs_graph import TFJSGraph, same_padding

RNG = np.random.default_rng(0)


# ----------------------------------------------------------------------------- graph builder
def _s(text: str) -> dict:
    return {"s": base64.b64encode(text.encode()).decode()}


def _ints(values) -> dict:
    return {"list": {"i": [str(int(v)) for v in values]}}


class G:
    """Tiny GraphDef-JSON builder: one NHWC placeholder ``x``, constants, op nodes."""

    def __init__(self, shape_nhwc):
        self.nodes = [{"name": "x", "op": "Placeholder", "attr": {
            "shape": {"shape": {"dim": [{"size": str(s)} for s in shape_nhwc]}},
            "dtype": {"type": "DT_FLOAT"}}}]
        self.weights: dict[str, np.ndarray] = {}

    def const(self, name, value):
        value = np.asarray(value)
        self.nodes.append({"name": name, "op": "Const", "attr": {}})
        self.weights[name] = value.astype(np.int32 if value.dtype.kind in "iu" else np.float32)
        return name

    def op(self, name, op, inputs, **attr):
        self.nodes.append({"name": name, "op": op, "input": list(inputs), "attr": attr})
        return name

    def build(self, outputs):
        return TFJSGraph({"modelTopology": {"node": self.nodes}}, self.weights, outputs=outputs)


def run(graph: TFJSGraph, x_nhwc: np.ndarray):
    """Feed an NHWC array (as the module's NCHW input); outputs back as numpy (TF layout)."""
    out = graph(torch.from_numpy(x_nhwc).permute(0, 3, 1, 2).contiguous())
    if isinstance(out, tuple):
        return tuple(o.detach().numpy() for o in out)
    return out.detach().numpy()


def conv_attrs(strides, padding):
    return dict(strides=_ints([1, strides[0], strides[1], 1]), padding=_s(padding),
                data_format=_s("NHWC"), dilations=_ints([1, 1, 1, 1]))


# ----------------------------------------------------------------------------- numpy references
def np_pad_same(x, kh, kw, sh, sw, value=0.0):
    n, h, w, c = x.shape
    oh, ow = math.ceil(h / sh), math.ceil(w / sw)
    ph = max((oh - 1) * sh + kh - h, 0)
    pw = max((ow - 1) * sw + kw - w, 0)
    return np.pad(x, ((0, 0), (ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2), (0, 0)),
                  constant_values=value), oh, ow


def np_conv2d(x, k, stride, padding):
    kh, kw, _, co = k.shape
    if padding == "SAME":
        xp, oh, ow = np_pad_same(x, kh, kw, stride, stride)
    else:
        xp = x
        oh, ow = (x.shape[1] - kh) // stride + 1, (x.shape[2] - kw) // stride + 1
    out = np.zeros((x.shape[0], oh, ow, co))
    for i in range(oh):
        for j in range(ow):
            win = xp[:, i * stride:i * stride + kh, j * stride:j * stride + kw, :]
            out[:, i, j, :] = np.einsum("nhwc,hwco->no", win, k)
    return out


def np_depthwise(x, k, stride):
    kh, kw, c, m = k.shape
    xp, oh, ow = np_pad_same(x, kh, kw, stride, stride)
    out = np.zeros((x.shape[0], oh, ow, c * m))
    for i in range(oh):
        for j in range(ow):
            win = xp[:, i * stride:i * stride + kh, j * stride:j * stride + kw, :]
            out[:, i, j, :] = np.einsum("nhwc,hwcm->ncm", win, k).reshape(x.shape[0], c * m)
    return out


def np_pool(x, k, stride, kind):
    """TF pooling with 'SAME': max over the window inside the image, mean over its cells inside."""
    n, h, w, c = x.shape
    oh, ow = math.ceil(h / stride), math.ceil(w / stride)
    ph = max((oh - 1) * stride + k - h, 0) // 2
    pw = max((ow - 1) * stride + k - w, 0) // 2
    out = np.zeros((n, oh, ow, c))
    for i in range(oh):
        for j in range(ow):
            r0, c0 = i * stride - ph, j * stride - pw
            win = x[:, max(r0, 0):r0 + k, max(c0, 0):c0 + k, :]
            out[:, i, j, :] = win.max(axis=(1, 2)) if kind == "max" else win.mean(axis=(1, 2))
    return out


# ----------------------------------------------------------------------------- op tests
def test_same_padding_puts_the_extra_pixel_after():
    assert same_padding(5, 2, 2) == (0, 1)
    assert same_padding(224, 3, 2) == (0, 1)
    assert same_padding(7, 3, 1) == (1, 1)
    assert same_padding(8, 1, 2) == (0, 0)
    assert same_padding(6, 3, 2, dilation=2) == (1, 2)


def test_conv2d_same_stride2_known_answer():
    """2x2 ones kernel, stride 2 on 5x5: TF pads only bottom/right, so out[0,0] is the top-left
    2x2 block sum and out[2,2] = x[4,4] alone."""
    x = np.arange(25, dtype=np.float32).reshape(1, 5, 5, 1)
    g = G(x.shape)
    g.op("y", "Conv2D", ["x", g.const("k", np.ones((2, 2, 1, 1)))], **conv_attrs((2, 2), "SAME"))
    y = run(g.build(["y"]), x)[0, :, :, 0]
    assert y.shape == (3, 3)
    assert y[0, 0] == 0 + 1 + 5 + 6
    assert y[2, 2] == 24
    assert y[0, 2] == 4 + 9


@pytest.mark.parametrize("hw,k,s,pad", [((7, 8), 3, 2, "SAME"), ((9, 6), 4, 2, "SAME"),
                                         ((6, 6), 3, 1, "SAME"), ((9, 7), 3, 2, "VALID"),
                                         ((5, 5), 1, 2, "SAME")])
def test_conv2d_matches_numpy(hw, k, s, pad):
    x = RNG.normal(size=(2, *hw, 3)).astype(np.float32)
    kern = RNG.normal(size=(k, k, 3, 4)).astype(np.float32)
    g = G(x.shape)
    g.op("y", "Conv2D", ["x", g.const("k", kern)], **conv_attrs((s, s), pad))
    np.testing.assert_allclose(run(g.build(["y"]), x), np_conv2d(x, kern, s, pad),
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("mult,s", [(1, 2), (2, 1), (2, 2)])
def test_depthwise_conv_matches_numpy(mult, s):
    x = RNG.normal(size=(2, 7, 6, 3)).astype(np.float32)
    kern = RNG.normal(size=(3, 3, 3, mult)).astype(np.float32)
    g = G(x.shape)
    g.op("y", "DepthwiseConv2dNative", ["x", g.const("k", kern)], **conv_attrs((s, s), "SAME"))
    np.testing.assert_allclose(run(g.build(["y"]), x), np_depthwise(x, kern, s),
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", ["max", "avg"])
@pytest.mark.parametrize("k,s", [(3, 2), (2, 2), (3, 1)])
def test_pooling_same_matches_numpy(kind, k, s):
    x = RNG.normal(size=(2, 7, 6, 3)).astype(np.float32) - 3.0  # negative: zero padding would show
    g = G(x.shape)
    g.op("y", "MaxPool" if kind == "max" else "AvgPool", ["x"], ksize=_ints([1, k, k, 1]),
         **conv_attrs((s, s), "SAME"))
    np.testing.assert_allclose(run(g.build(["y"]), x), np_pool(x, k, s, kind), rtol=1e-5,
                               atol=1e-6)


def test_fused_conv_bias_prelu_and_layout_ops():
    """_FusedConv2D(BiasAdd, Prelu) -> channel Pad -> Mean/Reshape/ConcatV2/Softmax, checked
    against numpy in NHWC (catches any NCHW/NHWC mix-up in axes, paddings and broadcasting)."""
    x = RNG.normal(size=(2, 5, 4, 3)).astype(np.float32)
    kern = RNG.normal(size=(3, 3, 3, 4)).astype(np.float32)
    bias = RNG.normal(size=4).astype(np.float32)
    alpha = RNG.normal(size=(1, 1, 4)).astype(np.float32)
    shift = RNG.normal(size=6).astype(np.float32)
    g = G(x.shape)
    g.op("c", "_FusedConv2D", ["x", g.const("k", kern), g.const("b", bias), g.const("a", alpha)],
         fused_ops={"list": {"s": [_s("BiasAdd")["s"], _s("Prelu")["s"]]}}, num_args={"i": "2"},
         **conv_attrs((1, 1), "SAME"))
    g.op("p", "Pad", ["c", g.const("pads", [[0, 0], [0, 0], [0, 0], [0, 2]])])
    g.op("sh", "AddV2", ["p", g.const("shift", shift)])
    g.op("m", "Mean", ["sh", g.const("axes", [1, 2])], keep_dims={"b": False})
    g.op("mk", "Mean", ["sh", g.const("axes2", [2])], keep_dims={"b": True})
    g.op("r", "Reshape", ["sh", g.const("shape", [-1, 5 * 4 * 6])])
    g.op("cat", "ConcatV2", ["sh", "x", g.const("axis", -1)])
    g.op("sm", "Softmax", ["sh"])
    outs = run(g.build(["m", "mk", "r", "cat", "sm"]), x)

    conv = np_conv2d(x, kern, 1, "SAME") + bias
    conv = np.where(conv >= 0, conv, conv * alpha)
    ref = np.pad(conv, ((0, 0), (0, 0), (0, 0), (0, 2))) + shift
    e = np.exp(ref - ref.max(-1, keepdims=True))
    expect = [ref.mean((1, 2)), ref.mean(2, keepdims=True), ref.reshape(2, -1),
              np.concatenate([ref, x], -1), e / e.sum(-1, keepdims=True)]
    for got, want in zip(outs, expect):
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_elementwise_broadcast_and_matmul():
    """Scalar/vector constants on either side of Sub/Maximum/Minimum/Mul/RealDiv (mobileface's
    PReLU is max(0,x) + gamma*min(0,x)), then flatten and _FusedMatMul(BiasAdd, Relu)."""
    x = RNG.normal(size=(3, 2, 2, 4)).astype(np.float32)
    gamma = RNG.normal(size=4).astype(np.float32)
    w = RNG.normal(size=(16, 5)).astype(np.float32)
    b = RNG.normal(size=5).astype(np.float32)
    g = G(x.shape)
    g.op("s", "Sub", ["x", g.const("c", [0.5])])
    g.op("d", "RealDiv", ["s", g.const("two", 2.0)])
    g.op("mx", "Maximum", [g.const("zero", 0.0), "d"])
    g.op("mn", "Minimum", [g.const("zero2", 0.0), "d"])
    g.op("pr", "AddV2", ["mx", g.op("gm", "Mul", [g.const("gamma", gamma), "mn"])])
    g.op("f", "Reshape", ["pr", g.const("shape", [-1, 16])])
    g.op("y", "_FusedMatMul", ["f", g.const("w", w), g.const("b", b)],
         fused_ops={"list": {"s": [_s("BiasAdd")["s"], _s("Relu")["s"]]}},
         transpose_a={"b": False}, transpose_b={"b": False})
    y = run(g.build(["y"]), x)
    d = (x - 0.5) / 2
    pr = np.maximum(d, 0) + gamma * np.minimum(d, 0)
    np.testing.assert_allclose(y, np.maximum(pr.reshape(3, 16) @ w + b, 0), rtol=1e-5, atol=1e-5)


def test_constant_folding_keeps_the_function():
    """conv -> Mul/Add (a folded batch norm) -> Relu -> Minimum(6) -> Maximum(0), as in faceres:
    the optimized graph is one step and computes what the op-by-op graph computes."""
    x = RNG.normal(size=(2, 6, 5, 3)).astype(np.float32) * 4
    g = G(x.shape)
    g.op("c", "DepthwiseConv2dNative", ["x", g.const("k", RNG.normal(size=(3, 3, 3, 2)))],
         **conv_attrs((2, 2), "SAME"))
    g.op("m", "Mul", ["c", g.const("scale", RNG.normal(size=6))])
    g.op("a", "Add", ["m", g.const("shift", RNG.normal(size=(1, 1, 1, 6)))])
    g.op("r", "Relu", ["a"])
    g.op("lo", "Minimum", ["r", g.const("six", 6.0)])
    g.op("y", "Maximum", ["lo", g.const("zero", 0.0)])
    fast = TFJSGraph({"modelTopology": {"node": g.nodes}}, g.weights, outputs=["y"])
    slow = TFJSGraph({"modelTopology": {"node": g.nodes}}, g.weights, outputs=["y"],
                     optimize=False)
    assert len(fast._steps) == 1 and len(slow._steps) == 6
    got, want = run(fast, x), run(slow, x)
    assert (want == 6).any() and (want == 0).any()  # both clamp bounds are exercised
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_gradients_reach_the_input():
    x = RNG.normal(size=(1, 6, 6, 2)).astype(np.float32)
    g = G(x.shape)
    g.op("c", "Conv2D", ["x", g.const("k", RNG.normal(size=(3, 3, 2, 3)))],
         **conv_attrs((2, 2), "SAME"))
    g.op("p", "MaxPool", ["c"], ksize=_ints([1, 2, 2, 1]), **conv_attrs((1, 1), "SAME"))
    g.op("m", "Mean", ["p", g.const("axes", [1, 2, 3])], keep_dims={"b": False})
    graph = g.build(["m"])
    inp = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous().requires_grad_(True)
    graph(inp).sum().backward()
    assert inp.grad is not None and inp.grad.abs().sum() > 0
    assert not any(p.requires_grad for p in graph.parameters())


def test_taps_see_and_replace_a_node_output():
    x = RNG.normal(size=(1, 6, 6, 2)).astype(np.float32)
    g = G(x.shape)
    g.op("c", "Conv2D", ["x", g.const("k", RNG.normal(size=(3, 3, 2, 3)))],
         **conv_attrs((1, 1), "SAME"))
    g.op("r", "Relu", ["c"])
    g.op("m", "Mean", ["r", g.const("axes", [1, 2, 3])], keep_dims={"b": False})
    graph = g.build(["m"])
    assert graph.node_names[-2:] == ["r", "m"] and "x" not in graph.node_names
    inp = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()
    seen = []
    hook = torch.nn.Identity()
    hook.register_forward_hook(lambda m, i, o: seen.append(o.clone()))
    plain = graph(inp)
    torch.testing.assert_close(graph(inp, taps={"r": hook}), plain, rtol=0, atol=0)  # identity: same
    assert len(seen) == 1 and seen[0].shape == (1, 3, 6, 6) and (seen[0] >= 0).all()  # NCHW relu
    torch.testing.assert_close(graph(inp, taps={"r": lambda t: 2 * t}), 2 * plain)  # replaced downstream
    with pytest.raises(ValueError, match="not in the graph"):
        graph(inp, taps={"nope": hook})


def test_unknown_op_and_bad_input_raise_clearly():
    g = G((1, 4, 4, 1))
    g.op("y", "Erf", ["x"])
    with pytest.raises(NotImplementedError, match="Erf"):
        g.build(["y"])
    g = G((1, 4, 4, 1))
    g.op("y", "Relu", ["x"])
    graph = g.build(["y"])
    with pytest.raises(ValueError, match="height"):
        graph(torch.zeros(1, 1, 5, 4))


def test_loads_a_quantized_model_json_from_disk(tmp_path):
    """model.json + uint8-quantized shard on disk -> dequantized q*scale+min -> same output."""
    from xfr.models.tfjs_graph import load_graph_model

    kern = RNG.normal(size=(3, 3, 1, 2)).astype(np.float32)
    lo, hi = float(kern.min()), float(kern.max())
    scale = (hi - lo) / 255
    q = np.round((kern - lo) / scale).astype(np.uint8)
    (tmp_path / "w.bin").write_bytes(q.tobytes())
    g = G((1, 5, 5, 1))
    g.const("k", kern)
    g.op("y", "Conv2D", ["x", "k"], **conv_attrs((1, 1), "SAME"))
    model_json = {"format": "graph-model", "modelTopology": {"node": g.nodes},
                  "weightsManifest": [{"paths": ["w.bin"], "weights": [
                      {"name": "k", "shape": list(kern.shape), "dtype": "float32",
                       "quantization": {"dtype": "uint8", "scale": scale, "min": lo}}]}]}
    (tmp_path / "model.json").write_text(json.dumps(model_json))
    graph = load_graph_model(tmp_path / "model.json", outputs=["y"])
    x = RNG.normal(size=(1, 5, 5, 1)).astype(np.float32)
    deq = q.astype(np.float32) * np.float32(scale) + np.float32(lo)
    np.testing.assert_allclose(run(graph, x), np_conv2d(x, deq, 1, "SAME"), rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------- real models
@pytest.mark.slow
def test_human_gender_graph_equals_keras_mini_xception():
    """human-models gender.json has the weights of gender_mini_XCEPTION.21-0.95.hdf5: running it
    with this executor and with the independent Keras-HDF5 port must agree."""
    from xfr import assets
    from xfr.models.tfjs_graph import load_graph_model
    from xfr.models.xception import load_gender_mini_xception

    graph = load_graph_model(assets.model_file("human-models/gender.json"),
                             shards={"gender.bin": assets.model_file("human-models/gender.bin")})
    keras = load_gender_mini_xception()
    x = torch.from_numpy(RNG.uniform(-1, 1, size=(3, 1, 64, 64)).astype(np.float32))
    with torch.no_grad():
        torch.testing.assert_close(graph(x), torch.softmax(keras.net(x), 1), rtol=1e-4, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["faceres", "mobileface", "facemesh"])
def test_optimized_real_graphs_equal_op_by_op_execution(name):
    from xfr import assets
    from xfr.models.tfjs_weights import read_tfjs_weights

    model_json = json.loads(assets.model_file(f"human-models/{name}.json").read_text())
    weights = read_tfjs_weights(model_json, {f"{name}.bin": assets.model_file(
        f"human-models/{name}.bin")})
    fast, slow = (TFJSGraph(model_json, weights, optimize=o) for o in (True, False))
    _, h, w, c = fast.input_shape_nhwc
    x = torch.from_numpy(RNG.uniform(0, 255 if name != "facemesh" else 1,
                                     size=(2, c, h, w)).astype(np.float32))
    with torch.no_grad():
        for a, b in zip(*(m(x) if isinstance(m(x), tuple) else (m(x),) for m in (fast, slow))):
            assert a.shape == b.shape
            assert (a - b).abs().max() <= 1e-4 * b.abs().max()


@pytest.fixture(scope="module")
def hopkins():
    """Two LFW RGB photos of Anthony Hopkins with their MTCNN detections."""
    from xfr.data import DATA_DIR
    from xfr.io import load_image
    from xfr.models.detect import load_mtcnn

    imgs = [load_image(DATA_DIR / "lfw_rgb_samples" / f"Anthony_Hopkins_000{i}.jpg")
            for i in (1, 2)]
    dets = load_mtcnn().detect(imgs)
    assert all(len(d) >= 1 for d in dets)
    return imgs, dets


@pytest.mark.slow
def test_facemesh_landmarks_land_on_the_eyes(hopkins):
    from xfr.models import load
    from xfr.models.human import FaceMesh, facemesh_landmarks

    model = load("facemesh")  # through the registry
    assert isinstance(model, FaceMesh)
    imgs, dets = hopkins
    for img, det in zip(imgs, dets):
        mesh = facemesh_landmarks(img, det.boxes[0], model=model)
        assert mesh.shape == (468, 3)
        box_size = float(det.boxes[0, 2] - det.boxes[0, 0])
        # eye centre = mean of the two eye corners (mesh 33/133 and 362/263) vs MTCNN's eyes
        eyes = torch.stack([mesh[[33, 133], :2].mean(0), mesh[[362, 263], :2].mean(0)])
        err = (eyes - det.landmarks[0, :2]).norm(dim=1)
        assert err.max() < 0.05 * box_size, err
        # crop-level interface: forward scales to the crop's pixels
        crop = img[:, 50:200, 40:190]
        lm = model(crop[None])
        assert lm.shape == (1, 468, 3)
        assert lm[0, :, 0].min() >= -5 and lm[0, :, 0].max() <= 155


@pytest.mark.slow
def test_facemesh_agrees_with_mediapipe_tflite(hopkins):
    """External check: MediaPipe's own face_landmark.tflite (a separately trained FaceMesh
    release, run by ai-edge-litert) on the same 192x192 crop gives nearly the same landmarks."""
    interp_mod = pytest.importorskip("ai_edge_litert.interpreter")
    from xfr import assets
    from xfr.models.human import crop_square, load_facemesh, square_box

    imgs, dets = hopkins
    crop = crop_square(imgs[0], *square_box(dets[0].boxes[0], 1.5), 192)
    with torch.no_grad():
        ours = load_facemesh()(crop[None])[0].numpy()
    interp = interp_mod.Interpreter(model_path=str(assets.model_file(
        "mediapipe/face_landmark.tflite")))
    interp.allocate_tensors()
    interp.set_tensor(interp.get_input_details()[0]["index"],
                      crop.permute(1, 2, 0)[None].numpy().astype(np.float32))
    interp.invoke()
    out = interp.get_output_details()
    theirs = next(interp.get_tensor(o["index"]) for o in out if o["shape"][-1] == 1404)
    diff = np.linalg.norm(ours[:, :2] - theirs.reshape(468, 3)[:, :2], axis=1)
    assert diff.mean() < 2.5 and np.percentile(diff, 95) < 5.0, (diff.mean(), diff.max())


@pytest.mark.slow
def test_embedders_and_gender_on_real_faces(hopkins):
    from xfr.models.align import align
    from xfr.models.human import load_faceres, load_faceres_gender, load_mobileface

    imgs, dets = hopkins
    for loader, dim in ((load_faceres, 1024), (load_mobileface, 256)):
        model = loader()
        chips = torch.stack([align(i, d.landmarks[0], model.template) for i, d in zip(imgs, dets)])
        assert chips.shape[-1] == model.input_size
        with torch.no_grad():
            emb = model(chips)
        assert emb.shape == (2, dim) and torch.isfinite(emb).all()
        # resizing inside: a chip at another size gives nearly the same embedding
        with torch.no_grad():
            big = model(torch.nn.functional.interpolate(chips, scale_factor=1.5, mode="bilinear"))
        assert torch.cosine_similarity(emb, big).min() > 0.9
    gender = load_faceres_gender()
    chips = torch.stack([align(i, d.landmarks[0], gender.template) for i, d in zip(imgs, dets)])
    chips.requires_grad_(True)
    logits = gender(chips)
    assert logits.shape == (2, 2) and gender.classes == ("female", "male")
    assert (logits.argmax(1) == 1).all()  # Anthony Hopkins
    logits[:, 1].sum().backward()
    assert chips.grad.abs().sum() > 0


@pytest.mark.slow
def test_same_identity_pairs_are_closer(data_dir):
    """faceres and mobileface on a few LFW fold-1 pairs: mean cosine similarity of same-identity
    pairs above that of different-identity pairs."""
    from xfr.data import lfw_pairs
    from xfr.io import load_image
    from xfr.models.align import align
    from xfr.models.detect import largest_face, load_mtcnn
    from xfr.models.human import load_faceres, load_mobileface

    pairs = lfw_pairs(data_dir)
    chosen = [p for p in pairs if p.same][:4] + [p for p in pairs if not p.same][:4]
    mtcnn = load_mtcnn()
    pad = 60  # tight 350x350 LFW crops: edge-pad so MTCNN sees the whole head

    def landmarks(path):
        img = load_image(path)
        img = torch.nn.functional.pad(img[None], (pad,) * 4, mode="replicate")[0]
        det = mtcnn.detect(img)[0]
        return img, det.landmarks[largest_face(det)]

    faces = {p: landmarks(p) for pr in chosen for p in (pr.a, pr.b)}
    for model in (load_faceres(), load_mobileface()):
        def emb(path):
            img, lm = faces[path]
            with torch.no_grad():
                return model(align(img, lm, model.template)[None])[0]  # noqa: B023
        sims = torch.tensor([float(torch.cosine_similarity(emb(p.a), emb(p.b), 0)) for p in chosen])
        same = torch.tensor([p.same for p in chosen])
        assert sims[same].mean() > sims[~same].mean() + 0.1, (model.name, sims)

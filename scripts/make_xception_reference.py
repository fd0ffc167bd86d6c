"""Reference outputs of the Arriaga et al. (2017) Xception classifiers by an independent path.

Writes ``tests/data/xception_reference.npz``, which ``tests/test_xception.py`` compares the
PyTorch port (:mod:`xfr.models.xception`) against. Nothing here uses torch or ``xfr.models``:

- the forward pass is plain numpy in float64, written out layer by layer from Arriaga's
  ``mini_XCEPTION`` / ``big_XCEPTION`` definitions (``src/models/cnn.py`` of
  github oarriaga/face_classification), with the weights read from the HDF5 by their layer
  names with h5py (not through the graph in ``model_config``). Convolutions are shift-and-matmul
  (im2col) sums over kernel offsets; Keras ``same`` padding puts the extra row/column after;
  'same' max pooling ignores padded cells;
- preprocessing follows Arriaga's inference code with OpenCV in float32: grey =
  ``cv2.cvtColor(RGB2GRAY)`` (BT.601), ``cv2.resize(..., INTER_LINEAR)`` to 64x64 and
  ``(x/255 - 0.5) * 2``. (Arriaga resizes uint8 images and so rounds to whole grey levels; the
  reference stays in float like the port, which keeps gradients; the effect of the rounding on
  accuracy is measured in ``scripts/eval_classifiers.py``.)

Inputs: 8 FER-2013 PrivateTest images (48x48 grey; the first file of each class in sorted
order, and the second 'happy'), and 2 UTKFace colour faces (a central 120x120 crop of the 200x200
aligned image, to exercise the RGB -> grey conversion and a downscaling resize).

Usage: ``python scripts/make_xception_reference.py [--data data] [--models ../shared/models]``
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import cv2
import h5py
import numpy as np

REPO = Path(__file__).resolve().parents[1]
FER_CLASSES = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
MODELS = {
    "fer2013_mini": "fer/emotion_model.hdf5",
    "gender_mini": "oarriaga/gender_mini_XCEPTION.21-0.95.hdf5",
    "fer2013_big": "oarriaga/fer2013_big_XCEPTION.54-0.66.hdf5",
}


# ----------------------------------------------------------------------------- numpy layers
class Weights:
    """Weights of an HDF5 Keras model by layer name (``model_weights/<layer>/.../<w>:0``)."""

    def __init__(self, path: Path):
        self.fh = h5py.File(path, "r")
        cfg = json.loads(self.fh.attrs["model_config"])
        self.config = {layer["name"]: layer["config"] for layer in cfg["config"]["layers"]}

    def __call__(self, layer: str, weight: str) -> np.ndarray:
        found = []
        self.fh["model_weights"][layer].visititems(
            lambda name, obj: found.append(obj) if name.endswith("/" + weight + ":0") else None)
        if len(found) != 1:
            raise KeyError(f"{layer}/{weight}: {len(found)} matches")
        return np.asarray(found[0], dtype=np.float64)


def tf_pad(x: np.ndarray, k: int, s: int, padding: str, value: float = 0.0) -> np.ndarray:
    """Pad NHWC ``x`` as TF does for a kxk window with stride s ('same': extra cell after)."""
    if padding == "valid":
        return x
    pads = []
    for n in x.shape[1:3]:
        total = max((math.ceil(n / s) - 1) * s + k - n, 0)
        pads.append((total // 2, total - total // 2))
    return np.pad(x, [(0, 0), pads[0], pads[1], (0, 0)], constant_values=value)


def windows(x: np.ndarray, k: int, s: int):
    """Yield (i, j, x[:, i::s, j::s] cut to the output size) for every kernel offset."""
    oh = (x.shape[1] - k) // s + 1
    ow = (x.shape[2] - k) // s + 1
    for i in range(k):
        for j in range(k):
            yield i, j, x[:, i:i + s * (oh - 1) + 1:s, j:j + s * (ow - 1) + 1:s, :]


def conv(x, kernel, s=1, padding="valid", bias=None):
    k = kernel.shape[0]
    xp = tf_pad(x, k, s, padding)
    out = sum(win @ kernel[i, j] for i, j, win in windows(xp, k, s))
    return out if bias is None else out + bias


def separable(x, depthwise, pointwise, padding="same"):
    xp = tf_pad(x, depthwise.shape[0], 1, padding)
    dw = sum(win * depthwise[i, j, :, 0] for i, j, win in windows(xp, depthwise.shape[0], 1))
    return dw @ pointwise[0, 0]


def maxpool_same(x, k=3, s=2):
    xp = tf_pad(x, k, s, "same", value=-np.inf)
    out = None
    for _, _, win in windows(xp, k, s):
        out = win if out is None else np.maximum(out, win)
    return out


def relu(x):
    return np.maximum(x, 0.0)


def softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


# ----------------------------------------------------------------------------- architectures
def make_bn(w: Weights):
    def bn(x, name):
        eps = w.config[name]["epsilon"]
        return ((x - w(name, "moving_mean")) / np.sqrt(w(name, "moving_variance") + eps)
                * w(name, "gamma") + w(name, "beta"))
    return bn


def mini_xception(w: Weights, x: np.ndarray) -> np.ndarray:
    """Arriaga's mini_XCEPTION: 2 convs, 4 residual separable blocks, conv + GAP + softmax."""
    bn = make_bn(w)
    x = relu(bn(conv(x, w("conv2d_1", "kernel")), "batch_normalization_1"))
    x = relu(bn(conv(x, w("conv2d_2", "kernel")), "batch_normalization_2"))
    for b in range(1, 5):  # Keras numbering: residual BN 3b, separable BNs 3b+1, 3b+2
        res = bn(conv(x, w(f"conv2d_{b + 2}", "kernel"), s=2, padding="same"),
                 f"batch_normalization_{3 * b}")
        y = separable(x, w(f"separable_conv2d_{2 * b - 1}", "depthwise_kernel"),
                      w(f"separable_conv2d_{2 * b - 1}", "pointwise_kernel"))
        y = relu(bn(y, f"batch_normalization_{3 * b + 1}"))
        y = separable(y, w(f"separable_conv2d_{2 * b}", "depthwise_kernel"),
                      w(f"separable_conv2d_{2 * b}", "pointwise_kernel"))
        y = maxpool_same(bn(y, f"batch_normalization_{3 * b + 2}"))
        x = y + res
    x = conv(x, w("conv2d_7", "kernel"), padding="same", bias=w("conv2d_7", "bias"))
    return softmax(x.mean(axis=(1, 2)))


def big_xception(w: Weights, x: np.ndarray) -> np.ndarray:
    """Arriaga's big_XCEPTION: conv/2, conv, 2 residual separable blocks, conv + GAP + softmax."""
    bn = make_bn(w)
    x = relu(bn(conv(x, w("conv2d_1", "kernel"), s=2), "block1_conv1_bn"))
    x = relu(bn(conv(x, w("conv2d_2", "kernel")), "block1_conv2_bn"))
    res = bn(conv(x, w("conv2d_3", "kernel"), s=2, padding="same"), "batch_normalization_1")
    y = separable(x, w("separable_conv2d_1", "depthwise_kernel"),
                  w("separable_conv2d_1", "pointwise_kernel"))
    y = relu(bn(y, "block2_sepconv1_bn"))
    y = separable(y, w("separable_conv2d_2", "depthwise_kernel"),
                  w("separable_conv2d_2", "pointwise_kernel"))
    x = maxpool_same(bn(y, "block2_sepconv2_bn")) + res
    res = bn(conv(x, w("conv2d_4", "kernel"), s=2, padding="same"), "batch_normalization_2")
    y = separable(relu(x), w("separable_conv2d_3", "depthwise_kernel"),
                  w("separable_conv2d_3", "pointwise_kernel"))
    y = relu(bn(y, "block3_sepconv1_bn"))
    y = separable(y, w("separable_conv2d_4", "depthwise_kernel"),
                  w("separable_conv2d_4", "pointwise_kernel"))
    x = maxpool_same(bn(y, "block3_sepconv2_bn")) + res
    x = conv(x, w("conv2d_5", "kernel"), padding="same", bias=w("conv2d_5", "bias"))
    return softmax(x.mean(axis=(1, 2)))


# ----------------------------------------------------------------------------- inputs
def preprocess(gray01: np.ndarray, size: int = 64) -> np.ndarray:
    """Grey float image in [0,1] -> cv2 bilinear resize to size x size -> [-1, 1] (float32)."""
    resized = cv2.resize(gray01.astype(np.float32), (size, size), interpolation=cv2.INTER_LINEAR)
    return (resized - 0.5) * 2.0


def fer_inputs(data: Path):
    paths = []
    for name in FER_CLASSES:
        files = sorted((data / "fer2013_privatetest" / name).glob("*.jpg"))
        paths += files[:2] if name == "happy" else files[:1]
    images = np.stack([cv2.imread(str(p), cv2.IMREAD_GRAYSCALE) for p in paths])
    labels = np.array([FER_CLASSES.index(p.parent.name) for p in paths])
    return paths, images, labels


def utk_inputs(data: Path, n: int = 2, crop: int = 120):
    files = sorted((data / "utkface_balanced").rglob("*.jpg"))
    paths = [files[0], files[len(files) // 2]][:n]
    off = (200 - crop) // 2
    rgb = np.stack([cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB)[off:off + crop,
                                                                         off:off + crop]
                    for p in paths])
    return paths, rgb


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=REPO / "data")
    ap.add_argument("--models", type=Path, default=REPO.parent / "shared" / "models")
    ap.add_argument("--out", type=Path, default=REPO / "tests" / "data" / "xception_reference.npz")
    args = ap.parse_args(argv)

    fer_paths, fer_u8, fer_labels = fer_inputs(args.data)
    utk_paths, utk_u8 = utk_inputs(args.data)
    fer_x = np.stack([preprocess(im / 255.0) for im in fer_u8])
    utk_gray = [cv2.cvtColor(im.astype(np.float32) / 255.0, cv2.COLOR_RGB2GRAY) for im in utk_u8]
    utk_x = np.stack([preprocess(g) for g in utk_gray])
    out = {
        "fer_u8": fer_u8, "fer_labels": fer_labels, "fer_x64": fer_x.astype(np.float32),
        "fer_names": np.array([f"{p.parent.name}/{p.name}" for p in fer_paths]),
        "utk_rgb_u8": utk_u8, "utk_x64": utk_x.astype(np.float32),
        "utk_names": np.array([p.name for p in utk_paths]),
    }
    for key, rel in MODELS.items():
        w = Weights(args.models / rel)
        net = big_xception if "big" in key else mini_xception
        for group, x in (("fer", fer_x), ("utk", utk_x)):
            probs = net(w, x[..., None].astype(np.float64))
            out[f"{key}_{group}_probs"] = probs
            print(key, group, "argmax", probs.argmax(1).tolist())
    print("fer labels      ", fer_labels.tolist())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, **out)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1024:.0f} KB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

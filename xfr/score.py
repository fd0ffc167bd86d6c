"""Score-function factories (MinPlus §2.1, eqs. 1-4): the only thing an explainer sees of a model.

Each factory returns ``f(images: Tensor[N,C,H,W] in [0,1]) -> Tensor[N]`` (float32, CPU) that
moves the batch to the model's device and runs under ``torch.inference_mode()``:

- :func:`verification_score` eq. 2: <f_e(X), f_e(Y)> of unit embeddings against a fixed
  reference image Y (its embedding computed once);
- :func:`attribute_score` eq. 3: the probability of class k;
- :func:`detection_score` eq. 4: the score of the detection matching a given class and location
  (IoU >= threshold), 0 when nothing matches; for the MTCNN detector of
  :mod:`xfr.models.detect` and for ultralytics YOLO models.
"""
from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .engine import ScoreFn
from .faces.mesh import batched_warp
from .models.backends import accelerated
from .models.xception import ContextPadded


def model_device(model) -> torch.device:
    """The device of a model's parameters (CPU for callables without parameters)."""
    dev = getattr(model, "device", None)
    if isinstance(dev, torch.device):
        return dev
    if isinstance(dev, str):
        return torch.device(dev)
    params = getattr(model, "parameters", None)
    if callable(params):
        for p in params():
            return p.device
    return torch.device("cpu")


def _as_batch(images: Tensor) -> Tensor:
    if not isinstance(images, Tensor):
        raise ValueError(f"images must be a torch.Tensor [N,C,H,W], got {type(images).__name__}")
    if images.dim() == 3:
        images = images[None]
    if images.dim() != 4:
        raise ValueError(f"images must have shape [N,C,H,W], got {tuple(images.shape)}")
    return images


def unit_embeddings(embedder, backend: str = "auto") -> Callable[[Tensor], Tensor]:
    """images [N,C,H,W] -> L2-normalized embeddings [N,D] (float32, CPU) of ``embedder``, run on
    the execution path ``backend`` (:func:`xfr.models.backends.accelerated`; 'auto': the
    measured default of a zoo model, 'torch': the PyTorch module)."""
    device = model_device(embedder)
    embedder = accelerated(embedder, backend)

    def embed(images: Tensor) -> Tensor:
        images = _as_batch(images)
        with torch.inference_mode():
            e = embedder(images.to(device))
        if not isinstance(e, Tensor) or e.dim() != 2 or e.shape[0] != images.shape[0]:
            shape = tuple(e.shape) if isinstance(e, Tensor) else type(e).__name__
            raise ValueError(f"embedder must return embeddings [N,D] for N={images.shape[0]} "
                             f"images, got {shape}")
        return F.normalize(e.float(), dim=1).cpu()

    return embed


def _tagged(f: ScoreFn, **attrs: object) -> ScoreFn:
    """``f`` with ``attrs`` set as attributes of the function object (read back with getattr,
    e.g. by :func:`decided_correctly`)."""
    for name, value in attrs.items():
        setattr(f, name, value)
    return f


def verification_score(embedder, reference_image: Tensor, backend: str = "auto") -> ScoreFn:
    """Eq. 2: f(X) = <f_e(X), f_e(Y)> with unit embeddings; Y = ``reference_image`` [C,H,W].
    ``backend``: see :func:`unit_embeddings`."""
    embed = unit_embeddings(embedder, backend)
    ref = _as_batch(reference_image)
    if ref.shape[0] != 1:
        raise ValueError(f"reference_image must be one image [C,H,W], got {tuple(ref.shape)}")
    y = embed(ref)[0]

    def f(images: Tensor) -> Tensor:
        return embed(images) @ y

    return _tagged(f, reference_embedding=y)


def attribute_score(classifier, k: int, backend: str = "auto") -> ScoreFn:
    """Eq. 3: f(X) = f_a(X, k), the softmax probability of class ``k`` of a classifier returning
    logits [N,K] (a single logit [N,1] is read as a sigmoid: class 1 = p, class 0 = 1 - p), run
    on the execution path ``backend`` (see :func:`unit_embeddings`)."""
    k = _class_index(k)
    device = model_device(classifier)
    classifier = accelerated(classifier, backend)

    def f(images: Tensor) -> Tensor:
        images = _as_batch(images)
        with torch.inference_mode():
            logits = classifier(images.to(device)).float()
        return _class_probability(logits, k, len(images))

    return f


def _class_index(k) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 0:
        raise ValueError(f"class index k must be a non-negative int, got {k!r}")
    return int(k)


def _class_probability(logits: Tensor, k: int, n: int) -> Tensor:
    """P(class k) [N] on the CPU from logits [N,K] of ``n`` images (softmax; a single logit
    [N,1] is read as a sigmoid: class 1 = p, class 0 = 1 - p)."""
    if logits.dim() != 2 or logits.shape[0] != n:
        raise ValueError(f"classifier must return logits [N,K], got {tuple(logits.shape)}")
    if logits.shape[1] == 1:
        if k > 1:
            raise ValueError(f"class {k} out of range for a single-logit (binary) classifier")
        p = torch.sigmoid(logits[:, 0])
        return (p if k == 1 else 1 - p).cpu()
    if k >= logits.shape[1]:
        raise ValueError(f"class {k} out of range: the classifier has {logits.shape[1]} classes")
    return torch.softmax(logits, dim=1)[:, k].cpu()


# ----------------------------------------------------------------------------- differentiable
def gradient_class_score(classifier: nn.Module, k: int) -> ScoreFn:
    """Eq. 3 with gradients, for the white-box explainers (:mod:`xfr.explain.gradients`): the
    softmax probability of class ``k`` of the PyTorch ``classifier`` (no exported graph, no
    ``inference_mode``), on the model's device; the returned scores keep their graph."""
    k = _class_index(k)
    device = model_device(classifier)

    def f(images: Tensor) -> Tensor:
        images = _as_batch(images)
        return _class_probability(classifier(images.to(device)).float(), k, len(images))

    return f


def gradient_verification_score(embedder: nn.Module, reference_image: Tensor) -> ScoreFn:
    """Eq. 2 with gradients: the cosine similarity of the PyTorch ``embedder``'s embedding of
    each image to that of ``reference_image`` [C,H,W] (computed once, without gradient)."""
    device = model_device(embedder)
    ref = _as_batch(reference_image)
    if ref.shape[0] != 1:
        raise ValueError(f"reference_image must be one image [C,H,W], got {tuple(ref.shape)}")
    with torch.no_grad():
        y = F.normalize(embedder(ref.to(device)).float(), dim=-1)[0]

    def f(images: Tensor) -> Tensor:
        e = F.normalize(embedder(_as_batch(images).to(device)).float(), dim=-1)
        return (e @ y).cpu()

    return _tagged(f, reference_embedding=y.cpu())


# ----------------------------------------------------------------------------- detection
def box_iou(boxes: Tensor, box: Tensor) -> Tensor:
    """IoU of each of ``boxes`` [K,4] (x1, y1, x2, y2) with one ``box`` [4] -> [K]."""
    boxes = boxes.float().reshape(-1, 4)
    box = box.float().reshape(4)
    x1 = torch.maximum(boxes[:, 0], box[0])
    y1 = torch.maximum(boxes[:, 1], box[1])
    x2 = torch.minimum(boxes[:, 2], box[2])
    y2 = torch.minimum(boxes[:, 3], box[3])
    inter = (x2 - x1).clamp(min=0) * (y2 - y1).clamp(min=0)
    area = lambda b: (b[..., 2] - b[..., 0]).clamp(min=0) * (b[..., 3] - b[..., 1]).clamp(min=0)
    union = area(boxes) + area(box) - inter
    return torch.where(union > 0, inter / union.clamp(min=1e-12), torch.zeros_like(inter))


# A detection list: (boxes [K,4] xyxy px, scores [K], classes [K] or None) per image.
DetectionList = tuple[Tensor, Tensor, "Tensor | None"]


def mtcnn_detections(detector) -> Callable[[Tensor], list[DetectionList]]:
    """Adapter for ``detector.detect(images) -> [Detections(.boxes, .probs, .landmarks)]``
    (:class:`xfr.models.detect.MTCNNDetector`); faces have no class."""

    batched = "batch_size" in inspect.signature(detector.detect).parameters

    def run(images: Tensor) -> list[DetectionList]:  # all perturbed images in one MTCNN batch
        dets = detector.detect(images, batch_size=max(1, len(images))) if batched else detector.detect(images)
        return [(d.boxes, d.probs, None) for d in dets]

    return run


def to_ultralytics(images: Tensor) -> list[np.ndarray]:
    """[N,3,H,W] RGB in [0,1] -> list of HxWx3 uint8 BGR arrays, what ultralytics expects of
    numpy input (as ``cv2.imread`` gives it); ultralytics letterboxes them to its ``imgsz`` and
    returns boxes in these images' pixels."""
    u8 = (images.detach().float().clamp(0, 1).cpu() * 255.0 + 0.5).to(torch.uint8)
    arr = u8.permute(0, 2, 3, 1).numpy()
    if arr.shape[3] == 1:
        arr = np.repeat(arr, 3, axis=3)
    return [np.ascontiguousarray(a[:, :, 2::-1]) for a in arr]


def yolo_detections(model, conf: float = 0.001, **predict_kwargs) -> Callable[[Tensor], list[DetectionList]]:
    """Adapter for an ``ultralytics.YOLO`` model: call it on the batch, read
    ``results[i].boxes.xyxy / conf / cls``. ``conf`` is the confidence floor of the prediction
    (low, so that weak detections of perturbed images still count as scores)."""
    kwargs = dict(conf=conf, verbose=False)
    kwargs.update(predict_kwargs)

    def run(images: Tensor) -> list[DetectionList]:
        threads = torch.get_num_threads()
        results = model(to_ultralytics(_as_batch(images)), **kwargs)
        if torch.get_num_threads() != threads:  # ultralytics' select_device() lowers it for good
            torch.set_num_threads(threads)
        out = []
        for r in results:
            b = r.boxes
            out.append((b.xyxy.detach().float().cpu(), b.conf.detach().float().cpu(),
                        b.cls.detach().cpu().long()))
        return out

    return run


def _detections_fn(detector, backend: str = "auto") -> Callable[[Tensor], list[DetectionList]]:
    if hasattr(detector, "detect"):
        return mtcnn_detections(accelerated(detector, backend))
    if hasattr(detector, "predict") and callable(detector):
        return yolo_detections(detector)
    if callable(detector):
        return detector
    raise ValueError("detector must have .detect(images) (MTCNN), be an ultralytics YOLO model, "
                     "or be a function images -> [(boxes, scores, classes)]")


def detection_score(detector, box: Sequence[float] | Tensor, cls: int | None = None,
                    iou_threshold: float = 0.5, backend: str = "auto") -> ScoreFn:
    """Eq. 4: f(X) = L(k^, 'SC'), the score of the detection in f_d(X) that matches class
    ``cls`` (any class when None) and location ``box`` (x1, y1, x2, y2 pixels; IoU >=
    ``iou_threshold``); the highest such score when several match; 0 when none does.

    ``detector``: an object with ``.detect(images)`` (MTCNN), an ``ultralytics.YOLO`` model, or a
    function images -> list of (boxes [K,4], scores [K], classes [K] or None). ``backend``:
    the execution path of MTCNN's nets (see :func:`unit_embeddings`).
    """
    box_t = torch.as_tensor(box, dtype=torch.float32).reshape(-1)
    if box_t.numel() != 4 or not bool(torch.isfinite(box_t).all()) or \
            box_t[2] <= box_t[0] or box_t[3] <= box_t[1]:
        raise ValueError(f"box must be (x1, y1, x2, y2) with x2 > x1 and y2 > y1, got {box!r}")
    if not 0.0 < float(iou_threshold) <= 1.0:
        raise ValueError(f"iou_threshold must be in (0, 1], got {iou_threshold!r}")
    detect = _detections_fn(detector, backend)

    def f(images: Tensor) -> Tensor:
        images = _as_batch(images)
        dets = detect(images)
        if len(dets) != images.shape[0]:
            raise ValueError(f"detector returned {len(dets)} results for {images.shape[0]} images")
        out = torch.zeros(images.shape[0], dtype=torch.float32)
        for i, (boxes, scores, classes) in enumerate(dets):
            if boxes is None or len(boxes) == 0:
                continue
            ok = box_iou(boxes, box_t) >= iou_threshold
            if cls is not None:
                if classes is None:
                    raise ValueError("cls given but the detector reports no classes (MTCNN "
                                     "detects faces only; use cls=None)")
                ok &= classes.reshape(-1).long() == int(cls)
            if bool(ok.any()):
                out[i] = scores.reshape(-1).float()[ok].max()
        return out

    return f


# ----------------------------------------------------------------------------- gender models
# P(female) of the zoo's gender classifiers (``faceres-gender``, ``mini-xception-gender``), the
# score functions of the make-up bias study (CMS paper §5.2, :mod:`xfr.experiments.bias`).

FEMALE_CLASS_NAMES = ("female", "woman")
MODEL_KEYS = {"faceres-gender": "faceres", "mini-xception-gender": "xception"}


def female_index(classes: Sequence[str]) -> int:
    """Index of the 'female' class in a gender model's ``classes`` ('female' or 'woman')."""
    names = [str(c).lower() for c in classes]
    for want in FEMALE_CLASS_NAMES:
        if want in names:
            return names.index(want)
    raise ValueError(f"no female class among {tuple(classes)}: expected one of {FEMALE_CLASS_NAMES}")


@dataclass
class GenderModel:
    """A gender classifier of the zoo with its short ``key`` and the index of its female class."""

    key: str
    name: str
    model: torch.nn.Module
    female: int

    def score_fn(self, context: float = 0.0) -> ScoreFn:
        """f(images [N,3,H,W] in [0,1]) -> P(female) [N] (MinPlus eq. 3, the class-confidence
        phi(I, c) of the CMS paper), after padding the images by ``context`` x their size."""
        return p_female_fn(self.model, self.female, context)


def p_female_fn(model, female: int, context: float = 0.0, backend: str = "auto") -> ScoreFn:
    """P(female) of ``model`` (logits [N,K]) on images padded by ``context`` (see :mod:`xfr.experiments.bias`)."""
    context = float(context)
    if not 0.0 <= context <= 2.0:
        raise ValueError(f"context must be in [0, 2] (fraction of the image size), got {context}")
    return attribute_score(classifier_net(model, context), female, backend)


def model_key(name: str) -> str:
    return MODEL_KEYS.get(name, name.replace("-gender", "").replace("-", "_"))


def load_gender_models(names: Sequence[str], device: str = "cpu") -> dict[str, GenderModel]:
    """``xfr.models.load`` each named gender model -> {key: GenderModel} (keys 'faceres',
    'xception' for the two zoo models)."""
    from . import models

    if isinstance(names, str) or not len(names):
        raise ValueError(f"names must be a non-empty list of model names, got {names!r}")
    out = {}
    for name in names:
        m = models.load(name, device=device)
        classes = getattr(m, "classes", None)
        if classes is None:
            raise ValueError(f"model {name!r} has no `classes`; it is not a gender classifier")
        out[model_key(name)] = GenderModel(model_key(name), name, m, female_index(classes))
    return out


# ----------------------------------------------------------------------------- CMS paper scores
# (John et al., eqs. 1, 7, 8; notebooks/cms.ipynb). class_score is the probability of the
# ground-truth class; the gender mini-Xception gets the face with extra context
# (xfr.models.xception.ContextPadded) because it was trained on loose IMDB crops.
# pair_confidence / mate_confidence are eq. 8, S = c (cos(Q1, Q2) - tau), with c = +1 for a
# genuine pair and -1 for an impostor pair, so that a correct decision has a positive confidence
# (eq. 8 as printed, c (tau - cos) with c = 1 for "same", is negative for every correctly
# verified genuine pair; the sign convention is the only difference).
def classifier_net(model: nn.Module, context: float = 0.0) -> nn.Module:
    return ContextPadded(model, context) if context and context > 0 else model


def class_score(model: nn.Module, k: int, context: float = 0.0, backend: str = "auto") -> ScoreFn:
    """phi(I, c) of eq. 1: the softmax probability of class ``k`` (the ground truth), the face
    padded by ``context`` first when > 0."""
    net = classifier_net(model, context)
    f = attribute_score(net, k, backend)
    return _tagged(f, classifier=net, k=int(k))


def predict(model: nn.Module, images: Tensor, context: float = 0.0, batch_size: int = 64) -> Tensor:
    """Class probabilities [N,K] of a classifier on faces [N,3,H,W]."""
    net = classifier_net(model, context)
    with torch.inference_mode():
        return torch.cat([torch.softmax(net(images[i:i + batch_size]).float(), 1)
                          for i in range(0, len(images), batch_size)])


def cosine_tau(similarities, same) -> float:
    """tau of eq. 8: the cosine-similarity threshold with the best verification accuracy on the
    given pairs (genuine iff cos > tau; :func:`xfr.metrics.best_threshold` on 1 - cos)."""
    from .metrics import best_threshold

    return 1.0 - best_threshold(1.0 - np.asarray(similarities, dtype=np.float64), same)


def _sign(same) -> float:
    return 1.0 if bool(same) else -1.0


def pair_confidence(embedder, tau: float, same: bool, backend: str = "auto") -> ScoreFn:
    """Eq. 8 on a side-by-side pair canvas [N,3,S,2S]: c (cos(e(left), e(right)) - tau), c = +1
    for a genuine pair, -1 for an impostor pair (positive = verified correctly)."""
    embed = unit_embeddings(embedder, backend)
    c = _sign(same)

    def f(canvas: Tensor) -> Tensor:
        if canvas.dim() == 3:
            canvas = canvas[None]
        w = canvas.shape[-1]
        if w % 2:
            raise ValueError(f"a pair canvas has an even width (two faces side by side), got {w}")
        n = canvas.shape[0]
        e = embed(torch.cat([canvas[..., : w // 2], canvas[..., w // 2:]]))
        return c * ((e[:n] * e[n:]).sum(1) - tau)

    return _tagged(f, verification=True)


def mate_confidence(embedder, mate: Tensor, tau: float, same: bool, backend: str = "auto") -> ScoreFn:
    """Eq. 8 with one image perturbed: f(X) = c (cos(e(X), e(mate)) - tau), ``mate`` fixed."""
    embed = unit_embeddings(embedder, backend)
    ref = embed(mate[None])[0]
    c = _sign(same)

    def f(images: Tensor) -> Tensor:
        return c * (embed(images) @ ref - tau)

    return _tagged(f, reference_embedding=ref, verification=True)


def warped_score(f: ScoreFn, mat: np.ndarray, size: int) -> ScoreFn:
    """f on images warped by ``mat`` into size x size first (a keypoint-aligned model explained
    in an unaligned frame: occlusions happen in the frame, the model sees the warped chip)."""

    def g(images: Tensor) -> Tensor:
        if images.dim() == 3:
            images = images[None]
        return f(batched_warp(images, mat, size))

    return g


def decided_correctly(f: ScoreFn, image: Tensor) -> bool:
    """Whether the model's decision on ``image`` is right: for :func:`class_score` the arg-max
    class is the explained (ground-truth) class, for :func:`mate_confidence` /
    :func:`pair_confidence` (eq. 8) the confidence is > 0."""
    if getattr(f, "verification", False):
        with torch.inference_mode():
            return float(f(image[None])[0]) > 0.0
    clf, k = getattr(f, "classifier", None), getattr(f, "k", None)
    if clf is None or k is None:
        raise ValueError("f must come from class_score, mate_confidence or pair_confidence")
    with torch.inference_mode():
        return int(clf(image[None]).float().argmax(1)[0]) == int(k)


def embed_chips(embedder, chips: Tensor, batch_size: int = 64, backend: str = "auto") -> Tensor:
    """Unit embeddings [N, D] of chips [N,3,H,W]."""
    embed = unit_embeddings(embedder, backend)
    return torch.cat([embed(chips[i:i + batch_size]) for i in range(0, len(chips), batch_size)])

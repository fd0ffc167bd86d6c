"""Command line: ``xfr explain ...`` writes a saliency map overlaid on the face and prints the score.

Examples::

    xfr explain --task verification --method minplus probe.jpg reference.jpg -o map.png
    xfr explain --task expression --class happy --no-align fer_crop.png -o map.png
    xfr explain --task gender --class woman face.jpg -o map.png --method rise -p n_masks=1000
    xfr explain --task detection --method rise-gauss photo.jpg -o map.png [--box x1 y1 x2 y2]

Verification aligns both faces with MTCNN onto the recognition model's template; expression and
gender align the face onto the 112x112 ArcFace template (``--no-align`` uses the image as it is,
e.g. for FER-2013 crops); detection explains the MTCNN score of the given box (default: the most
probable face) in a window of 2.5x the box around it, resized to 96 px, as the detection stage
does (``--context 0``: on the whole photo).

Random methods (lime, lime-map, rise, rise-gauss, s-rise) use the mask count the reliability
stage found to reach a seed-to-seed Spearman of 0.9 on the task (``DEFAULT_MASKS``; ``-p
n_masks=...`` overrides) and print the map's split-half reliability (the Spearman of the maps of
the even and the odd masks, stepped up to all masks; an estimate of the Spearman between two
seeds, at no extra cost). Below 0.9 the map is flagged ``unstable`` in the output and under the
picture. ``--raw map.npy`` saves the float32 map. ``--help-params`` lists each method's ``-p``
keys with their defaults.

Every argument, ``-p`` key and path is checked before any model loads; a user error prints one
line ``error: ...`` and exits with code 2 (nothing written).
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, cast

if TYPE_CHECKING:
    from torch import Tensor

    from .models.detect import MTCNNDetector

DEFAULT_MODELS = {
    "verification": "dlib-resnet",
    "expression": "mini-xception-fer2013",
    "gender": "mini-xception-gender",
    "detection": "mtcnn",
}
# white-box (gradient) methods: xfr.explain.gradients, on a differentiable score function
GRADIENT_METHODS = ("gradient", "gradient-x-input", "smoothgrad", "integrated-gradients")
# the Grad-CAM family (xfr.explain.cam.cam, pytorch-grad-cam) at the model's Grad-CAM layer
CAM_METHODS = {"grad-cam": "gradcam", "grad-cam++": "gradcam++", "score-cam": "scorecam"}
# the module-based white-box methods (xfr.explain.white_box.white_box_map: captum, zennit, torchray)
MODULE_METHODS = ("guided-backprop", "deeplift", "lrp", "guided-grad-cam", "excitation-backprop")
METHODS = ("minplus", "avg", "occlusion", "lime", "lime-map", "rise", "rise-gauss", "s-rise",
           "xmaps", *GRADIENT_METHODS, *CAM_METHODS, *MODULE_METHODS)
WHITE_BOX = (*GRADIENT_METHODS, *CAM_METHODS, *MODULE_METHODS)
SIGNED_METHODS = ("gradient-x-input", "integrated-gradients", "deeplift", "lrp")
RANDOM_METHODS = ("lime", "lime-map", "rise", "rise-gauss", "s-rise")
# Mask (sample) counts of the random methods per task: results/reliability/defaults.csv, the
# count at which the reliability stage's seed-to-seed Spearman reaches 0.9 with the centred
# scoring (None: not within RELIABILITY_CAP passes). tests/test_cli.py keeps the two equal.
RELIABILITY_CAP = 8000
DEFAULT_MASKS: dict[str, dict[str, int | None]] = {
    "verification": {"rise": 2000, "rise-gauss": 700, "s-rise keep": 1500, "s-rise remove": 2300},
    "expression": {"lime": 500, "lime-map": 1100, "rise": 4100, "rise-gauss": 1000, "s-rise keep": 5000, "s-rise remove": 4200},
    "detection": {"rise": 3100, "rise-gauss": 1600},
    "masks": {"rise": 2000, "rise-gauss": 1400},
}
TASK_MEASURED_AS = {"gender": "expression"}  # gender uses the expression model family's counts


EXPLAIN_DATASET_DOC = """Explain every item of a data set into shards of maps (.npz, float16) and per-item tables
(score, status, seconds), with a manifest.json; a rerun skips the finished shards (xfr.jobs).

    xfr explain-dataset --task expression --class happy data/fer2013_privatetest/happy -o runs/fer-happy \\
        --method occlusion -p patch=16 -p stride=8 --shard-size 100 --workers 2

Images are used as they are (cropped faces, as with xfr explain --no-align)."""


class CliError(ValueError):
    """A user error: ``main`` prints ``error: <message>`` (one line) and returns 2."""


# The -p keys the CLI's own options own; the explainers' other arguments that cannot be given
# as text (arrays), per method.
OPTION_KEYS = {"batch_size": "--batch-size", "progress": "--progress / --quiet"}
NOT_FROM_TEXT = {"segments"}
# -p keys whose value counts something: an int >= 1
COUNT_KEYS = {"n_masks", "n_samples", "n_blobs", "n_patches", "t_max", "patch", "stride", "kernel",
              "num_features", "s", "step", "width", "n_steps"}
MIN_IMAGE_SIDE = 16


def method_function(method: str) -> Callable:
    """The explainer a method name runs (LIME and LIME-map: :func:`xfr.explain.lime.lime_explain`)."""
    from . import explain as ex
    from .explain.lime import lime_explain

    if method in ("lime", "lime-map"):
        return lime_explain
    if method == "xmaps":
        return ex.xmaps
    if method in GRADIENT_METHODS:
        from .explain.gradients import GRADIENT_EXPLAINERS

        return cast("Callable", GRADIENT_EXPLAINERS[method])
    if method in CAM_METHODS or method == "guided-grad-cam":
        return _cam_options
    if method in MODULE_METHODS:
        return _MODULE_OPTIONS[method]
    return cast("Callable", ex.SINGLE_IMAGE_METHODS[method])


def _cam_options(layer: str | None = None) -> None:
    """The -p keys of the Grad-CAM family: ``layer``, a module name of the model
    (``model.named_modules()``); default: the model's Grad-CAM layer (xfr.explain.cam.cam_setup)."""


def _no_options() -> None:
    """No -p keys (guided backpropagation)."""


def _deeplift_options(baseline: float = 0.0) -> None:
    """DeepLIFT's -p key: ``baseline``, the reference value (0 = black)."""


def _lrp_options(rule: str = "epsilon-plus-flat", epsilon: float = 1e-6) -> None:
    """LRP's -p keys: ``rule`` (epsilon-plus-flat, epsilon-plus, epsilon) and ``epsilon``."""


def _ebp_options(layer: str | None = None) -> None:
    """Excitation backprop's -p key: ``layer``, the module whose excitation is mapped."""


_MODULE_OPTIONS: dict[str, Callable] = {"guided-backprop": _no_options, "deeplift": _deeplift_options,
                                        "lrp": _lrp_options, "excitation-backprop": _ebp_options}


def method_params(method: str) -> dict[str, tuple]:
    """The ``-p`` keys ``method`` accepts: {key: (default, annotation)}."""
    import inspect

    skip = {"f", "image", "embedder", "image1", "image2", *OPTION_KEYS, *NOT_FROM_TEXT}
    if method == "lime-map":
        skip |= {"num_features", "kernel_width"}  # LIME's linear model; LIME-map has none
    out = {}
    for name, par in inspect.signature(method_function(method)).parameters.items():
        if name in skip or par.kind in (par.VAR_KEYWORD, par.VAR_POSITIONAL):
            continue
        default = None if par.default is inspect.Parameter.empty else par.default
        out[name] = (default, str(par.annotation).replace("'", ""))
    return out


def params_help() -> str:
    lines = ["-p KEY=VALUE keys per method (default):"]
    for method in METHODS:
        keys = ", ".join(f"{k}={d!r}" for k, (d, _) in method_params(method).items())
        lines.append(f"  {method}: {keys}")
    lines.append("Random methods: n_masks (n_samples for lime, lime-map) defaults to the count the "
                 "reliability stage measured per task (DEFAULT_MASKS), not the value above.")
    return "\n".join(lines)


def check_params(method: str, params: dict) -> dict:
    """``params`` checked against ``method``'s arguments: known keys, values of the annotated
    type (int, float, bool, str), counts >= 1. The explainer checks the rest when it runs."""
    accepted = method_params(method)
    for key, value in params.items():
        if key in OPTION_KEYS:
            raise CliError(f"-p {key}=... is an option here: use {OPTION_KEYS[key]}")
        if key not in accepted:
            raise CliError(f"{method} has no parameter {key!r}; it accepts: {', '.join(accepted)} "
                           f"(xfr explain --help-params)")
        kind = accepted[key][1]
        is_int = isinstance(value, int) and not isinstance(value, bool)
        if key in COUNT_KEYS and not (is_int and value >= 1):
            raise CliError(f"-p {key} must be an integer >= 1, got {value!r}")
        if kind == "int" and not (is_int and value >= 0):
            raise CliError(f"-p {key} must be an integer >= 0, got {value!r}")
        if kind == "float" and not (is_int or isinstance(value, float)):
            raise CliError(f"-p {key} must be a number, got {value!r}")
        if kind == "bool" and not isinstance(value, bool):
            raise CliError(f"-p {key} must be true or false, got {value!r}")
        if kind == "str" and not isinstance(value, str):
            raise CliError(f"-p {key} must be a word, got {value!r}")
    return params


def check_image_file(path: str) -> None:
    """A readable image of at least MIN_IMAGE_SIDE px a side, or a CliError that says why."""
    from PIL import Image, UnidentifiedImageError

    p = Path(path)
    if not p.exists():
        raise CliError(f"image file not found: {path}")
    if not p.is_file():
        raise CliError(f"not a file: {path}")
    if p.stat().st_size == 0:
        raise CliError(f"{path} is empty (0 bytes)")
    try:
        with Image.open(p) as im:
            im.load()
            size = im.size
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise CliError(f"{path} is not a readable image ({err})") from None
    if min(size) < MIN_IMAGE_SIDE:
        raise CliError(f"{path} is {size[0]}x{size[1]} px; a face needs at least "
                       f"{MIN_IMAGE_SIDE}x{MIN_IMAGE_SIDE}")


def check_output(path: str | None, suffix: str, what: str) -> None:
    if path is None:
        return
    p = Path(path)
    if suffix and p.suffix.lower() != suffix:
        raise CliError(f"{what} {path} must end in {suffix}")
    if not p.parent.is_dir():
        raise CliError(f"the folder of {what} {path} does not exist: {p.parent} (create it first)")


def check_args(args) -> dict:
    """Every argument checked before any model loads; returns the -p parameters."""
    n_images = 2 if args.task == "verification" else 1
    if len(args.images) != n_images:
        want = "two images: PROBE REFERENCE" if n_images == 2 else "one image"
        raise CliError(f"{args.task} needs {want}, got {len(args.images)}")
    if args.method == "xmaps" and args.task != "verification":
        raise CliError("xmaps explains a verification pair (--task verification)")
    if args.method in WHITE_BOX and args.task == "detection":
        raise CliError(f"{args.method} needs a differentiable score; the detection score (a matched, "
                       f"non-maximum-suppressed box) has no gradient: use a black-box method")
    for path in args.images:
        check_image_file(path)
    check_output(args.output, ".png", "--output")
    check_output(args.raw, ".npy", "--raw")
    check_output(args.save_map, "", "--save-map")
    if args.model is not None:
        from .models import available

        if args.model not in available():
            raise CliError(f"unknown model {args.model!r}; available: {', '.join(available())}")
    if args.batch_size < 1:
        raise CliError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.seed < 0:
        raise CliError(f"--seed must be >= 0, got {args.seed}")
    if not 0.0 < args.iou <= 1.0:
        raise CliError(f"--iou must be in (0, 1], got {args.iou}")
    if args.context < 0:
        raise CliError(f"--context must be >= 0, got {args.context}")
    if args.window_size < MIN_IMAGE_SIDE:
        raise CliError(f"--window-size must be >= {MIN_IMAGE_SIDE}, got {args.window_size}")
    if args.box is not None and not (args.box[2] > args.box[0] and args.box[3] > args.box[1]):
        raise CliError(f"--box must be X1 Y1 X2 Y2 with X2 > X1 and Y2 > Y1, got {args.box}")
    if args.cls is not None and args.task not in ("expression", "gender"):
        raise CliError(f"--class is for expression and gender, not {args.task}")
    if args.task in ("expression", "gender") and args.cls is None:
        raise CliError(f"--class is required for {args.task}")
    if args.cls is not None:
        classes = model_classes(args.model or DEFAULT_MODELS[args.task])
        if classes is not None:
            _class_index(classes, args.cls)  # an unknown class is reported before the model loads
    return check_params(args.method, _params(args.param))


def _parse_value(text: str):
    if "," in text:
        return tuple(_parse_value(t.strip()) for t in text.split(",") if t.strip())
    for convert in (int, float):
        try:
            return convert(text)
        except ValueError:
            pass
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    return text


def _params(items: list[str]) -> dict:
    out = {}
    for item in items or []:
        if "=" not in item:
            raise CliError(f"--param expects KEY=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        out[key.strip()] = _parse_value(value.strip())
    return out


def _load_face(path: Path, template: str | None, mtcnn, size: int | None = None):
    """The image of ``path`` aligned onto ``template``; None: as it is, resized to ``size``
    (the model's input) when given."""
    from .faces.windows import resize_to
    from .io import load_image
    from .models.align import NoFaceError, detect_and_align

    if template is None:
        image = load_image(path)
        if size is not None and tuple(image.shape[1:]) != (size, size):
            image = resize_to(image, (size, size))
        return image
    try:
        return detect_and_align(load_image(path), template, mtcnn=mtcnn, select="largest")
    except NoFaceError:
        raise CliError(f"MTCNN found no face in {path}; if it is already a cropped, upright face, "
                       f"add --no-align to explain the image as it is") from None


def model_classes(model_name: str) -> tuple[str, ...] | None:
    """The class names of a classifier of the zoo, known without loading its weights (None: not a
    classifier listed here; its classes are then checked after it loads)."""
    from .models.human import FACERES_GENDER_CLASSES
    from .models.xception import FER2013_CLASSES, GENDER_CLASSES

    return {"mini-xception-fer2013": FER2013_CLASSES, "big-xception-fer2013": FER2013_CLASSES,
            "mini-xception-gender": GENDER_CLASSES, "faceres-gender": FACERES_GENDER_CLASSES}.get(model_name)


def _class_index(classes, name: str) -> int:
    classes = list(classes)
    if name is None:
        raise CliError(f"--class is required for this task; one of {classes}")
    if name.isdigit() and int(name) < len(classes):
        return int(name)
    if name not in classes:
        raise CliError(f"unknown class {name!r}; the model's classes are {classes}")
    return classes.index(name)


def explain_command(args) -> int:
    import torch

    from . import explain as ex
    from .models import load
    from .models.backends import accelerated
    from .score import attribute_score, detection_score, verification_score

    params = check_args(args)  # before any model loads
    progress = bool(args.progress or (not args.quiet and sys.stderr.isatty()))
    common = {"batch_size": args.batch_size, "progress": progress}
    if (args.method in RANDOM_METHODS or args.method == "smoothgrad") and "seed" not in params:
        params["seed"] = args.seed
    model_name = args.model or DEFAULT_MODELS[args.task]
    mtcnn = cast("MTCNNDetector", load("mtcnn"))
    images = args.images

    if args.task == "verification":
        model = load(model_name)
        template = None if args.no_align else getattr(model, "template", None)
        size = getattr(model, "input_size", None)
        probe = _load_face(Path(images[0]), template, mtcnn, size)
        ref = _load_face(Path(images[1]), template, mtcnn, size)
        if probe.shape != ref.shape:  # --no-align with a model of no fixed input size
            raise CliError(f"probe {tuple(probe.shape)} and reference {tuple(ref.shape)} differ in "
                           f"size; crop them to the same size or drop --no-align to align both")
        decision_text = print_decision(model, model_name, probe, ref, args.backend)
        f = verification_score(model, ref, backend=args.backend)
        image = probe
        if args.method == "xmaps":
            res = ex.xmaps(accelerated(model, args.backend), probe, ref, **params, **common)
            print(f"cosine distance d(probe, reference) = {res.distance:.4f}")
            print(f"score f(X) = <f_e(X), f_e(Y)> = {1.0 - res.distance:.4f} (cosine similarity the map explains)")
            print("colours (X-Maps, HLS): hue = the patch's effect (red: removing it lowers the "
                  "similarity, blue: raises it), lightness = how much")
            out = explanation_figure(
                [(f"reference Y\n{Path(images[1]).name}", ref), (f"probe X\n{Path(images[0]).name}", probe)],
                res.map1, f"xmaps on verification ({model_name}): similarity {1.0 - res.distance:.4f}",
                f"{decision_text}\nparameters: {_param_text('xmaps', params)}", xmaps=True, path=args.output)
            if args.save_map:
                torch.save(res.map1, args.save_map)
            if args.raw:
                _save_raw(res.map1, args.raw)
            print(f"wrote {out}")
            return 0
        what = "cosine similarity <f_e(X), f_e(Y)>"
    elif args.task in ("expression", "gender"):
        model = load(model_name)
        k = _class_index(model.classes, args.cls)
        image = _load_face(Path(images[0]), None if args.no_align else "arcface112", mtcnn)
        f = attribute_score(model, k, backend=args.backend)
        probs = [float(attribute_score(model, j, backend=args.backend)(image[None])[0])
                 for j in range(len(model.classes))]  # type: ignore[arg-type]
        top = max(range(len(probs)), key=probs.__getitem__)
        print(f"prediction: {model.classes[top]} ({probs[top]:.3f}); explained class: "  # type: ignore[index]
              f"{model.classes[k]} ({probs[k]:.3f})")  # type: ignore[index]
        what = f"P({model.classes[k]} | X)"  # type: ignore[index]  # plain attribute; stubs type Module.__getattr__ as Tensor | Module
    else:  # detection
        from .io import load_image
        from .models.detect import best_face

        image = load_image(images[0])
        if args.box:
            box = args.box
        else:
            det = mtcnn.detect(image)[0]
            pick = best_face(det)
            if pick is None:
                raise CliError(f"MTCNN found no face in {images[0]}; give the face's box with "
                               f"--box X1 Y1 X2 Y2 (pixels)")
            box = det.boxes[pick].tolist()
        if args.context > 0:  # explain the detection in its window (xfr.faces.windows.window_for_box)
            from .faces.windows import window_for_box

            fw = window_for_box(mtcnn, image, box, args.context, args.window_size, args.iou)
            if fw is None:
                raise CliError(f"MTCNN does not find the face {[round(v, 1) for v in box]} again "
                               f"in its {args.context}x window; give a larger --context or "
                               f"--context 0 (the whole photo)")
            print(f"window {list(fw.rect)} of the photo (x1 y1 x2 y2), resized to "
                  f"{args.window_size} px; the face is {[round(v, 1) for v in fw.box.tolist()]} in it")
            image, box = fw.window, fw.box.tolist()
        f = detection_score(mtcnn, box, iou_threshold=args.iou, backend=args.backend)
        what = f"MTCNN score of box {[round(v, 1) for v in box]}"

    score = float(f(image[None])[0])
    print(f"score f(X) = {what} = {score:.4f}")
    warning = None
    if args.method in RANDOM_METHODS:  # the map and how much of it is the draw of the masks
        from .explain.reliability import TARGET_RHO, count_parameter, explain_with_reliability

        key = count_parameter(args.method)
        if key not in params:
            params[key] = default_masks(args.task, args.method)
        smap, rho = explain_with_reliability(f, image, args.method, **params, **common)
        print(f"reliability: split-half Spearman of the map (Spearman-Brown; estimates the Spearman "
              f"between two seeds) = {rho:.2f} with {key} = {params[key]}")
        if not rho >= TARGET_RHO:
            warning = f"unstable: seed-to-seed rho = {rho:.2f} < {TARGET_RHO} ({params[key]} masks)"
            print(f"{warning}: the map is partly mask noise; more masks (-p {key}=...) or a "
                  f"deterministic method (minplus, occlusion) give a stable answer")
    elif args.method in GRADIENT_METHODS:  # on the PyTorch model itself, with gradients
        from .score import gradient_class_score, gradient_verification_score

        if args.task == "verification":
            f_grad = gradient_verification_score(model, ref)
        else:
            f_grad = gradient_class_score(model, k)
        smap = method_function(args.method)(f_grad, image, **params, batch_size=args.batch_size)
    elif args.method in CAM_METHODS:
        from .explain.cam import cam

        try:
            smap = cam(CAM_METHODS[args.method], model, image, ref if args.task == "verification" else k,
                       layer=params.get("layer"), model_name=model_name, batch_size=args.batch_size)
        except ValueError as err:  # an unknown -p layer=..., or a model with no known Grad-CAM layer
            raise CliError(str(err)) from None
    elif args.method in MODULE_METHODS:  # captum / zennit / torchray on the model's modules
        from .explain.white_box import white_box_map

        opts = dict(params)
        try:
            smap = white_box_map(args.method, model, image, ref if args.task == "verification" else k,
                                 model_name=model_name, layer=opts.pop("layer", None),
                                 batch_size=args.batch_size, **opts)
        except ValueError as err:  # a TF.js graph (no modules), an unknown layer, a bad -p value
            raise CliError(str(err)) from None
    else:
        # The explainers' signatures differ, so mypy types the dict's values as bare `function`.
        method = cast("Callable[..., Tensor]", ex.SINGLE_IMAGE_METHODS[args.method])
        smap = method(f, image, **params, **common)
    shown_params = _param_text(args.method, params)
    if args.task == "verification":
        panels = [(f"reference Y\n{Path(images[1]).name}", ref), (f"probe X (explained)\n{Path(images[0]).name}", image)]
        subtitle = f"{decision_text}\nparameters: {shown_params}"
    elif args.task == "detection":
        panels = [(f"{Path(images[0]).name}\nexplained box (white)", image)]
        subtitle = f"parameters: {shown_params}"
    else:
        panels = [(Path(images[0]).name, image)]
        subtitle = f"parameters: {shown_params}"
    out = explanation_figure(panels, smap, f"{args.method} on {args.task} ({model_name}): {what} = {score:.4f}",
                             subtitle, box=box if args.task == "detection" else None, warning=warning,
                             signed=args.method in SIGNED_METHODS,
                             path=args.output)
    if args.save_map:
        torch.save(smap, args.save_map)
    if args.raw:
        _save_raw(smap, args.raw)
    print(f"wrote {out}")
    return 0


def print_decision(model, model_name: str, probe, ref, backend: str) -> str:
    """The model's own verdict on the pair: its distance and threshold where it ships one
    (dlib: euclidean distance of the raw descriptors, same person below 0.6)."""
    import torch

    from .models.backends import accelerated

    threshold = getattr(model, "threshold", None)
    with torch.inference_mode():
        a, b = accelerated(model, backend)(torch.stack([probe, ref])).float()
    if threshold is None:
        text = (f"decision: none ({model_name} ships no verification threshold; the verification "
                f"stage fits one on LFW)")
    else:
        d = float(torch.linalg.vector_norm(a - b))
        same = d < float(threshold)
        text = (f"decision: {'SAME person' if same else 'DIFFERENT persons'} ({model_name} euclidean "
                f"distance {d:.4f} {'<' if same else '>='} its threshold {float(threshold):g})")
    print(text)
    return text


def explanation_figure(panels, smap, title: str, subtitle: str, *, xmaps: bool = False,
                       signed: bool = False, box=None, warning: str | None = None, path: str | Path):
    """The CLI's picture: the input panels (caption, image [3,H,W]), then the map over the last
    one with a colour bar whose ends say what they mean; ``box`` drawn on the images
    (detection); ``warning`` in red under the title; saved as PNG at ``path``."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib import cm
    from matplotlib.colors import Normalize
    from matplotlib.patches import Rectangle

    from . import viz

    values = np.asarray(smap.detach().cpu().numpy() if hasattr(smap, "detach") else smap, dtype=np.float64)
    base = panels[-1][1]
    if xmaps:
        shown = viz.blend_hls(base, values)
        norm, cmap = Normalize(-1.0, 1.0), "RdYlGn"
        ends = ("-1\ndissimilar", "+1\nsimilar")
        caption = "X-Maps (HLS: hue = map, lightness = face)"
    else:
        shown = viz.overlay(base, values)
        lo, hi = float(np.nanmin(values)), float(np.nanmax(values))
        norm, cmap = Normalize(lo, hi if hi > lo else lo + 1.0), "jet"
        if signed:  # gradient x input, IG, DeepLIFT, LRP: the sign says which way a pixel pushes the score
            ends = (f"{lo:.3g}\nlowers the score", f"{hi:.3g}\nraises the score")
            caption = "signed attribution (min-max scaled, jet)"
        else:
            ends = (f"{lo:.3g}\nleast salient", f"{hi:.3g}\nmost salient")
            caption = "saliency map (min-max scaled, jet)"
    n = len(panels) + 1
    fig, axes = plt.subplots(1, n, figsize=(3.0 * n + 0.6, 3.9))
    for ax, (label, img) in zip(axes, [*panels, (caption, None)]):
        ax.imshow(viz.image_panel(img) if img is not None else shown)
        ax.set_title(label, fontsize=8)
        ax.axis("off")
        if box is not None:
            x1, y1, x2, y2 = [float(v) for v in box]
            ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor="white", lw=1.5))
    bar = fig.colorbar(cm.ScalarMappable(norm=norm, cmap=cmap), ax=axes[-1], fraction=0.046, pad=0.04)
    bar.set_ticks([float(norm.vmin or 0.0), float(norm.vmax or 0.0)])
    bar.set_ticklabels(list(ends), fontsize=7)
    fig.suptitle(title, fontsize=10, y=0.99)
    fig.text(0.5, 0.90, subtitle, ha="center", va="top", fontsize=7.5)
    if warning:
        fig.text(0.5, 0.03, warning, ha="center", va="bottom", fontsize=8.5, color="white",
                 bbox=dict(facecolor="#960000", edgecolor="none", pad=3))
    fig.subplots_adjust(top=0.74 if "\n" in subtitle else 0.78, bottom=0.12 if warning else 0.04, wspace=0.08)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return Path(path)


def _param_text(method: str, params: dict) -> str:
    """The parameters the method ran with (the rest: its defaults, ``--help-params``)."""
    return ", ".join(f"{k}={v}" for k, v in params.items()) or f"{method}'s defaults"


def _save_raw(smap, path: str) -> None:
    import numpy as np

    np.save(path, np.asarray(smap.detach().cpu().numpy() if hasattr(smap, "detach") else smap, dtype=np.float32))
    print(f"wrote raw map {path}")


def default_masks(task: str, method: str) -> int:
    """The CLI's mask (sample) count of a random method: the count at which the reliability stage
    measured (or predicted) a seed-to-seed Spearman of 0.9 on this task
    (:data:`DEFAULT_MASKS`); where it found none within its cap, the cap itself (the map is then
    flagged when its own split-half reliability stays below 0.9); where the task was not
    measured, the largest count any task needed."""
    from .explain.srise import PATCHES_DEFAULT

    name = f"s-rise {PATCHES_DEFAULT}" if method == "s-rise" else method
    table = DEFAULT_MASKS.get(TASK_MEASURED_AS.get(task, task), {})
    if name in table:
        return table[name] or RELIABILITY_CAP
    known = [v or RELIABILITY_CAP for t in DEFAULT_MASKS.values() for m, v in t.items() if m == name]
    return max(known) if known else 500


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def dataset_items(inputs: list[str], list_file: str | None, task: str) -> list:
    """The items of ``xfr explain-dataset``: image files and folders (their images, sorted) or
    the lines of ``--list`` (verification: two paths a line, separated by a tab or a comma;
    positional inputs are then taken two by two). Missing images are left to the job (recorded
    as failed items); a missing list file or folder, or no item at all, is a CliError."""
    paths: list[str] = []
    if list_file:
        lf = Path(list_file)
        if not lf.is_file():
            raise CliError(f"list file not found: {list_file}")
        lines = [ln.strip() for ln in lf.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
        if task == "verification":
            pairs = []
            for n, ln in enumerate(lines, 1):
                parts = [p.strip() for p in ln.replace("\t", ",").split(",") if p.strip()]
                if len(parts) != 2:
                    raise CliError(f"{list_file}:{n}: a verification line holds PROBE,REFERENCE, got {ln!r}")
                pairs.append(parts)
            items: list = pairs
        else:
            items = lines
    else:
        items = []
    for inp in inputs or []:
        p = Path(inp)
        if p.is_dir():
            paths += [str(q) for q in sorted(p.rglob("*")) if q.suffix.lower() in IMAGE_SUFFIXES]
        elif not p.exists() and not p.suffix:
            raise CliError(f"input folder not found: {inp}")
        else:
            paths.append(str(p))
    if task == "verification" and paths:
        if len(paths) % 2:
            raise CliError(f"verification inputs go by pairs PROBE REFERENCE; got {len(paths)} images")
        items += [paths[i:i + 2] for i in range(0, len(paths), 2)]
    elif paths:
        items += paths
    if not items:
        raise CliError("no items to explain: give images, folders or --list FILE")
    return items


def _method_params(methods: list[str], items: list[str]) -> dict[str, dict]:
    """-p KEY=VALUE (every method that takes KEY; with one method: that one) or
    -p METHOD.KEY=VALUE, checked against the methods' arguments."""
    out: dict[str, dict] = {m: {} for m in methods}
    for key, value in _params(items).items():
        method, _, name = key.partition(".") if "." in key else ("", "", key)
        if method and method not in out:
            raise CliError(f"-p {key}: {method} is not among the methods ({', '.join(methods)})")
        targets = [method] if method else [m for m in methods if name in method_params(m)] or methods[:1]
        for m in targets:
            out[m][name] = value
    return {m: check_params(m, kw) for m, kw in out.items()}


def explain_dataset_command(args) -> int:
    from .jobs import run_job

    methods = list(dict.fromkeys(args.method or ["occlusion"]))
    black_box = [m for m in METHODS if m in _black_box_methods()]
    for m in methods:
        if m not in black_box:
            raise CliError(f"explain-dataset runs the black-box methods ({', '.join(black_box)}), not {m!r}")
    params = _method_params(methods, args.param)
    model_name: str = args.model or DEFAULT_MODELS[args.task]
    cls = None
    if args.task != "verification":
        classes = model_classes(model_name)
        if args.cls is None:
            raise CliError("--class is required for this task" + (f"; one of {list(classes)}" if classes else ""))
        cls = classes[_class_index(classes, args.cls)] if classes else args.cls  # the name, as the API's
    if args.shard_size < 1:
        raise CliError(f"--shard-size must be >= 1, got {args.shard_size}")
    if args.workers < 0:
        raise CliError(f"--workers must be >= 0, got {args.workers}")
    if args.workers >= 1 or args.address:
        try:
            import ray  # noqa: F401
        except ImportError:
            raise CliError("--workers >= 1 runs on Ray: pip install 'xfr[jobs]' (or --workers 0)") from None
    out = Path(args.output)
    if out.exists() and not out.is_dir():
        raise CliError(f"the output {out} is a file; give a folder")
    if not out.parent.is_dir():
        raise CliError(f"the folder of the output {out} does not exist: {out.parent} (create it first)")
    items = dataset_items(args.inputs, args.list, args.task)
    progress = bool(args.progress or (not args.quiet and sys.stderr.isatty()))
    summary = run_job(items, args.task, model_name, params, out, cls=cls, shard_size=args.shard_size,
                      seed=args.seed, batch_size=args.batch_size, workers=max(args.workers, 1 if args.address else 0),
                      address=args.address, progress=progress)
    print(summary.text())
    print(f"wrote {out}")
    return 0


def _black_box_methods() -> tuple[str, ...]:
    from .explain import SINGLE_IMAGE_METHODS

    return tuple(SINGLE_IMAGE_METHODS)


def build_parser() -> argparse.ArgumentParser:
    ap = ArgumentParser(prog="xfr", description="Black-box explainable face analysis")
    sub = ap.add_subparsers(dest="command", required=True)
    e = sub.add_parser("explain", help="saliency map of one face (or face pair)",
                       description=__doc__, formatter_class=HelpFormatter)
    e.add_argument("images", nargs="*", help="PROBE REFERENCE (verification) or IMAGE")
    e.add_argument("--task", choices=sorted(DEFAULT_MODELS), default="verification")
    e.add_argument("--method", choices=METHODS, default="minplus")
    e.add_argument("--model", help="registry name (default per task: "
                   + ", ".join(f"{k}: {v}" for k, v in DEFAULT_MODELS.items()) + ")")
    e.add_argument("--class", dest="cls", help="class to explain (name or index), expression/gender")
    e.add_argument("--box", type=float, nargs=4, metavar=("X1", "Y1", "X2", "Y2"),
                   help="detection: the box to explain (default: the most probable face)")
    e.add_argument("--iou", type=float, default=0.5, help="detection: IoU to match the box")
    e.add_argument("--context", type=float, default=2.5,
                   help="detection: explain in a square window of CONTEXT x the box's longer side "
                        "around it (0: on the whole photo, every perturbed image a full photo)")
    e.add_argument("--window-size", type=int, default=96,
                   help="detection: side of the window in pixels (the detection stage's 96)")
    e.add_argument("-o", "--output", help="PNG of the map overlaid on the face (its folder must exist)")
    e.add_argument("--save-map", help="also save the raw map (torch.save) here")
    e.add_argument("--raw", metavar="MAP.npy", help="also save the raw float32 map (numpy .npy) here")
    e.add_argument("--no-align", action="store_true",
                   help="use the image as it is (a cropped, upright face, e.g. FER-2013), resized to "
                        "the model's input, instead of detecting and aligning it with MTCNN")
    e.add_argument("--seed", type=int, default=0, help="seed of the random methods' masks (same seed, same map)")
    e.add_argument("--batch-size", type=int, default=64,
                   help="perturbed images per forward pass (memory vs speed; the map does not depend on it)")
    e.add_argument("--progress", action="store_true", help="show progress bars even when not on a terminal")
    e.add_argument("--quiet", action="store_true", help="no progress bars (on by default on a terminal)")
    e.add_argument("--help-params", action="store_true", help="list every method's -p keys and exit")
    e.add_argument("--backend", choices=("auto", "torch", "onnxruntime", "openvino"), default="auto",
                   help="execution path of the model's forward passes (default: the measured fastest "
                        "per model, xfr.models.backends)")
    e.add_argument("-p", "--param", action="append", metavar="KEY=VALUE",
                   help="explainer parameter, e.g. -p n_masks=1000 -p t_max=5 (repeatable)")
    e.set_defaults(func=explain_command)
    d = sub.add_parser("explain-dataset", help="saliency maps of a whole data set: sharded, resumable (xfr.jobs)",
                       description=EXPLAIN_DATASET_DOC, formatter_class=HelpFormatter)
    d.add_argument("inputs", nargs="*", help="image files or folders (verification: PROBE REFERENCE pairs)")
    d.add_argument("--list", help="text file of items, one a line (verification: PROBE,REFERENCE)")
    d.add_argument("-o", "--output", required=True, help="output folder (shards, manifest.json); rerun to resume")
    d.add_argument("--task", choices=("expression", "gender", "verification"), default="expression")
    d.add_argument("--class", dest="cls", help="class to explain (name or index), expression/gender")
    d.add_argument("--model", help="registry name (default per task: "
                   + ", ".join(f"{k}: {DEFAULT_MODELS[k]}" for k in ("expression", "gender", "verification")) + ")")
    d.add_argument("--method", action="append", help="black-box method (repeatable; default occlusion)")
    d.add_argument("-p", "--param", action="append", metavar="[METHOD.]KEY=VALUE",
                   help="explainer parameter, e.g. -p occlusion.patch=16 -p n_masks=1000 (repeatable)")
    d.add_argument("--shard-size", type=int, default=100, help="items per shard file")
    d.add_argument("--workers", type=int, default=0, help="0: in this process; N >= 1: N Ray actors")
    d.add_argument("--address", help="Ray cluster address (default: a local Ray)")
    d.add_argument("--seed", type=int, default=0, help="job seed; item i's random seed derives from (seed, i)")
    d.add_argument("--batch-size", type=int, default=64, help="perturbed images per forward pass")
    d.add_argument("--progress", action="store_true", help="show the progress bar even when not on a terminal")
    d.add_argument("--quiet", action="store_true", help="no progress bar")
    d.set_defaults(func=explain_dataset_command)
    return ap


class ArgumentParser(argparse.ArgumentParser):
    """argparse's parser with the CLI's one error style: one line, exit code 2."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"error: {message} ({self.prog} --help)\n")


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """The module docstring as written, and every option's default in its help."""


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "help_params", False):
        print(params_help())
        return 0
    try:
        if args.command == "explain":
            if not args.images:
                raise CliError("give the image(s) to explain: PROBE REFERENCE (verification) or IMAGE")
            if not args.output:
                raise CliError("give the output PNG: -o map.png")
        return args.func(args)
    except (ValueError, FileNotFoundError, KeyError) as err:  # CliError, NoFaceError, explainer checks
        message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        print(f"error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())

"""Command line: ``xfr explain ...`` writes a saliency map overlaid on the face and prints the score.

Examples::

    xfr explain --task verification --method minplus probe.jpg reference.jpg -o map.png
    xfr explain --task expression --class happy face.jpg -o map.png
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
picture. ``--raw map.npy`` saves the float32 map.
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
METHODS = ("minplus", "avg", "occlusion", "lime", "lime-map", "rise", "rise-gauss", "s-rise",
           "xmaps")
RANDOM_METHODS = ("lime", "lime-map", "rise", "rise-gauss", "s-rise")
# Mask (sample) counts of the random methods per task: results/reliability/defaults.csv, the
# count at which the reliability stage's seed-to-seed Spearman reaches 0.9 with the centred
# scoring (None: not within RELIABILITY_CAP passes). tests/test_cli.py keeps the two equal.
RELIABILITY_CAP = 8000
DEFAULT_MASKS: dict[str, dict[str, int | None]] = {
    "verification": {"rise": 2000, "rise-gauss": 700, "s-rise keep": 1500, "s-rise remove": 2300},
    "expression": {"lime": 500, "lime-map": 2000, "rise": 4300, "rise-gauss": 1000, "s-rise keep": 7100, "s-rise remove": 5500},
    "detection": {"rise": 3100, "rise-gauss": 1600},
    "masks": {"rise": 2400, "rise-gauss": 1500},
}
TASK_MEASURED_AS = {"gender": "expression"}  # gender uses the expression model family's counts


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
            raise ValueError(f"--param expects KEY=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        out[key.strip()] = _parse_value(value.strip())
    return out


def _load_face(path: Path, template: str | None, mtcnn):
    """The image of ``path`` aligned onto ``template`` (None: as it is)."""
    from .io import load_image
    from .models.align import NoFaceError, detect_and_align

    if template is None:
        return load_image(path)
    try:
        return detect_and_align(load_image(path), template, mtcnn=mtcnn, select="largest")
    except NoFaceError:
        raise SystemExit(f"error: MTCNN found no face in {path}; use --no-align to explain the "
                         f"image as it is") from None


def _class_index(classes, name: str) -> int:
    classes = list(classes)
    if name is None:
        raise SystemExit(f"error: --class is required for this task; one of {classes}")
    if name.isdigit() and int(name) < len(classes):
        return int(name)
    if name not in classes:
        raise SystemExit(f"error: unknown class {name!r}; the model's classes are {classes}")
    return classes.index(name)


def explain_command(args) -> int:
    import torch

    from . import explain as ex
    from . import viz
    from .models import load
    from .models.backends import accelerated
    from .score import attribute_score, detection_score, verification_score

    for path in args.images:
        if not Path(path).is_file():
            raise FileNotFoundError(f"image file not found: {path}")
    params = _params(args.param)
    common = {"batch_size": args.batch_size, "progress": args.progress}
    if args.method in RANDOM_METHODS and "seed" not in params:
        params["seed"] = args.seed
    model_name = args.model or DEFAULT_MODELS[args.task]
    mtcnn = cast("MTCNNDetector", load("mtcnn"))
    images = args.images
    overlay_on = None

    if args.task == "verification":
        if len(images) != 2:
            raise SystemExit("error: verification needs two images: PROBE REFERENCE")
        model = load(model_name)
        template = None if args.no_align else getattr(model, "template", None)
        probe = _load_face(Path(images[0]), template, mtcnn)
        ref = _load_face(Path(images[1]), template, mtcnn)
        if probe.shape != ref.shape:
            raise SystemExit(f"error: probe {tuple(probe.shape)} and reference {tuple(ref.shape)} "
                             f"differ in size; align them (drop --no-align)")
        f = verification_score(model, ref, backend=args.backend)
        image = probe
        if args.method == "xmaps":
            res = ex.xmaps(accelerated(model, args.backend), probe, ref, **params, **common)
            print(f"cosine distance d(probe, reference) = {res.distance:.4f}")
            print(f"score f(X) = <f_e(X), f_e(Y)> = {1.0 - res.distance:.4f}")
            out = viz.save_png(viz.blend_hls(probe, res.map1), args.output)
            if args.save_map:
                torch.save(res.map1, args.save_map)
            if args.raw:
                _save_raw(res.map1, args.raw)
            print(f"wrote {out}")
            return 0
        what = "<f_e(X), f_e(Y)>"
    elif args.task in ("expression", "gender"):
        if len(images) != 1:
            raise SystemExit(f"error: {args.task} needs one image")
        model = load(model_name)
        k = _class_index(model.classes, args.cls)
        image = _load_face(Path(images[0]), None if args.no_align else "arcface112", mtcnn)
        f = attribute_score(model, k, backend=args.backend)
        what = f"P({model.classes[k]} | X)"  # type: ignore[index]  # plain attribute; stubs type Module.__getattr__ as Tensor | Module
    else:  # detection
        if len(images) != 1:
            raise SystemExit("error: detection needs one image")
        from .io import load_image
        from .models.detect import best_face

        image = load_image(images[0])
        if args.box:
            box = args.box
        else:
            det = mtcnn.detect(image)[0]
            pick = best_face(det)
            if pick is None:
                raise SystemExit(f"error: MTCNN found no face in {images[0]}; give --box")
            box = det.boxes[pick].tolist()
        if args.context > 0:  # explain the detection in its window (xfr.faces.windows.window_for_box)
            from .faces.windows import window_for_box

            fw = window_for_box(mtcnn, image, box, args.context, args.window_size, args.iou)
            if fw is None:
                raise SystemExit(f"error: MTCNN does not find the face {[round(v, 1) for v in box]} again "
                                 f"in its {args.context}x window; give a larger --context or "
                                 f"--context 0 (the whole photo)")
            print(f"window {list(fw.rect)} of the photo (x1 y1 x2 y2), resized to "
                  f"{args.window_size} px; the face is {[round(v, 1) for v in fw.box.tolist()]} in it")
            image, box = fw.window, fw.box.tolist()
        f = detection_score(mtcnn, box, iou_threshold=args.iou, backend=args.backend)
        what = f"MTCNN score of box {[round(v, 1) for v in box]}"
        overlay_on = image

    if args.method == "xmaps":
        raise SystemExit("error: xmaps explains a verification pair (--task verification)")
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
    else:
        # The explainers' signatures differ, so mypy types the dict's values as bare `function`.
        method = cast("Callable[..., Tensor]", ex.SINGLE_IMAGE_METHODS[args.method])
        smap = method(f, image, **params, **common)
    rgb = viz.overlay(overlay_on if overlay_on is not None else image, smap)
    if args.task == "detection":  # the explained box on the map, small windows enlarged
        scale = max(1, 384 // max(rgb.shape[:2]))
        rgb = viz.draw_box(viz.upscale(rgb, scale), box, scale=scale)
    if warning:
        rgb = viz.with_banner(rgb, [warning])
    out = viz.save_png(rgb, args.output)
    if args.save_map:
        torch.save(smap, args.save_map)
    if args.raw:
        _save_raw(smap, args.raw)
    print(f"wrote {out}")
    return 0


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


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="xfr", description="Black-box explainable face analysis")
    sub = ap.add_subparsers(dest="command", required=True)
    e = sub.add_parser("explain", help="saliency map of one face (or face pair)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    e.add_argument("images", nargs="+", help="PROBE REFERENCE (verification) or IMAGE")
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
    e.add_argument("-o", "--output", required=True, help="PNG of the map overlaid on the face")
    e.add_argument("--save-map", help="also save the raw map (torch.save) here")
    e.add_argument("--raw", metavar="MAP.npy", help="also save the raw float32 map (numpy .npy) here")
    e.add_argument("--no-align", action="store_true", help="do not detect and align the face")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--batch-size", type=int, default=64)
    e.add_argument("--progress", action="store_true")
    e.add_argument("--backend", choices=("auto", "torch", "onnxruntime", "openvino"), default="auto",
                   help="execution path of the model's forward passes (default: the measured fastest "
                        "per model, xfr.models.backends)")
    e.add_argument("-p", "--param", action="append", metavar="KEY=VALUE",
                   help="explainer parameter, e.g. -p n_masks=1000 -p t_max=5 (repeatable)")
    e.set_defaults(func=explain_command)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, KeyError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())

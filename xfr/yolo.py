"""Ultralytics YOLO detectors trained here (MinPlus §3.4: a YOLOv5s face-mask detector), fully
offline, with their weights stored without pickle.

- :func:`offline_env`: the environment ultralytics needs to run without network access
  (``YOLO_OFFLINE=1``, a private ``YOLO_CONFIG_DIR`` holding the font its plots ask for, copied
  from matplotlib's DejaVuSans instead of downloaded Arial).
- :func:`train_detector`: ``ultralytics.YOLO(model_yaml).train(...)`` from scratch
  (``pretrained=False``: no pretrained weights can be downloaded here), seeded and deterministic
  where ultralytics allows, its run folder in a temporary directory; returns the trained model and
  the run folder's per-epoch table and figures.
- :func:`save_weights` / :func:`load_detector`: the model's ``state_dict`` as float32 numpy arrays
  in ``detector.npz`` plus ``detector.json`` (model yaml, class names, imgsz); loading rebuilds
  the network from the yaml and loads the arrays — no ``torch.load``, no pickle — and returns an
  ``ultralytics.YOLO`` object that :func:`xfr.score.detection_score` accepts.
- :func:`evaluate_detector`: mAP50 (all classes and per class), mAP50-95, precision, recall of a
  loaded detector on one split of a YOLO data set.
- :func:`run_train`: the pipeline stage ``mask_train`` (all of its code is in this module, the
  stage's code dependency in ``dvc.yaml``).
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

WEIGHTS_NPZ = "detector.npz"
WEIGHTS_JSON = "detector.json"
FONTS = ("Arial.ttf", "Arial.Unicode.ttf")


# ----------------------------------------------------------------------------- environment
def _dejavu_font() -> Path:
    import matplotlib

    p = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    if not p.is_file():
        raise FileNotFoundError(f"matplotlib's DejaVuSans.ttf not found at {p}; ultralytics' plots "
                                f"need a TrueType font (it would otherwise download Arial.ttf)")
    return p


def install_fonts(config_dir: Path) -> None:
    """Copy matplotlib's DejaVuSans.ttf to ``config_dir`` as the fonts ultralytics' plots look
    for there (``Arial.ttf``, ``Arial.Unicode.ttf``), so that it never tries to download them."""
    config_dir = Path(config_dir)
    config_dir.mkdir(parents=True, exist_ok=True)
    src = _dejavu_font()
    for name in FONTS:
        if not (config_dir / name).is_file():
            shutil.copyfile(src, config_dir / name)


def offline_env(config_root: str | Path) -> Path:
    """Set up ultralytics to run offline: ``YOLO_OFFLINE=1`` and ``YOLO_CONFIG_DIR=config_root``
    (settings and fonts under ``config_root/Ultralytics``). Must run before ``ultralytics`` is
    first imported to take the config folder; when it already was imported, the fonts are put
    into the folder it uses. Returns that folder."""
    os.environ["YOLO_OFFLINE"] = "1"
    if "ultralytics" in sys.modules:
        from ultralytics.utils import USER_CONFIG_DIR

        config_dir = Path(USER_CONFIG_DIR)
    else:
        os.environ["YOLO_CONFIG_DIR"] = str(Path(config_root).resolve())
        config_dir = Path(config_root).resolve() / "Ultralytics"
    install_fonts(config_dir)
    return config_dir


def _require_ultralytics():
    try:
        import ultralytics  # noqa: F401
    except ImportError as err:  # pragma: no cover - a dependency of the package
        raise ImportError("ultralytics is required for the YOLO detector: pip install -e .") from err


def keep_torch_threads() -> int:
    """Make ultralytics keep this process's torch thread count: its ``select_device()``, which
    every new predictor and validator calls, sets torch's count to its ``NUM_THREADS``
    (cores - 1: 1 on a 2-core machine) for the rest of the process, so that every model run after
    a YOLO prediction ran on one core. Returns the count kept."""
    import ultralytics.utils.torch_utils as yolo_torch_utils

    threads = torch.get_num_threads()
    yolo_torch_utils.NUM_THREADS = threads
    return threads


# ----------------------------------------------------------------------------- weights
def _build(model_yaml: str, names: Mapping[int, str] | list[str], imgsz: int):
    """An ``ultralytics.YOLO`` wrapper around a fresh ``DetectionModel(model_yaml, nc)``."""
    _require_ultralytics()
    from ultralytics import YOLO
    from ultralytics.cfg import DEFAULT_CFG_DICT
    from ultralytics.nn.tasks import DetectionModel

    keep_torch_threads()
    names = dict(enumerate(names)) if isinstance(names, (list, tuple)) else \
        {int(k): str(v) for k, v in dict(names).items()}
    # ultralytics leaves these attributes unannotated (initialised to None, {} or a str), so
    # mypy would infer types narrower than what they hold: treat its objects as Any.
    yolo: Any = YOLO(model_yaml, task="detect", verbose=False)
    net: Any = DetectionModel(model_yaml, nc=len(names), verbose=False)
    net.names = names
    net.task = "detect"
    yolo.model = net
    yolo.overrides["imgsz"] = int(imgsz)
    net.args = {**DEFAULT_CFG_DICT, **yolo.overrides}
    return yolo


def save_weights(yolo, weights_dir: str | Path, model_yaml: str, imgsz: int,
                 extra: Mapping[str, Any] | None = None) -> Path:
    """Write ``yolo.model.state_dict()`` as float32 arrays to ``weights_dir/detector.npz`` and the
    recipe to rebuild the network to ``weights_dir/detector.json`` (model yaml, class names,
    imgsz, nc, number of parameters, plus ``extra``). No pickle: numpy's ``allow_pickle=False``
    format."""
    net = getattr(yolo, "model", yolo)
    names = {int(k): str(v) for k, v in dict(net.names).items()}
    state = {k: v.detach().float().cpu().numpy() if v.is_floating_point() else v.detach().cpu().numpy()
             for k, v in net.state_dict().items()}
    weights_dir = Path(weights_dir)
    weights_dir.mkdir(parents=True, exist_ok=True)
    np.savez(weights_dir / WEIGHTS_NPZ, **state)
    meta = dict(model=str(model_yaml), names=names, nc=len(names), imgsz=int(imgsz), task="detect",
                n_parameters=int(sum(v.size for k, v in state.items()
                                     if np.issubdtype(v.dtype, np.floating))),
                format="state_dict as float32 numpy arrays (np.load(..., allow_pickle=False))")
    meta.update(dict(extra or {}))
    (weights_dir / WEIGHTS_JSON).write_text(json.dumps(meta, indent=2) + "\n")
    return weights_dir / WEIGHTS_NPZ


def load_detector(weights_dir: str | Path, device: str | torch.device = "cpu"):
    """The detector saved by :func:`save_weights`: an ``ultralytics.YOLO`` built from the stored
    model yaml with the stored class names, its ``state_dict`` loaded from ``detector.npz``
    (``allow_pickle=False``), in eval mode, predicting at the stored ``imgsz`` by default.
    Usable by :func:`xfr.score.detection_score` / :func:`xfr.score.yolo_detections`."""
    weights_dir = Path(weights_dir)
    npz, meta_file = weights_dir / WEIGHTS_NPZ, weights_dir / WEIGHTS_JSON
    missing = [p.name for p in (npz, meta_file) if not p.is_file()]
    if missing:
        raise FileNotFoundError(
            f"no trained detector in {weights_dir} (missing {', '.join(missing)}): run the training "
            f"stage first (`dvc repro mask_train` or `python -m xfr.experiments.mask_train`)")
    meta = json.loads(meta_file.read_text())
    yolo = _build(meta["model"], meta["names"], meta["imgsz"])
    with np.load(npz, allow_pickle=False) as arrays:
        state = {k: torch.from_numpy(np.array(arrays[k])) for k in arrays.files}
    own = yolo.model.state_dict()
    if set(own) != set(state):
        extra, lacking = sorted(set(state) - set(own)), sorted(set(own) - set(state))
        raise ValueError(f"{npz} does not fit {meta['model']} with nc={meta['nc']}: unexpected "
                         f"{extra[:5]}, missing {lacking[:5]}")
    bad = [k for k in own if tuple(own[k].shape) != tuple(state[k].shape)]
    if bad:
        raise ValueError(f"{npz}: shapes differ from {meta['model']} for {bad[:5]}")
    yolo.model.load_state_dict({k: state[k].to(own[k].dtype) for k in own})
    yolo.model.to(device).eval()
    for p in yolo.model.parameters():
        p.requires_grad_(False)
    yolo.meta = meta
    return yolo


# ----------------------------------------------------------------------------- training
RESULT_COLUMNS = {
    "epoch": "epoch", "time": "time", "train/box_loss": "train_box_loss",
    "train/cls_loss": "train_cls_loss", "train/dfl_loss": "train_dfl_loss",
    "metrics/precision(B)": "precision", "metrics/recall(B)": "recall",
    "metrics/mAP50(B)": "mAP50", "metrics/mAP50-95(B)": "mAP50_95",
    "val/box_loss": "val_box_loss", "val/cls_loss": "val_cls_loss", "val/dfl_loss": "val_dfl_loss",
}


def train_detector(data_yaml: str | Path, model_yaml: str = "yolov5n.yaml", epochs: int = 10,
                   imgsz: int = 320, batch: int = 16, seed: int = 0, workers: int = 0,
                   deterministic: bool = True, patience: int = 100, device: str = "cpu",
                   run_dir: str | Path | None = None, threads: int | None = None,
                   **train_kwargs) -> tuple[Any, dict]:
    """Train ``model_yaml`` from scratch on ``data_yaml`` with ultralytics (call
    :func:`offline_env` first). The run folder (ultralytics' checkpoints, plots, results.csv) is
    ``run_dir`` or a temporary folder that is removed afterwards; what is kept of it comes back in
    the returned dict: ``results`` (per-epoch table, ultralytics' columns renamed per
    :data:`RESULT_COLUMNS`), ``figures`` ({name: png/jpg bytes}), ``train_seconds``,
    ``epochs_run``, ``best_epoch``. The returned model holds the best (EMA) weights.

    ``threads`` (default: :func:`xfr.pipeline.fix_threads`'s, ``$XFR_THREADS`` or all cores) is
    the torch CPU thread count for training: ultralytics itself resets it to ``cpu_count - 1``
    (1 on a 2-core machine, which halves the speed there). The trained weights depend on it."""
    _require_ultralytics()
    import pandas as pd
    import ultralytics.utils.torch_utils as yolo_torch_utils
    from ultralytics import YOLO

    from .pipeline import fix_threads

    threads = fix_threads(threads)  # identical results need the same count every run
    yolo_torch_utils.NUM_THREADS = threads  # select_device() calls torch.set_num_threads(this)

    data_yaml = Path(data_yaml).resolve()
    if not data_yaml.is_file():
        raise FileNotFoundError(f"dataset yaml {data_yaml} not found: run the data stage first "
                                f"(`dvc repro mask_data` or `python -m xfr.experiments.mask_data`)")
    if int(epochs) < 1 or int(imgsz) < 32 or int(batch) < 1:
        raise ValueError(f"need epochs >= 1, imgsz >= 32, batch >= 1; got {epochs}, {imgsz}, {batch}")
    tmp = None
    if run_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="xfr-yolo-")
        run_dir = tmp.name
    run_dir = Path(run_dir)
    try:
        yolo: Any = YOLO(model_yaml, task="detect", verbose=False)  # unannotated attributes, as in _build
        args = dict(data=str(data_yaml), epochs=int(epochs), imgsz=int(imgsz), batch=int(batch),
                    seed=int(seed), workers=int(workers), deterministic=bool(deterministic),
                    patience=int(patience), device=device, pretrained=False, amp=False,
                    project=str(run_dir), name="train", exist_ok=True, plots=True, verbose=False)
        args.update(train_kwargs)
        t0 = time.perf_counter()
        yolo.train(**args)
        train_seconds = time.perf_counter() - t0
        trainer = yolo.trainer
        save_dir = Path(trainer.save_dir)
        results = pd.read_csv(save_dir / "results.csv")
        results.columns = [c.strip() for c in results.columns]
        results = results.rename(columns=RESULT_COLUMNS)
        figures = {p.name: p.read_bytes() for p in sorted(save_dir.glob("*"))
                   if p.suffix in (".png", ".jpg")}
        best_epoch = int(results.epoch[results.mAP50.idxmax()]) if "mAP50" in results and len(results) else None
        info = dict(results=results, figures=figures, train_seconds=train_seconds,
                    epochs_run=int(len(results)), best_epoch=best_epoch,
                    names={int(k): str(v) for k, v in dict(trainer.data["names"]).items()})
        # the best checkpoint that YOLO.train() reloaded; float32, eval mode, on the CPU
        yolo.model = yolo.model.float().cpu().eval()
        yolo.model.names = info["names"]
        return yolo, info
    finally:
        if tmp is not None:
            tmp.cleanup()


def evaluate_detector(yolo, data_yaml: str | Path, split: str = "val", imgsz: int | None = None,
                      batch: int = 16, plots_dir: str | Path | None = None) -> tuple[dict, dict]:
    """Validate ``yolo`` on ``split`` of ``data_yaml`` (ultralytics' validator: mAP at IoU 0.5 and
    0.5:0.95, mean precision / recall at its max-F1 confidence). Returns (metrics, figures):
    metrics ``mAP50``, ``mAP50_95``, ``precision``, ``recall``, ``mAP50_<class>`` per class
    present in the split, ``images``, ``instances``; figures {name: bytes} of its plots."""
    _require_ultralytics()
    tmp = None
    if plots_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="xfr-yolo-val-")
        plots_dir = tmp.name
    try:
        imgsz = int(imgsz or yolo.overrides.get("imgsz", 640))
        res = yolo.val(data=str(Path(data_yaml).resolve()), split=split, imgsz=imgsz, batch=int(batch),
                       device="cpu", workers=0, plots=True, verbose=False, project=str(plots_dir),
                       name=split, exist_ok=True)
        box = res.box
        names = dict(yolo.model.names)
        out = dict(mAP50=float(box.map50), mAP50_95=float(box.map), precision=float(box.mp),
                   recall=float(box.mr), split=split, imgsz=imgsz)
        for i, c in enumerate(box.ap_class_index):
            p, r, ap50, ap = box.class_result(i)
            name = names[int(c)]
            out.update({f"mAP50_{name}": float(ap50), f"mAP50_95_{name}": float(ap),
                        f"precision_{name}": float(p), f"recall_{name}": float(r)})
        nt = getattr(res, "nt_per_class", None)
        if nt is not None:
            out["instances"] = int(np.sum(nt))
            for c, n in enumerate(np.asarray(nt).tolist()):
                out[f"instances_{names[c]}"] = int(n)
        save_dir = Path(res.save_dir)
        figures = {p.name: p.read_bytes() for p in sorted(save_dir.glob("*"))
                   if p.suffix in (".png", ".jpg")}
        return out, figures
    finally:
        if tmp is not None:
            tmp.cleanup()


# ----------------------------------------------------------------------------- stage mask_train
def run_train(params: Mapping, out_root: str | Path) -> dict:
    """Stage ``mask_train`` (``python -m xfr.experiments.mask_train``, section ``mask_train`` of
    the params file): train (:func:`train_detector`: model yaml, epochs, imgsz, batch, seed,
    workers, deterministic, patience) on ``<out_root>/mask_data/yolo``, save the weights without
    pickle in ``<out_root>/mask_train/weights``, reload them, evaluate them on the val and test
    splits, and write ``metrics.json`` (+ train_seconds, seconds_per_epoch), ``training.csv``
    (per epoch) and ``figures/`` (training curves, PR curves, confusion matrices)."""
    from .report import write_csv, write_metrics

    out = Path(out_root) / "mask_train"
    data_yaml = Path(out_root) / "mask_data" / "yolo" / "dataset.yaml"
    if not data_yaml.is_file():
        raise FileNotFoundError(f"{data_yaml} not found: run the data stage first "
                                f"(`dvc repro mask_data` or `python -m xfr.experiments.mask_data`)")
    cfg_tmp = tempfile.TemporaryDirectory(prefix="xfr-yolo-config-")
    try:
        offline_env(cfg_tmp.name)
        model_yaml = str(params.get("model", "yolov5n.yaml"))
        imgsz, batch = int(params.get("imgsz", 320)), int(params.get("batch", 16))
        kw: dict[str, Any] = dict(epochs=int(params.get("epochs", 10)), imgsz=imgsz, batch=batch,
                                  seed=int(params.get("seed", 0)), workers=int(params.get("workers", 0)),
                                  deterministic=bool(params.get("deterministic", True)),
                                  patience=int(params.get("patience", 100)))
        kw["threads"] = params.get("threads")
        for k in ("optimizer", "lr0", "cos_lr", "close_mosaic", "mosaic", "cache", "warmup_epochs"):
            if params.get(k) is not None:
                kw[k] = params[k]
        yolo, info = train_detector(data_yaml, model_yaml, **kw)
        for sub in ("weights", "figures"):
            if (out / sub).exists():
                shutil.rmtree(out / sub)
        (out / "figures").mkdir(parents=True)
        save_weights(yolo, out / "weights", model_yaml, imgsz,
                     extra=dict(epochs=kw["epochs"], epochs_run=info["epochs_run"],
                                best_epoch=info["best_epoch"], seed=kw["seed"]))
        detector = load_detector(out / "weights")  # evaluate what was saved
        metrics = dict(model=model_yaml, imgsz=imgsz, batch=batch, epochs=kw["epochs"],
                       epochs_run=info["epochs_run"], best_epoch=info["best_epoch"],
                       train_seconds=info["train_seconds"],
                       seconds_per_epoch=info["train_seconds"] / max(1, info["epochs_run"]),
                       train_images=_count_images(data_yaml.parent / "images" / "train"),
                       threads=torch.get_num_threads(), pretrained=False,
                       n_parameters=detector.meta["n_parameters"])
        keep = {"results.png": "training_curves.png", "labels.jpg": "train_labels.jpg"}
        for name, data in info["figures"].items():
            if name in keep:
                (out / "figures" / keep[name]).write_bytes(data)
        for split in ("val", "test"):
            m, figs = evaluate_detector(detector, data_yaml, split=split, imgsz=imgsz, batch=batch)
            metrics[split] = {k: v for k, v in m.items() if k not in ("split", "imgsz")}
            for name, data in figs.items():
                if name in ("BoxPR_curve.png", "PR_curve.png", "confusion_matrix_normalized.png"):
                    (out / "figures" / f"{split}_{name}").write_bytes(data)
                elif name == "val_batch0_pred.jpg":
                    (out / "figures" / f"{split}_batch0_pred.jpg").write_bytes(data)
        write_csv(out, "training.csv", info["results"])
        write_metrics(out, metrics)
        return metrics
    finally:
        cfg_tmp.cleanup()


def _count_images(folder: Path) -> int:
    return sum(1 for p in Path(folder).iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".bmp"))



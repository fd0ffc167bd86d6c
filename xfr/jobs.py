"""Explain whole data sets: sharded, resumable explanation jobs, in process or on Ray.

A job explains every item of a list (image paths; (probe, reference) pairs for verification)
with one or more black-box methods (:data:`xfr.explain.SINGLE_IMAGE_METHODS`) and writes, per
``shard_size`` items, into ``out_dir``:

- ``shard-00000.npz``: the float16 maps, one array ``<method>/<item index>`` per explained item
  (a zip with fixed entry dates: same maps, same bytes);
- ``shard-00000.parquet`` (``.csv`` when pyarrow is not installed): one row per item: ``index``,
  ``item``, ``status`` (``ok`` or the error, e.g. an unreadable image), ``score`` (f of the
  explained image), ``forward_passes``, ``seconds`` (wall time of the item, the only column
  that differs between runs);
- ``manifest.json``: the job's parameters, model name and the sha256 of its weights, code
  version (``git rev-parse HEAD``) and the shard list.

Every file is written under a temporary name in ``out_dir`` and moved into place with
``os.replace``; the table is written after the maps, so a shard whose table exists is complete
and is skipped when the job runs again. A bad item is recorded and the run goes on. The random
methods' seed of item ``i`` is derived from (``seed``, ``i``), so maps do not depend on the
sharding, the number of workers or which shards were done before an interruption.

The work done per item is an :class:`ItemTask`: the built-in tasks ``expression``, ``gender``
and ``verification`` run black-box methods (:class:`BlackBoxTask`); a paper's stage gives its own
task as ``"module:Class"`` (e.g. the CMS paper's CIS of a face, the S-RISE paper's Table 1 of a
triplet), with its ``options``, its extra table columns, its map dtype and, when it has them,
long-format ``records`` per item (``shard-00000.records.csv``, written before the table).

``workers=0`` runs the shards one after the other in this process (debugging, CI);
``workers>=1`` runs them on Ray (``ray.init()`` local, or ``address=`` of a cluster) with one
actor per worker, each loading the model once; shards go to the actors through
:class:`ray.util.ActorPool` (one task per shard; a worker that dies is restarted and its
shard retried, and only the driver writes files, so each item is written exactly once).
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

TASKS = ("expression", "gender", "verification")
ZIP_DATE = (1980, 1, 1, 0, 0, 0)
_UMASK = os.umask(0o022)
os.umask(_UMASK)
MANIFEST = "manifest.json"


# ----------------------------------------------------------------------------- job description
@dataclass
class JobSpec:
    """What a job computes (everything but where and how it runs)."""

    items: list  # image paths (str), or [probe, reference] pairs for verification
    task: str
    model: str
    methods: dict[str, dict]  # method name -> keyword arguments
    cls: int | str | None = None  # expression/gender: class name or index
    options: dict = field(default_factory=dict)  # an ItemTask's own parameters
    seed: int = 0
    batch_size: int = 64
    shard_size: int = 100

    def __post_init__(self) -> None:
        task = resolve_task(self.task)
        self.items = [task.normalize_item(it, self) for it in self.items]
        self.methods = {str(k): dict(v or {}) for k, v in self.methods.items()}
        self.options = json.loads(json.dumps(dict(self.options or {})))  # what the manifest holds
        check_spec(self)
        task.check(self)

    @property
    def n_shards(self) -> int:
        return (len(self.items) + self.shard_size - 1) // self.shard_size

    def shard_items(self, shard: int) -> list[tuple[int, Any]]:
        lo = shard * self.shard_size
        return list(enumerate(self.items[lo:lo + self.shard_size], start=lo))

    def params(self) -> dict:
        """The parameters a resumed run must share (the manifest's ``job``)."""
        d = asdict(self)
        d["items_sha256"] = hashlib.sha256(json.dumps(d.pop("items")).encode()).hexdigest()
        d["n_items"] = len(self.items)
        return d


def resolve_task(task: str) -> type[ItemTask]:
    """The :class:`ItemTask` class of a task name: a built-in (:data:`TASKS`) or ``"module:Class"``."""
    if task in TASKS:
        return BlackBoxTask
    if not isinstance(task, str) or ":" not in task:
        raise ValueError(f"task must be one of {', '.join(TASKS)} or 'module:Class' of an ItemTask, got {task!r}")
    import importlib

    module, _, name = task.partition(":")
    try:
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as err:
        raise ValueError(f"task {task!r} not found: {err}") from err
    if not (isinstance(cls, type) and issubclass(cls, ItemTask)):
        raise ValueError(f"task {task!r} is not an xfr.jobs.ItemTask")
    return cls


def task_name(cls: type) -> str:
    """The ``"module:Class"`` name of an :class:`ItemTask` class (what JobSpec.task holds)."""
    return f"{cls.__module__}:{cls.__qualname__}"


def normalize_item(item, task: str):
    if task == "verification":
        if isinstance(item, (str, os.PathLike)) or len(item) != 2:
            raise ValueError(f"verification items are (probe, reference) pairs, got {item!r}")
        return [str(item[0]), str(item[1])]
    if not isinstance(item, (str, os.PathLike)):
        raise ValueError(f"{task} items are image paths, got {item!r}")
    return str(item)


def check_spec(spec: JobSpec) -> None:
    """Arguments checked before any model loads (ValueError that says why)."""
    from .explain import SINGLE_IMAGE_METHODS

    if spec.task in TASKS:
        if spec.task != "verification" and spec.cls is None:
            raise ValueError(f"task {spec.task} needs the class to explain (cls)")
        if not spec.methods:
            raise ValueError("give at least one method")
        unknown = [m for m in spec.methods if m not in SINGLE_IMAGE_METHODS]
        if unknown:
            raise ValueError(f"unknown methods {unknown}; the black-box ones are "
                             f"{', '.join(sorted(SINGLE_IMAGE_METHODS))}")
    if not spec.items:
        raise ValueError("no items to explain")
    for name, value in (("shard_size", spec.shard_size), ("batch_size", spec.batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    if isinstance(spec.seed, bool) or not isinstance(spec.seed, int) or spec.seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {spec.seed!r}")


def item_seed(seed: int, index: int) -> int:
    """The random methods' seed of item ``index``: a function of (job seed, index) only."""
    return int(np.random.SeedSequence([int(seed), int(index)]).generate_state(1)[0])


# ----------------------------------------------------------------------------- item tasks
@dataclass
class ItemResult:
    """What a task computed for one item: ``row`` (the table's task columns: ``score``,
    ``forward_passes`` and the task's :attr:`ItemTask.columns`), ``maps`` (name -> array,
    stored as ``<name>/<index>``) and long-format ``records`` (dicts; tasks with records)."""

    row: dict
    maps: dict = field(default_factory=dict)
    records: list = field(default_factory=list)


class ItemTask:
    """The work of a job on one item. A subclass loads its models in ``__init__`` (once per
    worker, from ``spec.model`` and ``spec.options``) and computes :meth:`explain`; an exception
    there marks the item failed with its reason and the run goes on."""

    columns: tuple[str, ...] = ()  # the task's table columns after score and forward_passes
    map_dtype: str = "float16"
    has_records: bool = False

    def __init__(self, spec: JobSpec):
        self.spec = spec

    @classmethod
    def normalize_item(cls, item, spec: JobSpec):
        """The item as stored in the manifest (JSON: a path string or a list)."""
        return normalize_item(item, spec.task)

    @classmethod
    def check(cls, spec: JobSpec) -> None:
        """Argument checks before any model loads (ValueError that says why)."""

    @property
    def model(self):  # the model whose weights the manifest records
        raise NotImplementedError

    def to(self, device) -> None:
        """Move the task's models to ``device`` (a worker given a GPU); the score functions
        move each batch to the model's device, and accelerated CPU paths give way to torch."""
        self.model.to(device)

    def explain(self, index: int, item, seed: int) -> ItemResult:
        raise NotImplementedError


class BlackBoxTask(ItemTask):
    """The built-in tasks: black-box ``methods`` on an expression/gender class score (items:
    image paths) or a verification score against the pair's reference (items: pairs)."""

    def __init__(self, spec: JobSpec):
        from .models import load

        super().__init__(spec)
        self._model = load(spec.model)
        self.k: int = -1 if spec.task == "verification" else class_index(self._model, spec.cls)

    @property
    def model(self):
        return self._model

    def explain(self, index: int, item, seed: int) -> ItemResult:
        from .explain.runner import run_methods
        from .io import load_image
        from .score import attribute_score, verification_score

        if self.spec.task == "verification":
            image, ref = load_image(item[0]), load_image(item[1])
            f = verification_score(self._model, ref)
        else:
            image = load_image(item)
            f = attribute_score(self._model, self.k)
        score = float(f(image[None])[0])
        out = run_methods(f, image, self.spec.methods, seed=seed, batch_size=self.spec.batch_size)
        return ItemResult(dict(score=score, forward_passes=1 + sum(int(r.n_forward) for r in out.values())),
                          {name: res.map for name, res in out.items()})


# ----------------------------------------------------------------------------- one worker
class ShardWorker:
    """Loads the task's models once and explains shards (in process, or as a Ray actor)."""

    def __init__(self, spec: JobSpec, crash_once: tuple[int, str] | None = None, gpu: bool = False,
                 threads: int | None = None):
        if threads:  # a Ray actor: the torch threads of the CPUs it was given (not the driver's count)
            import torch

            torch.set_num_threads(threads)
        self.spec = spec
        self.task = resolve_task(spec.task)(spec)
        if gpu:  # a Ray actor given a GPU (CUDA_VISIBLE_DEVICES names it): the model runs there
            import torch

            if torch.cuda.is_available():
                self.task.to(torch.device("cuda"))
        self.crash_once = crash_once  # test hook: (item index, marker file): exit once there

    def run_shard(self, shard: int) -> dict:
        t0 = time.perf_counter()
        rows, maps, records = [], {}, []
        for index, item in self.spec.shard_items(shard):
            if self.crash_once and index == self.crash_once[0] and not Path(self.crash_once[1]).exists():
                Path(self.crash_once[1]).write_text("crashed\n")
                os._exit(1)
            row, item_maps, item_records = self.explain_item(index, item)
            rows.append(row)
            maps.update(item_maps)
            records += item_records
        return dict(shard=shard, rows=rows, maps=maps, records=records,
                    worker=f"{os.uname().nodename}:{os.getpid()}", seconds=time.perf_counter() - t0)

    def explain_item(self, index: int, item) -> tuple[dict, dict, list]:
        t0 = time.perf_counter()
        row: dict = dict(index=index, item=item if isinstance(item, str) else "|".join(map(str, item)),
                         status="ok", score=float("nan"), forward_passes=0, **{c: None for c in self.task.columns})
        maps, records = {}, []
        try:
            res = self.task.explain(index, item, item_seed(self.spec.seed, index))
            row.update(res.row)
            maps = {f"{name}/{index}": np.asarray(m, dtype=self.task.map_dtype) for name, m in res.maps.items()}
            records = [dict(index=index, **r) for r in res.records]
        except Exception as err:  # recorded, the run goes on
            message = str(err).strip().splitlines()[0] if str(err).strip() else ""
            row["status"] = f"{type(err).__name__}: {message}"
            maps, records = {}, []
        row["seconds"] = time.perf_counter() - t0
        return row, maps, records


def class_index(model, cls) -> int:
    classes = list(getattr(model, "classes", None) or [])
    if isinstance(cls, (int, np.integer)) and not isinstance(cls, bool):
        if classes and not 0 <= int(cls) < len(classes):
            raise ValueError(f"class {cls} out of range: the model has {len(classes)} classes")
        return int(cls)
    if str(cls).isdigit():
        return class_index(model, int(str(cls)))
    if str(cls) not in classes:
        raise ValueError(f"unknown class {cls!r}; the model's classes: {', '.join(map(str, classes))}")
    return classes.index(str(cls))


# ----------------------------------------------------------------------------- files
def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and os.replace."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp's 0600 -> what open() would give
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def npz_bytes(arrays: Mapping[str, np.ndarray]) -> bytes:
    """A compressed .npz (np.load reads it) of ``arrays`` in sorted key order, with fixed entry
    dates and permissions: the same arrays always give the same bytes."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for key in sorted(arrays, key=_map_key_order):
            info = zipfile.ZipInfo(f"{key}.npy", date_time=ZIP_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            arr = io.BytesIO()
            np.lib.format.write_array(arr, np.ascontiguousarray(arrays[key]), allow_pickle=False)
            zf.writestr(info, arr.getvalue())
    return buf.getvalue()


def _map_key_order(key: str):
    name, _, index = key.rpartition("/")
    return (int(index) if index.isdigit() else -1, name)


def table_format() -> str:
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        return "csv"
    return "parquet"


BASE_COLUMNS = ("index", "item", "status", "score", "forward_passes")


def table_columns(spec: JobSpec) -> list[str]:
    return [*BASE_COLUMNS, *resolve_task(spec.task).columns, "seconds"]


def table_bytes(rows: Sequence[dict], fmt: str, columns: Sequence[str] | None = None) -> bytes:
    df = pd.DataFrame(rows, columns=list(columns or [*BASE_COLUMNS, "seconds"]))
    buf = io.BytesIO()
    if fmt == "parquet":
        df.to_parquet(buf, index=False)
    else:
        buf.write(df.to_csv(index=False, float_format="%.9g", lineterminator="\n").encode())
    return buf.getvalue()


def records_bytes(records: Sequence[dict]) -> bytes:
    return pd.DataFrame(records).to_csv(index=False, float_format="%.9g", lineterminator="\n").encode()


def read_table(path: str | Path) -> pd.DataFrame:
    path = Path(path)
    return pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)


def shard_paths(out_dir: Path, shard: int, fmt: str) -> tuple[Path, Path]:
    return out_dir / f"shard-{shard:05d}.npz", out_dir / f"shard-{shard:05d}.{fmt}"


def records_path(out_dir: Path, shard: int) -> Path:
    return out_dir / f"shard-{shard:05d}.records.csv"


def write_shard(out_dir: Path, result: dict, fmt: str, spec: JobSpec) -> None:
    npz, table = shard_paths(out_dir, result["shard"], fmt)
    atomic_write(npz, npz_bytes(result["maps"]))
    if resolve_task(spec.task).has_records:
        atomic_write(records_path(out_dir, result["shard"]), records_bytes(result["records"]))
    atomic_write(table, table_bytes(result["rows"], fmt, table_columns(spec)))  # last: the completion mark


def code_version() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                             text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def package_code_hash() -> str:
    """sha256 of the xfr package's Python sources: put in a job's ``options`` by a pipeline stage
    whose job folder is kept between runs (DVC ``persist``), so that only the code that wrote
    the shards resumes them (a changed code redoes the job; ``replace_other``)."""
    root = Path(__file__).resolve().parent
    h = hashlib.sha256()
    for f in sorted(root.rglob("*.py")):
        h.update(str(f.relative_to(root)).encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def weights_sha256(model) -> str:
    """sha256 of the model's parameters and buffers (names, dtypes, shapes, bytes in order)."""
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        arr = t.detach().cpu().contiguous().numpy()
        h.update(f"{name}:{arr.dtype}:{arr.shape};".encode())
        h.update(arr.tobytes())
    return h.hexdigest()


def manifest(spec: JobSpec, fmt: str, model_sha: str | None) -> dict:
    return dict(
        job=spec.params(), model=dict(name=spec.model, weights_sha256=model_sha),
        code_version=code_version(), table_format=fmt, map_dtype=resolve_task(spec.task).map_dtype,
        shards=[dict(npz=shard_paths(Path(), s, fmt)[0].name, table=shard_paths(Path(), s, fmt)[1].name,
                     first=s * spec.shard_size, n=len(spec.shard_items(s)),
                     **({"records": records_path(Path(), s).name} if resolve_task(spec.task).has_records else {}))
                for s in range(spec.n_shards)],
    )


# ----------------------------------------------------------------------------- the job
@dataclass
class JobSummary:
    items: int = 0
    ok: int = 0
    failures: dict[str, int] = field(default_factory=dict)  # reason -> count
    forward_passes: int = 0
    seconds: float = 0.0  # wall time of this run
    seconds_per_item: float = 0.0  # explain time per item (workers' time, not wall time)
    items_per_s: float = 0.0  # this run's wall throughput
    items_per_s_per_worker: dict[str, float] = field(default_factory=dict)
    shards_done: int = 0
    shards_skipped: int = 0

    def text(self) -> str:
        lines = [f"{self.items} items in {self.shards_done} shards ({self.shards_skipped} shards already done) "
                 f"in {self.seconds:.1f} s: {self.ok} ok, {self.items - self.ok} failed; "
                 f"{self.forward_passes} forward passes; {self.seconds_per_item:.3f} s per item; "
                 f"{self.items_per_s:.2f} items/s"]
        for reason, n in sorted(self.failures.items(), key=lambda kv: -kv[1]):
            lines.append(f"  failed x{n}: {reason}")
        for worker, rate in sorted(self.items_per_s_per_worker.items()):
            lines.append(f"  worker {worker}: {rate:.2f} items/s")
        return "\n".join(lines)


def run_job(items: Sequence, task: str | type[ItemTask], model: str, methods: Mapping[str, Mapping | None] | None,
            out_dir: str | Path, cls: int | str | None = None, shard_size: int = 100, seed: int = 0,
            batch_size: int = 64, workers: int = 0, address: str | None = None, progress: bool | None = None,
            options: Mapping | None = None, replace_other: bool = False, use_gpus: bool = True,
            stop_after: int | None = None, _crash_once: tuple[int, str] | None = None) -> JobSummary:
    """Explain ``items`` with ``methods`` (name -> keyword arguments) on ``model`` (a name of
    :func:`xfr.models.load`) for ``task`` ('expression'/'gender' with class ``cls``, or
    'verification' with (probe, reference) pairs), writing shards of ``shard_size`` items
    into ``out_dir`` (module docstring). Shards already there are skipped; an ``out_dir`` of a
    different job is refused. ``workers=0``: in process; ``workers>=1``: that many Ray actors
    (``address``: a Ray cluster; default a local one). ``stop_after``: stop after writing that
    many shards (tests: a driver killed mid-run). ``progress``: a tqdm bar over items (default:
    when stderr is a terminal).

    ``task`` may also be an :class:`ItemTask` class (or its ``"module:Class"`` name) with its
    ``options``; ``replace_other``: an ``out_dir`` holding another job's shards is emptied
    instead of refused (a DVC stage whose parameters changed). ``use_gpus``: on Ray, when the
    cluster has GPUs, each actor takes one (at most one actor per GPU) and moves its model there."""
    if isinstance(task, type):
        task = task_name(task)
    spec = JobSpec(items=list(items), task=task, model=model,
                   methods={k: dict(v or {}) for k, v in (methods or {}).items()}, cls=cls,
                   options=dict(options or {}), seed=seed, batch_size=batch_size, shard_size=shard_size)
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
        raise ValueError(f"workers must be an integer >= 0, got {workers!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    fmt = table_format()
    old = out / MANIFEST
    if old.exists():
        prev = json.loads(old.read_text())
        if prev.get("job") != json.loads(json.dumps(spec.params())) or prev.get("table_format") != fmt:
            if not replace_other:
                raise ValueError(f"{out} holds the outputs of a different job (see its {MANIFEST}); use another folder")
            for f in [*out.glob("shard-*"), old]:
                f.unlink()
    for tmp in [*out.glob(".shard-*.tmp"), *out.glob(f".{MANIFEST}.*.tmp")]:  # left by a killed run
        tmp.unlink()
    todo = [s for s in range(spec.n_shards) if not shard_paths(out, s, fmt)[1].exists()]
    summary = JobSummary(shards_skipped=spec.n_shards - len(todo))
    if stop_after is not None:
        todo = todo[:stop_after]

    t0 = time.perf_counter()
    n_todo = sum(len(spec.shard_items(s)) for s in todo)
    bar = _progress_bar(n_todo, progress)
    per_worker: dict[str, list[float]] = {}

    def done(result: dict) -> None:
        write_shard(out, result, fmt, spec)
        rows = result["rows"]
        summary.items += len(rows)
        summary.shards_done += 1
        for r in rows:
            if r["status"] == "ok":
                summary.ok += 1
            else:
                summary.failures[r["status"]] = summary.failures.get(r["status"], 0) + 1
            summary.forward_passes += int(r["forward_passes"])
            summary.seconds_per_item += float(r["seconds"])
        w = per_worker.setdefault(result["worker"], [0.0, 0.0])
        w[0] += len(rows)
        w[1] += float(result["seconds"])
        bar.update(len(rows))

    if workers == 0:
        worker = ShardWorker(spec, _crash_once)
        atomic_write(old, _json_bytes(manifest(spec, fmt, weights_sha256(worker.task.model))))
        for s in todo:
            done(worker.run_shard(s))
    else:
        atomic_write(old, _json_bytes(manifest(spec, fmt, _model_sha(spec))))
        _run_ray(spec, todo, workers, address, done, _crash_once, use_gpus)
    bar.close()

    summary.seconds = time.perf_counter() - t0
    summary.seconds_per_item = summary.seconds_per_item / max(summary.items, 1)
    summary.items_per_s = summary.items / summary.seconds if summary.seconds > 0 else 0.0
    summary.items_per_s_per_worker = {w: (n / s if s > 0 else 0.0) for w, (n, s) in per_worker.items()}
    return summary


def _model_sha(spec: JobSpec) -> str:
    return weights_sha256(resolve_task(spec.task)(spec).model)


def _json_bytes(obj) -> bytes:
    return (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode()


def _progress_bar(total: int, progress: bool | None):
    from tqdm import tqdm

    show = sys.stderr.isatty() if progress is None else progress
    return tqdm(total=total, unit="item", desc="explain-dataset", disable=not show, smoothing=0.1)


def _run_ray(spec: JobSpec, shards: list[int], workers: int, address: str | None,
             done: Callable[[dict], None], crash_once, use_gpus: bool = True) -> None:
    try:
        import ray
        from ray.util import ActorPool
    except ImportError as err:
        raise ValueError("workers >= 1 runs on Ray: pip install 'xfr[jobs]' (or use workers=0)") from err
    if not shards:
        return
    started = init_ray(address)
    try:
        gpus = int(ray.cluster_resources().get("GPU", 0)) if use_gpus else 0
        n_actors = min(workers, len(shards), gpus or workers)  # one actor per GPU when there are GPUs
        node_cpus = max([int(n["Resources"].get("CPU", 1)) for n in ray.nodes() if n.get("Alive")] or [1])
        cpus = max(1, min(node_cpus, int(ray.cluster_resources().get("CPU", 1)) // n_actors))  # each actor's share
        Actor = ray.remote(num_cpus=cpus, num_gpus=1 if gpus else 0, max_restarts=3, max_task_retries=3)(ShardWorker)
        actors = [Actor.remote(spec, crash_once, bool(gpus), cpus) for _ in range(n_actors)]
        pool = ActorPool(actors)
        for result in pool.map_unordered(lambda a, s: a.run_shard.remote(s), shards):
            done(result)
        for a in actors:
            ray.kill(a)  # type: ignore[arg-type]
    finally:
        if started:
            ray.shutdown()


def init_ray(address: str | None = None) -> bool:
    """``ray.init`` (local, or the cluster at ``address``) unless Ray is already initialized;
    True when this call started it. The workers import xfr from this checkout (PYTHONPATH)."""
    import ray

    if ray.is_initialized():
        return False
    root = str(Path(__file__).resolve().parents[1])
    env = {"env_vars": {"PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}}
    ray.init(address=address, runtime_env=env, include_dashboard=False, log_to_driver=False,
             configure_logging=False)
    return True


def load_maps(out_dir: str | Path) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """All rows and maps (``<method>/<index>`` -> float16 [H, W]) of a finished job."""
    out = Path(out_dir)
    m = json.loads((out / MANIFEST).read_text())
    tables, maps = [], {}
    for s in m["shards"]:
        tables.append(read_table(out / s["table"]))
        with np.load(out / s["npz"]) as z:
            maps.update({k: z[k] for k in z.files})
    return pd.concat(tables, ignore_index=True), maps


def load_records(out_dir: str | Path) -> pd.DataFrame:
    """The long-format records of every shard of a finished job (tasks with records)."""
    out = Path(out_dir)
    m = json.loads((out / MANIFEST).read_text())
    frames = [pd.read_csv(out / s["records"]) for s in m["shards"] if "records" in s
              and (out / s["records"]).stat().st_size > 1]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()

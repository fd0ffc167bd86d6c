"""Read TF.js weights (a JSON weights manifest plus binary shards) into numpy, without TensorFlow.

The TF.js format (``tfjs-converter``; face-api.js ``*-weights_manifest.json``, or the
``weightsManifest`` entry of a ``model.json``): a list of groups ``{"paths": [shard files],
"weights": [{"name", "shape", "dtype", "quantization"?}]}``. The shards of a group are one
little-endian byte stream, cut into the weights in manifest order. A quantized weight is stored
as ``quantization.dtype`` and restored as

    value = q * scale + min        (uint8 / uint16, affine quantization)
    value = float16(q)             (float16)
"""
from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np

_DTYPES = {"float32": np.float32, "int32": np.int32, "bool": np.bool_, "uint8": np.uint8,
           "uint16": np.uint16, "float16": np.float16, "int8": np.int8, "int16": np.int16}


class TFJSWeightsError(ValueError):
    """The manifest or its shards do not match (wrong size, unknown dtype, missing shard)."""


def load_manifest(manifest: str | Path | Mapping | list) -> list[dict]:
    """The list of weight groups of a weights manifest (file path, parsed JSON, or a
    ``model.json`` dict with a ``weightsManifest`` entry)."""
    if isinstance(manifest, (str, Path)):
        path = Path(manifest)
        try:
            manifest = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise TFJSWeightsError(f"cannot read TF.js manifest {path}: {err}") from err
    if isinstance(manifest, Mapping):
        if "weightsManifest" not in manifest:
            raise TFJSWeightsError("a model.json without 'weightsManifest'")
        manifest = manifest["weightsManifest"]
    if not isinstance(manifest, list) or not all(
        isinstance(g, Mapping) and "paths" in g and "weights" in g for g in manifest
    ):
        raise TFJSWeightsError("not a TF.js weights manifest (expected a list of {paths, weights})")
    return list(manifest)


def _nbytes(spec: Mapping) -> tuple[int, np.dtype]:
    quant = spec.get("quantization")
    dtype_name = quant["dtype"] if quant else spec["dtype"]
    if dtype_name not in _DTYPES:
        raise TFJSWeightsError(f"weight {spec.get('name')!r}: unsupported dtype {dtype_name!r}")
    dtype = np.dtype(_DTYPES[dtype_name]).newbyteorder("<")
    count = int(np.prod(spec["shape"], dtype=np.int64)) if spec["shape"] else 1
    return count * dtype.itemsize, dtype


def _decode(spec: Mapping, raw: bytes, dtype: np.dtype) -> np.ndarray:
    arr = np.frombuffer(raw, dtype=dtype).reshape(spec["shape"])
    quant = spec.get("quantization")
    out_dtype = _DTYPES.get(spec.get("dtype", "float32"), np.float32)
    if quant:
        if quant["dtype"] in ("uint8", "uint16", "int8", "int16"):
            if "scale" not in quant or "min" not in quant:
                raise TFJSWeightsError(f"weight {spec['name']!r}: quantized without scale/min")
            arr = arr.astype(np.float64) * float(quant["scale"]) + float(quant["min"])
        return arr.astype(out_dtype)
    return arr.astype(out_dtype, copy=True)


def read_tfjs_weights(
    manifest: str | Path | Mapping | list,
    shards: Mapping[str, str | Path] | Callable[[str], str | Path] | str | Path | None = None,
) -> dict[str, np.ndarray]:
    """All weights of a TF.js manifest as ``{name: float32/int32 array}`` (dequantized).

    ``shards`` locates each shard file named in the manifest: a mapping (shard name -> path), a
    function, a directory, or None (the manifest file's directory). A shard whose size does not
    match the manifest raises :class:`TFJSWeightsError`.
    """
    base = Path(manifest).parent if isinstance(manifest, (str, Path)) else None
    groups = load_manifest(manifest)

    def locate(name: str) -> Path:
        if callable(shards):
            return Path(shards(name))
        if isinstance(shards, Mapping):
            if name not in shards:
                raise TFJSWeightsError(f"no path given for shard {name!r}")
            return Path(shards[name])
        root = Path(shards) if shards is not None else base
        if root is None:
            raise TFJSWeightsError(f"cannot locate shard {name!r}: give `shards`")
        return root / name

    out: dict[str, np.ndarray] = {}
    for group in groups:
        paths = [locate(p) for p in group["paths"]]
        try:
            buf = b"".join(p.read_bytes() for p in paths)
        except OSError as err:
            raise TFJSWeightsError(f"cannot read TF.js shard: {err}") from err
        specs = [(spec, *_nbytes(spec)) for spec in group["weights"]]
        need = sum(n for _, n, _ in specs)
        if len(buf) != need:
            raise TFJSWeightsError(
                f"shards {[str(p) for p in paths]} hold {len(buf)} bytes but the manifest "
                f"describes {need}: truncated or mismatched weights"
            )
        offset = 0
        for spec, n, dtype in specs:
            out[spec["name"]] = _decode(spec, buf[offset:offset + n], dtype)
            offset += n
    return out

"""A safe binary format for detector state: JSON-like values plus numpy arrays, no pickle.

``encode`` walks a nested structure of dicts (string keys), lists, tuples, strings, ints, floats,
bools, ``None`` and numeric/bool/string numpy arrays; arrays go into an ``.npz`` archive loaded
with ``allow_pickle=False``. Non-finite floats survive the round trip. Anything else fails loudly.

>>> blob = encode({"a": np.arange(3), "b": [1.5, float("nan"), None], "c": {"d": "x"}})
>>> out = decode(blob)
>>> out["a"].tolist(), out["b"][0], math.isnan(out["b"][1]), out["c"]
([0, 1, 2], 1.5, True, {'d': 'x'})
"""

from __future__ import annotations

import io
import math
import struct
import zlib
from typing import Any

import numpy as np
import orjson

MAGIC = b"ISS1"
FORMAT = "iss1-json+npz-zlib"


class StateCodecError(ValueError):
    pass


def encode(state: Any) -> bytes:
    arrays: list[np.ndarray] = []
    header = orjson.dumps(_pack(state, arrays))
    buf = io.BytesIO()
    if arrays:
        np.savez(buf, *arrays)
    body = zlib.compress(struct.pack(">Q", len(header)) + header + buf.getvalue(), 1)
    return MAGIC + body


def decode(blob: bytes) -> Any:
    if not blob.startswith(MAGIC):
        raise StateCodecError("not an infersentry state snapshot (bad magic)")
    raw = zlib.decompress(blob[len(MAGIC):])
    (n,) = struct.unpack(">Q", raw[:8])
    header = orjson.loads(raw[8 : 8 + n])
    rest = raw[8 + n :]
    arrays: list[np.ndarray] = []
    if rest:
        with np.load(io.BytesIO(rest), allow_pickle=False) as npz:
            arrays = [npz[f"arr_{i}"] for i in range(len(npz.files))]
    return _unpack(header, arrays)


def _pack(obj: Any, arrays: list[np.ndarray]) -> Any:
    if obj is None or isinstance(obj, bool | str):
        return obj
    if isinstance(obj, int | np.integer) and not isinstance(obj, bool):
        return int(obj)
    if isinstance(obj, float | np.floating):
        f = float(obj)
        return f if math.isfinite(f) else {"__float__": repr(f)}
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, np.ndarray):
        if obj.dtype == object:
            raise StateCodecError("object arrays cannot be stored; convert to str or numeric dtype")
        arrays.append(obj)
        return {"__ndarray__": len(arrays) - 1}
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            if not isinstance(k, str):
                raise StateCodecError(f"state dict keys must be strings, got {type(k).__name__}")
            if k.startswith("__") and k.endswith("__"):
                raise StateCodecError(f"reserved key {k!r} in state")
            out[k] = _pack(v, arrays)
        return out
    if isinstance(obj, list | tuple):
        return [_pack(v, arrays) for v in obj]
    raise StateCodecError(f"cannot store {type(obj).__name__} in detector state")


def _unpack(obj: Any, arrays: list[np.ndarray]) -> Any:
    if isinstance(obj, dict):
        if "__ndarray__" in obj:
            return arrays[obj["__ndarray__"]]
        if "__float__" in obj:
            return float(obj["__float__"])
        return {k: _unpack(v, arrays) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_unpack(v, arrays) for v in obj]
    return obj

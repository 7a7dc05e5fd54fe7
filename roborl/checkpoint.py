"""Checkpoints: safetensors for every tensor, JSON for everything else. Never pickle.

A checkpoint is a directory ``<run.dir>/checkpoints/step_<N>/`` holding

* ``tensors.safetensors``: every tensor of the (nested) state, keyed by its path;
* ``state.json``: the rest of the nested state, with tensors replaced by references,
  plus ``meta`` (the resolved run config, counters, RNG states, the store's commit
  generation, format version).

It is written to a temporary directory, fsynced and renamed into place, and only then
is ``checkpoints/latest`` (a one-line text file) atomically replaced. A crash at any
moment leaves either the old or the new checkpoint, never a torn one. Loading uses
``safetensors`` and ``json`` only, so a checkpoint cannot execute code (LeRobot and
SB3 unpickle; we do not).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from roborl.errors import UsageError
from roborl.fsutil import atomic_write_text, fsync_path

__all__ = ["atomic_write_text", "save_checkpoint", "load_checkpoint", "find_checkpoint", "rng_state", "set_rng_state"]

FORMAT_VERSION = 1
_TENSOR = "__tensor__"
_NDARRAY = "__ndarray__"
_TUPLE = "__tuple__"


def flatten_state(obj: Any, tensors: dict[str, torch.Tensor], prefix: str = "") -> Any:
    """Replace tensors/arrays in a nested state by references, collecting them in ``tensors``."""
    if isinstance(obj, torch.Tensor):
        key = prefix or "root"
        tensors[key] = obj.detach().to("cpu").contiguous()
        return {_TENSOR: key}
    if isinstance(obj, np.ndarray):
        key = prefix or "root"
        tensors[key] = torch.from_numpy(np.ascontiguousarray(obj))
        return {_NDARRAY: key}
    if isinstance(obj, dict):
        return {"__dict__": [[flatten_state(k, tensors, f"{prefix}.k{i}"), flatten_state(v, tensors, f"{prefix}.{i}")]
                             for i, (k, v) in enumerate(obj.items())]}
    if isinstance(obj, tuple):
        return {_TUPLE: [flatten_state(v, tensors, f"{prefix}.{i}") for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [flatten_state(v, tensors, f"{prefix}.{i}") for i, v in enumerate(obj)]
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, bytes):
        return {"__bytes__": obj.hex()}
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"cannot checkpoint object of type {type(obj).__name__} at {prefix!r}")


def unflatten_state(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, dict):
        if _TENSOR in obj:
            return tensors[obj[_TENSOR]]
        if _NDARRAY in obj:
            return tensors[obj[_NDARRAY]].numpy()
        if _TUPLE in obj:
            return tuple(unflatten_state(v, tensors) for v in obj[_TUPLE])
        if "__bytes__" in obj:
            return bytes.fromhex(obj["__bytes__"])
        if "__dict__" in obj:
            return {unflatten_state(k, tensors): unflatten_state(v, tensors) for k, v in obj["__dict__"]}
        return {k: unflatten_state(v, tensors) for k, v in obj.items()}
    if isinstance(obj, list):
        return [unflatten_state(v, tensors) for v in obj]
    return obj


def save_checkpoint(run_dir: str | Path, step: int, state: dict[str, Any], meta: dict[str, Any], keep: int = 3) -> Path:
    """Atomically write ``state`` (nested dict of tensors and plain values) and ``meta``.

    Returns the checkpoint directory. Keeps the newest ``keep`` checkpoints.
    """
    root = Path(run_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    name = f"step_{step:09d}"
    final = root / name
    tmp = root / (name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    tensors: dict[str, torch.Tensor] = {}
    skeleton = flatten_state(state, tensors)
    save_file(tensors, str(tmp / "tensors.safetensors"))
    doc = {"format_version": FORMAT_VERSION, "step": int(step), "meta": meta, "state": skeleton}
    with open(tmp / "state.json", "w") as f:
        json.dump(doc, f)
        f.flush()
        os.fsync(f.fileno())
    with open(tmp / "tensors.safetensors", "rb+") as f:
        os.fsync(f.fileno())
    fsync_path(tmp)
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    fsync_path(root)
    atomic_write_text(root / "latest", name + "\n")
    # Prune old ones (never the one just written).
    ckpts = sorted(p for p in root.glob("step_*") if p.is_dir() and not p.name.endswith(".tmp"))
    for old in ckpts[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


def find_checkpoint(path: str | Path) -> Path | None:
    """Resolve a checkpoint dir from a checkpoint dir, a run dir, or a run's checkpoints dir.

    Returns None when a run dir has no checkpoint yet.
    """
    p = Path(path)
    if (p / "state.json").exists():
        return p
    for root in (p / "checkpoints", p):
        latest = root / "latest"
        if latest.exists():
            cand = root / latest.read_text().strip()
            if (cand / "state.json").exists():
                return cand
        ckpts = sorted(q for q in root.glob("step_*") if (q / "state.json").exists()) if root.exists() else []
        if ckpts:
            return ckpts[-1]
    return None


def load_checkpoint(path: str | Path) -> tuple[dict[str, Any], dict[str, Any], int]:
    """Load ``(state, meta, step)``. Raises UsageError with one line on a missing/corrupt checkpoint."""
    p = Path(path)
    if not p.exists():
        raise UsageError(f"checkpoint not found: {p}")
    ck = find_checkpoint(p)
    if ck is None:
        raise UsageError(f"no checkpoint in {p} (expected state.json or checkpoints/latest)")
    try:
        doc = json.loads((ck / "state.json").read_text())
        tensors = load_file(str(ck / "tensors.safetensors"))
    except FileNotFoundError as e:
        raise UsageError(f"corrupt checkpoint {ck}: missing {Path(e.filename).name}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UsageError(f"corrupt checkpoint {ck}: state.json is not valid JSON ({e.msg if hasattr(e, 'msg') else e})") from None
    except Exception as e:  # safetensors raises SafetensorError / OSError on truncation
        raise UsageError(f"corrupt checkpoint {ck}: tensors.safetensors unreadable ({type(e).__name__})") from None
    if not isinstance(doc, dict) or doc.get("format_version") != FORMAT_VERSION or "state" not in doc:
        raise UsageError(f"corrupt checkpoint {ck}: unknown format (state.json format_version)")
    for name, t in tensors.items():
        # A diverged run's weights (NaN/inf) would act as a held robot or a random policy; refuse them.
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise UsageError(f"checkpoint {ck}: tensor {name!r} has non-finite values (NaN or inf); "
                             "the run diverged before this checkpoint: use an earlier one")
    try:
        state = unflatten_state(doc["state"], tensors)
    except KeyError as e:
        raise UsageError(f"corrupt checkpoint {ck}: tensor {e} missing from tensors.safetensors") from None
    return state, doc.get("meta", {}), int(doc.get("step", 0))


# ----------------------------------------------------------------------------- RNG state

def rng_state() -> dict[str, Any]:
    """Global RNG states of python, numpy and torch (CPU and CUDA), checkpointable."""
    import random

    st: dict[str, Any] = {
        "python": repr(random.getstate()),
        "numpy": _np_state(np.random.get_state()),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        st["cuda"] = [s for s in torch.cuda.get_rng_state_all()]
    return st


def _np_state(s: tuple) -> dict[str, Any]:
    return {"name": s[0], "keys": np.asarray(s[1]), "pos": int(s[2]), "has_gauss": int(s[3]), "cached": float(s[4])}


def set_rng_state(st: dict[str, Any]) -> None:
    import ast
    import random

    random.setstate(_to_tuple(ast.literal_eval(st["python"])))
    n = st["numpy"]
    np.random.set_state((n["name"], np.asarray(n["keys"], dtype=np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    torch.set_rng_state(st["torch"].to(torch.uint8))
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.to(torch.uint8) for s in st["cuda"]])


def _to_tuple(x: Any) -> Any:
    return tuple(_to_tuple(v) for v in x) if isinstance(x, (list, tuple)) else x

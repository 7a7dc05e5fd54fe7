"""Writers and readers of exported policy files (the :data:`roborl.export.FORMATS` registry's targets).

* TorchScript: ``torch.jit.script`` of the export module; call ``module(obs)`` with a float32
  ``[B, O]`` tensor (or a dict of them for Dict observations; image policies take
  ``{"pixels.front": [B, H, W, 3] uint8, "proprio": [B, P] float32, ...}``). Metadata: the extra file
  ``roborl_meta.json`` (``torch.jit.load(path, _extra_files={"roborl_meta.json": ""})``).
* ONNX: opset 17 graph with inputs ``obs`` (or one per Dict leaf, cameras uint8) ``[B, ...]``,
  B dynamic, output ``action [B, A]``. Metadata: ``metadata_props`` key ``roborl_meta`` (the same JSON),
  plus one prop per top-level key for tools that list props.
"""
from __future__ import annotations

import io
import json
import os
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from roborl.errors import UsageError
from roborl.export.policy import ExportedPolicy

META_FILE = "roborl_meta.json"
META_KEY = "roborl_meta"
ONNX_OPSET = 17

__all__ = ["write_onnx", "write_torchscript", "read_meta", "load_runner", "require_onnx", "META_FILE", "META_KEY"]


def require_onnx(runtime: bool = True) -> None:
    """UsageError naming the ``export`` extra when onnx (or onnxruntime) is missing."""
    import importlib.util

    for mod in ("onnx", "onnxruntime") if runtime else ("onnx",):
        if importlib.util.find_spec(mod) is None:
            raise UsageError(f"--format onnx needs the '{mod}' package: pip install 'roborl[export]'")


def _atomic_write_bytes(out: Path, data: bytes) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, out)


def write_torchscript(exp: ExportedPolicy, out: Path) -> None:
    module = exp.module(onnx=False)
    scripted = torch.jit.script(module)
    buf = io.BytesIO()
    torch.jit.save(scripted, buf, _extra_files={META_FILE: json.dumps(exp.meta)})
    _atomic_write_bytes(Path(out), buf.getvalue())


def write_onnx(exp: ExportedPolicy, out: Path) -> None:
    require_onnx(runtime=False)
    import onnx

    module = exp.module(onnx=True)
    names = exp.obs_keys if exp.obs_keys is not None else ["obs"]
    buf = io.BytesIO()
    with warnings.catch_warnings():
        # The TorchScript-based exporter: no onnxscript dependency, and our graph is a plain MLP.
        warnings.simplefilter("ignore")
        torch.onnx.export(module, exp.example_inputs(2), buf, input_names=names, output_names=["action"],
                          dynamic_axes={**{n: {0: "batch"} for n in names}, "action": {0: "batch"}},
                          opset_version=ONNX_OPSET, dynamo=False, do_constant_folding=True)
    model = onnx.load_from_string(buf.getvalue())
    props = {META_KEY: json.dumps(exp.meta)}
    for k, v in exp.meta.items():
        props[k] = v if isinstance(v, str) else json.dumps(v)
    onnx.helper.set_model_props(model, props)
    onnx.checker.check_model(model)
    _atomic_write_bytes(Path(out), model.SerializeToString())


def detect_format(path: Path) -> str:
    with open(path, "rb") as f:
        head = f.read(4)
    return "torchscript" if head[:2] == b"PK" else "onnx"  # TorchScript files are zip archives


def read_meta(path: str | Path) -> dict[str, Any]:
    """The roborl metadata of an exported file (either format)."""
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"exported policy not found: {p}")
    if detect_format(p) == "torchscript":
        extra = {META_FILE: ""}
        torch.jit.load(str(p), map_location="cpu", _extra_files=extra)
        return json.loads(extra[META_FILE])
    require_onnx(runtime=False)
    import onnx

    model = onnx.load(str(p))
    props = {q.key: q.value for q in model.metadata_props}
    if META_KEY not in props:
        raise UsageError(f"{p}: not a roborl export (no '{META_KEY}' in metadata_props)")
    return json.loads(props[META_KEY])


def _as_input(v: Any) -> np.ndarray:
    a = np.asarray(v)
    return a if a.dtype == np.uint8 else a.astype(np.float32, copy=False)


def load_runner(path: str | Path, threads: int | None = None) -> Callable[[Any], np.ndarray]:
    """``run(obs) -> actions [B, A]`` (numpy) for an exported file; obs: [B, O] array or dict of arrays.

    ONNX runs in onnxruntime (CPU), TorchScript in ``torch.jit.load``; ``threads`` sets the
    intra-op threads of either (None keeps the runtime's default).
    """
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"exported policy not found: {p}")
    if detect_format(p) == "torchscript":
        mod = torch.jit.load(str(p), map_location="cpu").eval()
        if threads:
            torch.set_num_threads(threads)

        def run_ts(obs: Any) -> np.ndarray:
            with torch.inference_mode():
                if isinstance(obs, dict):
                    # uint8 cameras stay uint8 (the module converts them); vectors go in as float32.
                    x: Any = {k: torch.as_tensor(_as_input(v)) for k, v in obs.items()}
                else:
                    x = torch.as_tensor(np.asarray(obs, np.float32))
                return mod(x).numpy()

        return run_ts
    require_onnx(runtime=True)
    import onnxruntime as ort

    so = ort.SessionOptions()
    if threads:
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(p), sess_options=so, providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]
    types = {i.name: (np.uint8 if i.type == "tensor(uint8)" else np.float32) for i in sess.get_inputs()}

    def run_onnx(obs: Any) -> np.ndarray:
        if isinstance(obs, dict):
            feed = {n: np.asarray(obs[n], types[n]) for n in names}
        else:
            feed = {names[0]: np.asarray(obs, np.float32)}
        return sess.run(None, feed)[0]

    return run_onnx

"""Self-contained deterministic policies for deployment: ONNX and TorchScript files.

``roborl export RUN|CKPT --format onnx|torchscript --out FILE`` writes one file that maps a
batch of raw observations to actions in the env's own units, with everything between
(observation normalisation, residual base policy, deterministic actor, action rescaling,
clip to the action box) inside it; see :mod:`roborl.export.policy`. The robot server's
workspace projection stays outside (it needs the robot's state).

:data:`FORMATS` maps ``--format`` to ``"module:writer"``; a writer is called as
``writer(exported: ExportedPolicy, out: Path) -> None``. The ONNX writer needs the
``export`` extra (onnx, onnxruntime); TorchScript needs only torch.
"""
from __future__ import annotations

FORMATS: dict[str, str] = {
    "onnx": "roborl.export.writers:write_onnx",
    "torchscript": "roborl.export.writers:write_torchscript",
}

__all__ = ["FORMATS"]

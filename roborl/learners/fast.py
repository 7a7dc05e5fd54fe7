"""Fast-path machinery of the learners' updates: optional ``torch.compile`` with a one-line fallback, and
the fused Adam kernel called without ``Optimizer.step``'s Python bookkeeping.

Both do the same math as the plain path (tests/learners/test_fast_paths.py checks parameters after K
updates against it). ``torch.compile`` uses torch's own on-disk caches (inductor's FX-graph cache and
AOTAutograd's cache, on by default): a second process with the same graphs compiles in a fraction of
the first one's time.
"""
from __future__ import annotations

import logging
import time
from typing import Any, Callable

import torch

__all__ = ["CompileSetting", "want_compile", "Compiled", "adam_step", "zero_grad"]

log = logging.getLogger(__name__)

CompileSetting = str | bool  # "auto" | "on" | "off"; YAML 1.1 reads a bare on/off as true/false


def want_compile(setting: CompileSetting, device: torch.device, auto_devices: tuple[str, ...]) -> bool:
    """Whether to compile: ``on`` (true) always, ``off`` (false) never, ``auto`` on the device types listed."""
    if setting is True or setting == "on":
        return True
    if setting is False or setting == "off":
        return False
    return device.type in auto_devices


class Compiled:
    """``fn`` under ``torch.compile`` with a fallback: the first failure (compile unavailable, no C++
    compiler, an unsupported op) logs ONE line naming ``name`` and the error, and from then on ``fn`` runs
    eagerly. ``fn`` must be pure (no in-place writes to its inputs or to state): a call that failed while
    compiled is repeated eagerly.

    ``compile_s``: seconds spent in the first (compiling) call, None before it; ``active``: still compiled.
    """

    def __init__(self, fn: Callable[..., Any], name: str, **compile_kwargs: Any) -> None:
        self.fn, self.name = fn, name
        self.compile_s: float | None = None
        self.active = True
        try:
            self._compiled: Callable[..., Any] | None = torch.compile(fn, **compile_kwargs)
        except Exception as e:  # torch.compile itself refused (e.g. an unsupported Python or platform)
            self._fail(e)

    def _fail(self, e: BaseException) -> None:
        self.active, self._compiled = False, None
        first = (str(e).strip().splitlines() or [""])[0][:200]
        log.warning("%s: torch.compile unavailable (%s: %s); running it uncompiled", self.name, type(e).__name__, first)

    def __call__(self, *args: Any) -> Any:
        if self._compiled is not None:
            t = time.perf_counter() if self.compile_s is None else 0.0
            try:
                out = self._compiled(*args)
            except Exception as e:  # noqa: BLE001 - any compile-time failure falls back, never crashes the run
                self._fail(e)
            else:
                if self.compile_s is None:
                    self.compile_s = time.perf_counter() - t
                return out
        return self.fn(*args)


def adam_step(opt: torch.optim.Optimizer) -> None:
    """``opt.step()`` for a fused ``torch.optim.Adam`` without its per-call Python overhead (hooks, grouping,
    state lookups: on a CPU several times the kernel's own time for small networks): the same ``torch._fused_adam_``
    kernel with the same arguments Adam passes it, on the optimiser's own state (so checkpoints see no
    difference). Plain formula (Kingma & Ba 2015), per element with step t:
    m = b1 m + (1 - b1) g; v = b2 v + (1 - b2) g^2; p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps).

    Falls back to ``opt.step()`` for the first step (which creates the state), for non-fused or
    non-plain Adam settings, and for parameters without gradients.
    """
    if not isinstance(opt, torch.optim.Adam):
        opt.step()
        return
    groups = []
    for g in opt.param_groups:
        if (not g.get("fused") or g["amsgrad"] or g["maximize"] or g["weight_decay"] != 0.0 or g["capturable"]
                or g.get("decoupled_weight_decay", False) or g["differentiable"]):
            opt.step()
            return
        ps = [p for p in g["params"] if p.grad is not None]
        sts = [opt.state.get(p) for p in ps]
        if any(not st for st in sts) or len({(p.device, p.dtype) for p in ps}) > 1:
            opt.step()
            return
        groups.append((g, ps, sts))
    for g, ps, sts in groups:
        if not ps:
            continue
        steps = [st["step"] for st in sts]
        torch._foreach_add_(steps, 1)
        b1, b2 = g["betas"]
        lr = g["lr"]
        torch._fused_adam_(ps, [p.grad for p in ps], [st["exp_avg"] for st in sts], [st["exp_avg_sq"] for st in sts],
                           [], steps, amsgrad=False, lr=lr.item() if isinstance(lr, torch.Tensor) else lr,
                           beta1=float(b1), beta2=float(b2), weight_decay=0.0, eps=g["eps"], maximize=False,
                           grad_scale=None, found_inf=None)


def zero_grad(opt: torch.optim.Optimizer) -> None:
    """``opt.zero_grad(set_to_none=True)`` without its per-call Python overhead (a profiler record and the
    foreach grouping; about as long as freeing the gradients itself on a CPU, three calls per SAC update): every parameter's ``grad``
    becomes None, which is all that call does (optimisers have no zero_grad hooks)."""
    for g in opt.param_groups:
        for p in g["params"]:
            p.grad = None

"""Run directories, metrics logging (JSONL + CSV + optional TensorBoard) and progress bars.

A run directory holds::

    config.yaml          the resolved config (written at start)
    metrics.jsonl        one JSON object per logged row ({"step": ..., "time": ..., ...})
    metrics.csv          the same rows as CSV (columns fixed by the first row; new keys are
                         added to the JSONL only)
    events.out.tfevents.*  TensorBoard, when tensorboard is installed
    checkpoints/         see roborl.checkpoint
"""

from __future__ import annotations

import csv
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Iterable

from roborl.config import dump_yaml


def default_run_dir(name: str) -> Path:
    return Path("runs") / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"


def check_run_dir(path: str | Path) -> Path:
    """Check, without writing anything, that a run directory can be used (reused or created).

    A path that is a file, under a file, or where nothing can be created is a one-line UsageError
    naming ``run.dir``. A probe directory is made and removed in the nearest existing ancestor,
    so special filesystems (``/proc``) and read-only mounts are caught too.
    """
    import os
    import tempfile

    from roborl.errors import UsageError

    p = Path(path)
    if p.exists():
        if not p.is_dir():
            raise UsageError(f"run.dir: {p} exists and is not a directory")
        if not os.access(p, os.W_OK | os.X_OK):
            raise UsageError(f"run.dir: {p} is not writable")
        return p
    anc = p.absolute().parent
    while not anc.exists():
        anc = anc.parent
    if not anc.is_dir():
        raise UsageError(f"run.dir: cannot create {p}: {anc} is not a directory")
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".roborl-probe-", dir=anc))
    except OSError as e:
        raise UsageError(f"run.dir: cannot create {p} ({e.strerror or type(e).__name__})") from None
    return p


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` when available, else ``cpu``. Errors name the device."""
    import torch

    from roborl.errors import UsageError

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise UsageError("device: 'cuda' requested but no CUDA device is available (use device=auto or cpu)")
    return device


def bf16_is_fast(device: str) -> bool:
    """Whether bfloat16 matmuls run natively on ``device`` (so autocast speeds them up).

    CUDA: Ampere or newer (``torch.cuda.is_bf16_supported``). CPU: the AVX512-BF16 or AMX-BF16
    instruction sets (Linux ``/proc/cpuinfo`` flags); without them oneDNN emulates bf16 and is
    slower than float32, so ``precision: auto`` keeps float32 there.
    """
    import torch

    if device.startswith("cuda"):
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    if device != "cpu":
        return False
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


def resolve_precision(precision: str, device: str) -> str:
    """``auto`` -> ``bf16`` on a CPU whose bf16 matmuls are native (see bf16_is_fast), else ``fp32``.

    CUDA resolves to fp32: at our learners' sizes (256-1024 wide MLPs, 32-channel convs on 64x64 images)
    a GPU update is bound by kernel launches, and autocast's casts add launches while the matmuls it
    speeds up were never the cost (measured slower in every row on an H200; BENCHMARKS.md: GPU).
    """
    if precision == "auto":
        return "bf16" if not device.startswith("cuda") and bf16_is_fast(device) else "fp32"
    return precision


def progress_enabled() -> bool:
    return sys.stderr.isatty() and os.environ.get("ROBORL_QUIET") != "1"


def progress(iterable: Iterable | None = None, total: int | None = None, desc: str = "", initial: int = 0):
    """A tqdm bar on a TTY, a silent stand-in otherwise (or with --quiet)."""
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, initial=initial, disable=not progress_enabled(),
                dynamic_ncols=True, leave=False)


def _fmt(v: float | None, spec: str) -> str:
    return "-" if v is None or not math.isfinite(v) else format(v, spec)


def _fmt_eta(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "-"
    s = int(seconds)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


class ProgressLines:
    """One plain progress line every ``every_s`` seconds for logs (stdout not a TTY: nohup, systemd,
    CI), where a tqdm bar would be invisible or garbage. Silent on a TTY (the bar is shown) and with
    ``--quiet`` (ROBORL_QUIET=1). Callers feed ``update(...)`` every loop; ``line(...)`` forces one
    (at each eval). The rates are over the window since the previous line."""

    def __init__(self, total: int, every_s: float, step: int = 0, stream: Any = None,
                 enabled: bool | None = None) -> None:
        self.stream = stream if stream is not None else sys.stdout
        if enabled is None:
            enabled = not self.stream.isatty() and os.environ.get("ROBORL_QUIET") != "1"
        self.enabled = bool(enabled) and every_s > 0
        self.total, self.every_s = int(total), float(every_s)
        self._t = self._t_start = time.time()
        self._step = self._step_start = int(step)
        self._updates = 0

    def format(self, step: int, env_rate: float, upd_rate: float, ret: float | None, success: float | None,
               eval_success: float | None, eta_s: float | None) -> str:
        return (f"step {step}/{self.total} | {env_rate:.1f} env-steps/s | {upd_rate:.1f} updates/s | "
                f"return {_fmt(ret, '.2f')} | success {_fmt(success, '.2f')} | eval success {_fmt(eval_success, '.2f')}"
                f" | ETA {_fmt_eta(eta_s)}")

    def update(self, step: int, updates: int = 0, *, ret: float | None = None, success: float | None = None,
               eval_success: float | None = None, force: bool = False) -> str | None:
        """Count ``updates`` gradient updates; print (and return) a line when due or ``force``d."""
        self._updates += int(updates)
        if not self.enabled:
            return None
        now = time.time()
        if not force and now - self._t < self.every_s:
            return None
        dt = max(now - self._t, 1e-9)
        env_rate = (step - self._step) / dt
        # ETA from the whole run's mean rate (a window's rate jumps at eval rounds).
        mean_rate = (step - self._step_start) / max(now - self._t_start, 1e-9)
        eta = (self.total - step) / mean_rate if mean_rate > 0 else None
        text = self.format(step, env_rate, self._updates / dt, ret, success, eval_success, eta)
        print(text, file=self.stream, flush=True)
        self._t, self._step, self._updates = now, int(step), 0
        return text


class MetricsLogger:
    """Appends metric rows to JSONL/CSV (and TensorBoard when installed). Safe to reopen on resume."""

    def __init__(self, run_dir: str | Path, tensorboard: bool = True) -> None:
        self.dir = Path(run_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self._jsonl = open(self.dir / "metrics.jsonl", "a", buffering=1)
        csv_path = self.dir / "metrics.csv"
        self._csv_fields: list[str] | None = None
        if csv_path.exists() and csv_path.stat().st_size > 0:
            with open(csv_path) as f:
                self._csv_fields = next(csv.reader(f), None)
        self._csv = open(csv_path, "a", newline="", buffering=1)
        self._writer: csv.DictWriter | None = None
        if self._csv_fields:
            self._writer = csv.DictWriter(self._csv, fieldnames=self._csv_fields, extrasaction="ignore")
        self._tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter  # needs the tensorboard package

                self._tb = SummaryWriter(str(self.dir))
            except Exception:
                self._tb = None
        self._t0 = time.time()

    def log(self, step: int, row: dict[str, Any], prefix: str = "") -> None:
        clean: dict[str, Any] = {"step": int(step), "time": round(time.time() - self._t0, 3)}
        for k, v in row.items():
            key = f"{prefix}{k}"
            if hasattr(v, "item"):
                v = v.item()
            if isinstance(v, float) and not math.isfinite(v):
                v = None
            clean[key] = v
        self._jsonl.write(json.dumps(clean) + "\n")
        if self._writer is None:
            self._csv_fields = list(clean)
            self._writer = csv.DictWriter(self._csv, fieldnames=self._csv_fields, extrasaction="ignore")
            self._writer.writeheader()
        self._writer.writerow(clean)
        if self._tb is not None:
            for k, v in clean.items():
                if k not in ("step", "time") and isinstance(v, (int, float)) and not isinstance(v, bool):
                    self._tb.add_scalar(k, v, step)

    def set_time_offset(self, seconds: float) -> None:
        """On resume, continue the wall-time axis where the previous process stopped."""
        self._t0 = time.time() - seconds

    def close(self) -> None:
        self._jsonl.close()
        self._csv.close()
        if self._tb is not None:
            self._tb.close()


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """All rows of a run's metrics.jsonl (a torn last line from a crash is skipped)."""
    rows = []
    p = Path(run_dir) / "metrics.jsonl"
    if not p.exists():
        return rows
    for line in p.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


class Accumulator:
    """Sums metric tensors on the device; one host sync per log row instead of per update.

    Counts are per key: some metrics arrive only on some updates (SAC's actor every ``sac.actor_every``).
    Values are detached 0-d torch tensors (the learner's metrics).
    """

    def __init__(self) -> None:
        self.sums: dict[str, Any] = {}
        self.counts: dict[str, int] = {}

    def add(self, metrics: dict[str, Any]) -> None:
        for k, v in metrics.items():
            if k in self.sums:
                self.sums[k] += v
                self.counts[k] += 1
            else:
                self.sums[k] = v.clone().float()
                self.counts[k] = 1

    def pop(self) -> dict[str, float]:
        if not self.sums:
            return {}
        import torch

        stacked = torch.stack(list(self.sums.values())).cpu()  # the one sync
        out = {k: float(v) / self.counts[k] for k, v in zip(self.sums, stacked)}
        self.sums, self.counts = {}, {}
        return out


def write_config(run_dir: str | Path, cfg: Any) -> None:
    from roborl.checkpoint import atomic_write_text

    Path(run_dir).mkdir(parents=True, exist_ok=True)
    atomic_write_text(Path(run_dir) / "config.yaml", dump_yaml(cfg))

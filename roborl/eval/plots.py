"""Learning curves of runs: read metrics.jsonl, group runs by config, mean +- 95% CI, plot.

Four panels: return and success against env steps and against wall time. Runs whose
configs are equal apart from ``run.seed``/``run.dir``/``run.name`` form one group, drawn
as the mean over seeds with a 95% confidence band (Student t over the seeds, curves
linearly interpolated onto a common x grid clipped to the shortest run, so the band never
extrapolates). A single run is drawn as its own line. Eval rounds (``eval/return``,
``eval/success``) are plotted when a run has them, else the training episodes
(``train/return``, ``train/success``) are.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

#: two-sided 95% Student t quantiles by degrees of freedom (1..30); 1.96 beyond.
_T95 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
        2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042]

_IDENTITY_KEYS = ("seed", "dir", "name")


def t95(df: int) -> float:
    return _T95[df - 1] if 1 <= df <= len(_T95) else 1.96


@dataclass
class RunCurves:
    """One run's curves. Arrays are 1-D, aligned per metric: ``x_step[k]``, ``x_time[k]``, ``y[k]``."""

    path: Path
    config: dict[str, Any]
    curves: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]  # "return"/"success" -> (steps, times, values)
    source: str  # "eval" or "train"


def read_run_config(run: Path) -> dict[str, Any]:
    p = run / "config.yaml"
    if not p.exists():
        return {}
    try:
        from roborl.config import read_yaml

        return read_yaml(p)
    except Exception:
        return {}


def load_run(path: str | Path) -> RunCurves:
    """Read ``metrics.jsonl`` (and ``config.yaml``) of a run. UsageError when there is nothing to plot."""
    from roborl.errors import UsageError
    from roborl.runs import read_metrics

    run = Path(path)
    if not run.is_dir():
        raise UsageError(f"run directory not found: {run}")
    if not (run / "metrics.jsonl").exists():
        raise UsageError(f"{run}: no metrics.jsonl (is this a run directory?)")
    rows = read_metrics(run)
    source = "eval" if any(r.get("eval/return") is not None for r in rows) else "train"
    curves: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    for metric in ("return", "success"):
        key = f"{source}/{metric}"
        pts = [(float(r["step"]), float(r.get("time", np.nan)), float(r[key])) for r in rows
               if r.get(key) is not None and r.get("step") is not None]
        if pts:
            a = np.array(pts, dtype=np.float64)
            order = np.argsort(a[:, 0], kind="stable")
            curves[metric] = (a[order, 0], a[order, 1], a[order, 2])
    if not curves:
        raise UsageError(f"{run}: metrics.jsonl has no eval/return or train/return rows yet")
    return RunCurves(run, read_run_config(run), curves, source)


def group_key(config: dict[str, Any]) -> str:
    """The config minus run identity (seed, dir, name), as a canonical string."""
    c = json.loads(json.dumps(config, default=str))
    if isinstance(c.get("run"), dict):
        for k in _IDENTITY_KEYS:
            c["run"].pop(k, None)
    return json.dumps(c, sort_keys=True)


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(d, dict):
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix.rstrip("."): json.dumps(d) if isinstance(d, (list, dict)) else d}


def group_runs(runs: list[RunCurves]) -> list[tuple[str, list[RunCurves]]]:
    """Group runs by config (apart from identity) and label each group by what differs between groups."""
    groups: dict[str, list[RunCurves]] = {}
    for r in runs:
        # Runs without a config.yaml never group with anything.
        key = group_key(r.config) if r.config else f"__nocfg__{r.path}"
        groups.setdefault(key, []).append(r)
    items = list(groups.items())
    flats = [_flatten(json.loads(k)) if not k.startswith("__nocfg__") else {} for k, _ in items]
    keys = sorted(set().union(*flats)) if flats else []
    differing = [k for k in keys if len({json.dumps(f.get(k), default=str) for f in flats}) > 1]
    out: list[tuple[str, list[RunCurves]]] = []
    for (key, members), flat in zip(items, flats):
        if len(items) > 1 and differing and flat:
            label = ", ".join(f"{k}={flat.get(k)}" for k in differing[:3])
        else:
            label = members[0].path.name if len(members) == 1 else _common_name([m.path.name for m in members])
        if len(members) > 1:
            label += f" (n={len(members)})"
        out.append((label, members))
    return out


def _common_name(names: list[str]) -> str:
    import os

    pre = os.path.commonprefix(names).rstrip("-_ ")
    return pre or names[0]


def mean_ci(xs: list[np.ndarray], ys: list[np.ndarray], points: int = 200) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean and 95% CI half-width across runs on a common grid: ``(grid [P], mean [P], half [P])``.

    The grid spans the range every run covers (from the largest first x to the smallest last x).
    """
    lo = max(float(x[0]) for x in xs)
    hi = min(float(x[-1]) for x in xs)
    if hi <= lo:
        grid = np.array([hi])
    else:
        grid = np.linspace(lo, hi, points)
    Y = np.stack([np.interp(grid, x, y) for x, y in zip(xs, ys)])  # [n_runs, P]
    n = Y.shape[0]
    mean = Y.mean(axis=0)
    half = t95(n - 1) * Y.std(axis=0, ddof=1) / np.sqrt(n) if n > 1 else np.zeros_like(mean)
    return grid, mean, half


def plot_runs(paths: list[str | Path], out: str | Path, title: str | None = None) -> Path:
    """Draw the four-panel figure for ``paths`` into ``out``; returns the written path."""
    plt = _pyplot()
    from roborl.errors import UsageError

    runs = [load_run(p) for p in paths]
    groups = group_runs(runs)
    fig, axes = plt.subplots(2, 2, figsize=(11, 7), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key().get("color", ["C0"])
    sources = {r.source for r in runs}
    for gi, (label, members) in enumerate(groups):
        color = colors[gi % len(colors)]
        for row, metric in enumerate(("return", "success")):
            have = [m for m in members if metric in m.curves]
            if not have:
                continue
            for col, xi in enumerate((0, 1)):  # 0: env steps, 1: wall time
                ax = axes[row][col]
                xs, ys = [], []
                for m in have:
                    x, y = m.curves[metric][xi], m.curves[metric][2]
                    ok = np.isfinite(x) & np.isfinite(y)
                    x, y = x[ok], y[ok]
                    if x.size:
                        order = np.argsort(x, kind="stable")
                        xs.append(x[order])
                        ys.append(y[order])
                if not xs:
                    continue
                if len(xs) == 1:
                    ax.plot(xs[0], ys[0], color=color, label=label, marker="o" if xs[0].size < 30 else None, ms=3)
                else:
                    for x, y in zip(xs, ys):
                        ax.plot(x, y, color=color, alpha=0.2, lw=0.8)
                    grid, mean, half = mean_ci(xs, ys)
                    ax.plot(grid, mean, color=color, label=label, lw=1.8)
                    lo, hi = mean - half, mean + half
                    if metric == "success":  # a rate: the band stays in [0, 1]
                        lo, hi = np.clip(lo, 0.0, 1.0), np.clip(hi, 0.0, 1.0)
                    ax.fill_between(grid, lo, hi, color=color, alpha=0.25, lw=0)
    src = "/".join(sorted(sources))
    for row, metric in enumerate(("return", "success")):
        for col, xlabel in enumerate(("env steps", "wall time [s]")):
            ax = axes[row][col]
            ax.set_xlabel(xlabel)
            ax.set_ylabel(f"{src} {metric}" + (" rate" if metric == "success" else ""))
            ax.grid(alpha=0.3)
            if metric == "success":
                ax.set_ylim(-0.05, 1.05)
    handles, labels = axes[0][0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="lower center", ncol=min(3, len(labels)), fontsize=8, frameon=False)
    fig.suptitle(title or ("learning curves (mean ± 95% CI over seeds)" if any(len(m) > 1 for _, m in groups)
                           else "learning curves"))
    fig.tight_layout(rect=(0, 0.06 + 0.03 * ((len(labels) - 1) // 3), 1, 0.97))
    return _save(plt, fig, out, dpi=110)


def _save(plt: Any, fig: Any, out: str | Path, dpi: int) -> Path:
    """Write ``fig`` to ``out`` (parents created) and close it; a one-line UsageError when it cannot be written."""
    from roborl.errors import UsageError

    out = Path(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, dpi=dpi)
    except (ValueError, OSError) as e:
        raise UsageError(f"--out {out}: cannot write the figure ({str(e).splitlines()[0]})") from None
    finally:
        plt.close(fig)
    return out


def _pyplot() -> Any:
    """matplotlib.pyplot on the headless Agg backend; a one-line UsageError naming the extra if missing."""
    from roborl.errors import UsageError

    try:
        import matplotlib
    except ImportError:
        raise UsageError("plots need matplotlib (not installed): pip install 'roborl[plot]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


#: The training diagnostics drawn by :func:`plot_training`, in panel order: (metrics.jsonl key,
#: panel title). A panel is drawn when some run logged its key; the first key a run has wins.
TRAINING_PANELS: tuple[tuple[tuple[str, ...], str], ...] = (
    (("train/return",), "episode return (training)"),
    (("train/success", "eval/success"), "success rate"),
    (("alpha",), "temperature alpha"),
    (("q_mean",), "mean Q"),
    (("td_abs",), "|TD error|"),
    (("critic_loss", "loss/value"), "critic / value loss"),
    (("actor_loss", "loss/policy"), "actor / policy loss"),
    (("entropy",), "policy entropy"),
    (("approx_kl", "kl"), "KL (old || new)"),
    (("train/safety_clips",), "safety clips per episode"),
    (("train/intervention_rate",), "intervention rate"),
    (("per/priority_mean", "per/priority_max"), "replay priority"),
    (("env_steps_per_s", "fps"), "env steps / s"),
)


def training_series(rows: list[dict[str, Any]], key: str) -> tuple[np.ndarray, np.ndarray]:
    """(env steps [K], values [K]) of one metric over a run's rows, sorted by step, NaN-free."""
    pts = [(float(r["step"]), float(r[key])) for r in rows
           if r.get("step") is not None and isinstance(r.get(key), (int, float)) and not isinstance(r.get(key), bool)]
    if not pts:
        return np.zeros(0), np.zeros(0)
    a = np.array(pts, dtype=np.float64)
    a = a[np.isfinite(a[:, 1])]
    a = a[np.argsort(a[:, 0], kind="stable")]
    return a[:, 0], a[:, 1]


def _smooth(y: np.ndarray, window: int) -> np.ndarray:
    """Trailing moving average over ``window`` points (episode returns are noisy)."""
    if y.size < 3 or window <= 1:
        return y
    w = min(window, y.size)
    c = np.cumsum(np.insert(y, 0, 0.0))
    out = np.empty_like(y)
    out[w - 1:] = (c[w:] - c[:-w]) / w
    out[: w - 1] = c[1:w] / np.arange(1, w)
    return out


def plot_training(paths: list[str | Path], out: str | Path, title: str | None = None) -> Path:
    """Draw every training diagnostic the runs logged (:data:`TRAINING_PANELS`) against env steps.

    One line per run (episode-level series smoothed over 20 episodes, the raw points faint).
    Returns the written path; UsageError when the runs logged none of them.
    """
    from roborl.errors import UsageError
    from roborl.runs import read_metrics

    plt = _pyplot()
    runs = []
    for path in paths:
        run = Path(path)
        if not (run / "metrics.jsonl").exists():
            raise UsageError(f"{run}: no metrics.jsonl (is this a run directory?)")
        runs.append((run, read_metrics(run)))
    panels = []
    for keys, label in TRAINING_PANELS:
        series = []
        for run, rows in runs:
            for key in keys:
                x, y = training_series(rows, key)
                if x.size:
                    series.append((run.name, key, x, y))
                    break
        if series:
            panels.append((label, series))
    if not panels:
        raise UsageError(f"{', '.join(str(p) for p in paths)}: no training metrics logged yet")
    ncol = 3
    nrow = (len(panels) + ncol - 1) // ncol
    fig, axes = plt.subplots(nrow, ncol, figsize=(4.2 * ncol, 2.9 * nrow), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key().get("color", ["C0"])
    for i, (label, series) in enumerate(panels):
        ax = axes[i // ncol][i % ncol]
        for j, (name, key, x, y) in enumerate(series):
            color = colors[j % len(colors)]
            episodic = key.startswith("train/")
            if episodic and y.size > 20:
                ax.plot(x, y, color=color, alpha=0.15, lw=0.6)
                ax.plot(x, _smooth(y, 20), color=color, lw=1.4, label=name)
            else:
                ax.plot(x, y, color=color, lw=1.2, label=name, marker="o" if y.size < 15 else None, ms=3)
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("env steps", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for i in range(len(panels), nrow * ncol):
        axes[i // ncol][i % ncol].axis("off")
    if len(runs) > 1:
        handles, labels = axes[0][0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="lower center", ncol=min(4, len(labels)), fontsize=8, frameon=False)
    fig.suptitle(title or "training diagnostics")
    fig.tight_layout(rect=(0, 0.04 if len(runs) > 1 else 0, 1, 0.96))
    return _save(plt, fig, out, dpi=100)

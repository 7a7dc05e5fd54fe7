"""Held-out dynamics grid: a sim-to-real proxy (``roborl eval CKPT --perturb GRID``).

A grid point fixes four perturbations (fixed values, not random ranges, so every point is
reproducible and the grid is *held out* from the training DR ranges):

* ``mass_scale``: multiplies every body's mass and inertia;
* ``friction_scale``: multiplies the sliding friction of every colliding geom;
* ``latency_ms``: action latency, converted to whole control steps ``round(latency / dt)``
  with the env's control period (Tan et al. 2018 model actuator latency the same way);
* ``obs_noise``: std of Gaussian noise added to every observation component.

Each point is evaluated with :func:`roborl.eval.episodes.run_episodes` on the *same*
episode seeds as the nominal eval (common random numbers), so differences between points
come from the dynamics, not from the initial states.

The point is applied by the env-glue's own DR wrapper (:mod:`roborl.envs.dr`), pinned with
degenerate ranges ``[x, x]`` and ``at_eval=True`` (see :func:`point_dr_config`), so the grid
perturbs exactly the quantities training-time DR randomizes: mass (inertia alike, subtree
masses recomputed), sliding friction of colliding geoms, latency queued with a "hold"
action, per-step Gaussian observation noise re-seeded by ``reset(seed)``.
"""
from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gymnasium as gym
import numpy as np

from roborl.errors import UsageError

if TYPE_CHECKING:  # pragma: no cover
    from roborl.envs.config import EnvConfig
    from roborl.envs.dr import DRConfig
    from roborl.learners import Policy

__all__ = ["PerturbPoint", "DEFAULT_GRID", "load_grid", "grid_points", "point_dr_config", "latency_steps",
           "make_perturbed_env", "evaluate_grid", "grid_summary", "format_grid"]

#: The default grid (same as configs/perturb_grid.yaml; used when that file is not at hand).
DEFAULT_GRID: dict[str, Any] = {"axes": {"mass_scale": [0.7, 1.0, 1.5], "friction_scale": [0.5, 1.0, 1.5],
                                         "latency_ms": [0, 40], "obs_noise": [0.0, 0.05]}}


@dataclass(frozen=True)
class PerturbPoint:
    """One grid point; the defaults are the nominal dynamics."""

    mass_scale: float = 1.0
    friction_scale: float = 1.0
    latency_ms: float = 0.0
    obs_noise: float = 0.0

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not np.isfinite(v):
                raise ValueError(f"{f.name} must be a finite number, got {v!r}")
        if self.mass_scale <= 0 or self.friction_scale < 0:
            raise ValueError("mass_scale must be > 0 and friction_scale >= 0")
        if self.latency_ms < 0 or self.obs_noise < 0:
            raise ValueError("latency_ms and obs_noise must be >= 0")

    @property
    def physics_nominal(self) -> bool:
        return self.mass_scale == 1.0 and self.friction_scale == 1.0

    def to_json(self) -> dict[str, float]:
        return {f.name: float(getattr(self, f.name)) for f in dataclasses.fields(self)}


_KEYS = tuple(f.name for f in dataclasses.fields(PerturbPoint))


def _point(d: Any, where: str) -> PerturbPoint:
    if not isinstance(d, dict):
        raise UsageError(f"{where}: expected a mapping of {', '.join(_KEYS)}, got {d!r}")
    bad = [k for k in d if k not in _KEYS]
    if bad:
        raise UsageError(f"{where}: unknown key {bad[0]!r} (expected {', '.join(_KEYS)})")
    try:
        return PerturbPoint(**{k: float(v) if isinstance(v, int) and not isinstance(v, bool) else v
                               for k, v in d.items()})
    except (ValueError, TypeError) as e:
        raise UsageError(f"{where}: {e}") from None


def grid_points(spec: dict[str, Any], source: str = "grid") -> list[PerturbPoint]:
    """Points of a grid spec: ``{"axes": {key: [values]}}`` (full product) or ``{"points": [{...}]}``."""
    if not isinstance(spec, dict) or not ({"axes", "points"} & set(spec)):
        raise UsageError(f"{source}: a perturbation grid needs 'axes' (product of value lists) or 'points' (a list)")
    extra = set(spec) - {"axes", "points"}
    if extra:
        raise UsageError(f"{source}: unknown top-level key {sorted(extra)[0]!r} (expected 'axes' or 'points')")
    pts: list[PerturbPoint] = []
    if "axes" in spec:
        axes = spec["axes"]
        if not isinstance(axes, dict) or not axes:
            raise UsageError(f"{source}: 'axes' must map {', '.join(_KEYS)} to lists of values")
        for k, vals in axes.items():
            if k not in _KEYS:
                raise UsageError(f"{source}: axes: unknown key {k!r} (expected {', '.join(_KEYS)})")
            if not isinstance(vals, list) or not vals:
                raise UsageError(f"{source}: axes.{k}: expected a non-empty list of numbers, got {vals!r}")
        names = list(axes)
        for combo in itertools.product(*(axes[k] for k in names)):
            pts.append(_point(dict(zip(names, combo)), f"{source}: axes"))
    if "points" in spec:
        if not isinstance(spec["points"], list) or not spec["points"]:
            raise UsageError(f"{source}: 'points' must be a non-empty list of mappings")
        for i, d in enumerate(spec["points"]):
            pts.append(_point(d, f"{source}: points[{i}]"))
    return pts


def load_grid(grid: str | Path | dict | list | None) -> list[PerturbPoint]:
    """A grid from a YAML path, a spec dict, a list of point dicts/PerturbPoints, or None (default grid)."""
    if grid is None:
        p = Path("configs/perturb_grid.yaml")
        if not p.exists():
            p = Path(__file__).resolve().parents[2] / "configs" / "perturb_grid.yaml"
        return load_grid(p) if p.exists() else grid_points(DEFAULT_GRID, "default grid")
    if isinstance(grid, (str, Path)):
        from roborl.config import read_yaml

        p = Path(grid)
        if not p.exists():
            raise UsageError(f"--perturb: grid file not found: {p}")
        return grid_points(read_yaml(p), str(p))
    if isinstance(grid, dict):
        return grid_points(grid)
    if isinstance(grid, list):
        return [g if isinstance(g, PerturbPoint) else _point(g, f"grid[{i}]") for i, g in enumerate(grid)]
    raise UsageError(f"--perturb: cannot read a grid from {type(grid).__name__}")


# ----------------------------------------------------------------------------- env

def point_dr_config(point: PerturbPoint, latency_steps: int) -> "DRConfig":
    """The DR config that pins ``point``: degenerate ranges ``[x, x]``, one shared scale per term,
    no damping/gain/action-noise/push changes, and ``at_eval`` so ``build_env(eval=True)`` applies it."""
    from roborl.envs.dr import DRConfig

    return DRConfig(enabled=True, at_eval=True, per_element=False,
                    mass_scale=(point.mass_scale, point.mass_scale),
                    friction_scale=(point.friction_scale, point.friction_scale),
                    damping_scale=(1.0, 1.0), gain_scale=(1.0, 1.0),
                    latency_steps=(int(latency_steps), int(latency_steps)),
                    obs_noise_std=(point.obs_noise, point.obs_noise),
                    action_noise_std=(0.0, 0.0), push_prob=0.0)


def latency_steps(latency_ms: float, dt: float | None, env_id: str = "env") -> int:
    """Whole control steps of an action latency: ``round(latency / dt)``."""
    if latency_ms <= 0:
        return 0
    if not dt:
        raise UsageError(f"--perturb: env {env_id!r} has no control dt, so latency_ms cannot be converted to steps")
    return int(round(latency_ms / 1000.0 / dt))


def make_perturbed_env(env_cfg: "EnvConfig", point: PerturbPoint, seed: int, dt: float | None = None, *,
                       obs_normalizer: dict[str, Any] | None = None) -> tuple[gym.Env, int]:
    """The eval env of ``env_cfg`` with ``point`` pinned through the DR wrapper (:func:`point_dr_config`).

    ``dt`` is the env's control period (read from a nominal eval env when None).
    Returns ``(env, latency_steps)``.
    """
    from roborl.eval.episodes import build_eval_env
    from roborl.eval.episodes import env_control_dt

    if dt is None and point.latency_ms > 0:
        probe = build_eval_env(env_cfg, seed)
        try:
            dt = env_control_dt(probe)
        finally:
            probe.close()
    steps = latency_steps(point.latency_ms, dt, env_cfg.id)
    cfg = dataclasses.replace(env_cfg, dr=point_dr_config(point, steps))
    try:
        env = build_eval_env(cfg, seed, obs_normalizer=obs_normalizer)
    except UsageError as e:
        raise UsageError(f"--perturb: {e}") from None
    return env, steps


# ----------------------------------------------------------------------------- evaluation

def evaluate_grid(policy: "Policy", env_cfg: "EnvConfig", grid: Any, episodes: int, seed: int, *,
                  deterministic: bool = True, progress: bool = False,
                  obs_normalizer: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Evaluate ``policy`` at every point of ``grid`` (see :func:`load_grid`), ``episodes`` episodes each
    on seeds ``seed .. seed+episodes-1``.

    Returns one dict per point: ``{"params": {mass_scale, friction_scale, latency_ms, obs_noise},
    "latency_steps", "episodes", "return_mean", "return_std", "success_rate", "success_ci95"}``.
    """
    from roborl.eval.episodes import run_episodes

    from roborl.eval.episodes import build_eval_env
    from roborl.eval.episodes import env_control_dt

    points = grid if isinstance(grid, list) and all(isinstance(p, PerturbPoint) for p in grid) else load_grid(grid)
    probe = build_eval_env(env_cfg, seed, obs_normalizer=obs_normalizer)
    try:
        dt = env_control_dt(probe)
    finally:
        probe.close()
    out: list[dict[str, Any]] = []
    it: Any = points
    if progress:
        from roborl.runs import progress as bar

        it = bar(points, total=len(points), desc="perturb")
    for p in it:
        env, steps = make_perturbed_env(env_cfg, p, seed, dt, obs_normalizer=obs_normalizer)
        try:
            res = run_episodes(policy, env_cfg, episodes, seed, deterministic=deterministic, env=env)
        finally:
            env.close()
        j = res.to_json()
        out.append({"params": p.to_json(), "latency_steps": steps, "episodes": j["episodes"],
                    "return_mean": j["return_mean"], "return_std": j["return_std"],
                    "success_rate": j["success_rate"], "success_ci95": j["success_ci95"]})
    return out


def grid_summary(entries: list[dict[str, Any]], nominal: dict[str, Any] | None = None) -> dict[str, Any]:
    """Mean and worst case over the grid of return and success (and, with ``nominal``, the
    fraction of nominal success kept: ``success_mean / nominal success_rate``)."""
    rets = np.array([e["return_mean"] for e in entries if e["return_mean"] is not None], dtype=np.float64)
    succ = np.array([e["success_rate"] for e in entries], dtype=np.float64)
    s: dict[str, Any] = {
        "points": len(entries),
        "return_mean": float(rets.mean()) if rets.size else None,
        "return_worst": float(rets.min()) if rets.size else None,
        "success_mean": float(succ.mean()) if succ.size else None,
        "success_worst": float(succ.min()) if succ.size else None,
    }
    if nominal is not None:
        s["return_nominal"] = nominal.get("return_mean")
        s["success_nominal"] = nominal.get("success_rate")
        ns = nominal.get("success_rate")
        s["success_retained"] = (s["success_mean"] / ns) if ns and s["success_mean"] is not None else None
    return s


def format_grid(entries: list[dict[str, Any]], summary: dict[str, Any]) -> str:
    """A readable table: one row per grid point, then mean and worst case."""
    head = f"{'mass':>6} {'fric':>6} {'lat ms':>7} {'noise':>6}  {'return':>18}  {'success':>7}"
    lines = ["perturbation grid (held-out dynamics)", head, "-" * len(head)]
    for e in entries:
        p = e["params"]
        r = "-" if e["return_mean"] is None else f"{e['return_mean']:.2f} +- {e['return_std'] or 0:.2f}"
        lines.append(f"{p['mass_scale']:>6.2f} {p['friction_scale']:>6.2f} {p['latency_ms']:>7.0f} {p['obs_noise']:>6.3f}"
                     f"  {r:>18}  {e['success_rate']:>7.2f}")
    lines.append("-" * len(head))

    def f(x: Any) -> str:
        return "-" if x is None else f"{x:.2f}"

    lines.append(f"{'mean over grid':<28}  {f(summary['return_mean']):>18}  {f(summary['success_mean']):>7}")
    lines.append(f"{'worst case':<28}  {f(summary['return_worst']):>18}  {f(summary['success_worst']):>7}")
    if summary.get("success_retained") is not None:
        lines.append(f"success kept vs nominal: {summary['success_retained']:.1%}")
    return "\n".join(lines)

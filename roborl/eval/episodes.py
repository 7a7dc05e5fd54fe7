"""Deterministic evaluation episodes, shared by the runners' periodic eval and ``roborl eval``.

Both call :func:`run_episodes` with the same ``(env_cfg, episodes, seed)``: episode ``i``
is reset with seed ``seed + i`` on an env built by
``roborl.envs.config.build_env(env_cfg, seed=seed, eval=True)`` (DR off), so the numbers a
runner logs during training and the numbers ``roborl eval`` prints for the same checkpoint
agree exactly (LeRobot #2051 is what happens when they don't).

Seed convention (runners and ``roborl eval`` both use it, so the defaults agree):
``seed = eval_seed(cfg.run.seed)`` and ``episodes = cfg.train.eval_episodes``. The offset
keeps eval episodes disjoint from the training env's reset seeds.

Success is read from ``info["is_success"]`` (gymnasium-robotics convention) or
``info["success"]``; an episode counts as a success when the flag is true at any step, and
its *time to success* (the cycle time, HIL-SERL's second metric) is the number of steps up
to and including the first successful step times the env's control period. Safety-layer
clip counts are read defensively from ``info["safety_episode"]`` (episode totals) or
summed from ``info["safety"]`` (per step), since envs without a safety layer have neither.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import numpy as np

from roborl.envs.success import step_success

if TYPE_CHECKING:  # pragma: no cover
    import gymnasium as gym

    from roborl.envs.config import EnvConfig
    from roborl.learners import Policy

__all__ = ["EvalResult", "wilson_interval", "run_episodes", "eval_seed", "EVAL_SEED_OFFSET", "env_control_dt",
           "safety_clip_count"]

_Z95 = 1.959964
EVAL_SEED_OFFSET = 10_000  # disjoint from the training envs' reset seeds (run.seed + episode)


def eval_seed(run_seed: int) -> int:
    """The base eval seed of a run with ``run.seed = run_seed`` (episode i resets with ``eval_seed + i``)."""
    return int(run_seed) + EVAL_SEED_OFFSET


@dataclass
class EvalResult:
    """Summary of ``episodes`` evaluation episodes.

    ``returns``/``successes``/``lengths``/``safety_clips``/``times_to_success`` are per-episode
    lists (length ``episodes``; ``times_to_success[i]`` is None for a failed episode).
    """

    episodes: int
    success_rate: float
    success_ci95: tuple[float, float]
    return_mean: float
    return_std: float
    length_mean: float
    time_to_success_mean: float | None  # seconds: steps-to-first-success * control dt
    safety_clips_mean: float
    returns: list[float]
    successes: list[bool]
    lengths: list[int] = field(default_factory=list)
    safety_clips: list[float] = field(default_factory=list)
    times_to_success: list[float | None] = field(default_factory=list)

    SUMMARY_KEYS = ("episodes", "success_rate", "success_ci95", "return_mean", "return_std", "length_mean",
                    "time_to_success_mean", "safety_clips_mean")

    def to_json(self, per_episode: bool = False) -> dict[str, Any]:
        """The summary keys (``success_ci95`` as ``[low, high]``); JSON-safe.

        ``per_episode=True`` adds the per-episode lists.
        """
        out: dict[str, Any] = {
            "episodes": int(self.episodes),
            "success_rate": float(self.success_rate),
            "success_ci95": [float(self.success_ci95[0]), float(self.success_ci95[1])],
            "return_mean": _finite(self.return_mean),
            "return_std": _finite(self.return_std),
            "length_mean": _finite(self.length_mean),
            "time_to_success_mean": None if self.time_to_success_mean is None else _finite(self.time_to_success_mean),
            "safety_clips_mean": _finite(self.safety_clips_mean),
        }
        if per_episode:
            out["returns"] = [_finite(r) for r in self.returns]
            out["successes"] = [bool(s) for s in self.successes]
            out["lengths"] = [int(n) for n in self.lengths]
            out["safety_clips"] = [_finite(c) for c in self.safety_clips]
            out["times_to_success"] = [None if t is None else _finite(t) for t in self.times_to_success]
        return out

    @classmethod
    def from_episodes(cls, returns: list[float], successes: list[bool], lengths: list[int],
                      safety_clips: list[float], times_to_success: list[float | None]) -> "EvalResult":
        n = len(returns)
        r = np.asarray(returns, dtype=np.float64)
        k = int(sum(bool(s) for s in successes))
        tts = [t for t in times_to_success if t is not None]
        return cls(
            episodes=n,
            success_rate=k / n if n else 0.0,
            success_ci95=wilson_interval(k, n),
            return_mean=float(r.mean()) if n else float("nan"),
            return_std=float(r.std()) if n else float("nan"),  # population std over the episodes
            length_mean=float(np.mean(lengths)) if n else float("nan"),
            time_to_success_mean=float(np.mean(tts)) if tts else None,
            safety_clips_mean=float(np.mean(safety_clips)) if n else 0.0,
            returns=[float(x) for x in returns],
            successes=[bool(s) for s in successes],
            lengths=[int(x) for x in lengths],
            safety_clips=[float(c) for c in safety_clips],
            times_to_success=list(times_to_success),
        )


def _finite(x: float) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


def wilson_interval(successes: int, n: int, z: float = _Z95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (Wilson 1927).

    Better than the normal approximation at small n and near 0/1, which is exactly the
    regime of robot evals (10-20 episodes). ``n == 0`` gives the uninformative ``(0, 1)``.
    Example: 8/10 -> (0.4902, 0.9433).
    """
    if n <= 0:
        return (0.0, 1.0)
    if not 0 <= successes <= n:
        raise ValueError(f"successes must be in [0, n]; got {successes}/{n}")
    p = successes / n
    z2 = z * z
    denom = 1.0 + z2 / n
    centre = (p + z2 / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denom
    lo = 0.0 if successes == 0 else max(0.0, centre - half)  # exact at the ends (rounding gives 0.9999...)
    hi = 1.0 if successes == n else min(1.0, centre + half)
    return (lo, hi)


# ----------------------------------------------------------------------------- info readers

def _count(v: Any) -> float | None:
    """A clip count out of a safety record: a number, a bool, or a dict with a count field."""
    if v is None:
        return None
    if isinstance(v, dict):
        # An explicit total wins; else a dict of per-event counts (the SafetyLayer's
        # {"nonfinite", "clipped", "workspace", "motion", "joint_vel", "outside"}) is summed,
        # as the SAC runner's train/safety_clips does.
        for key in ("clips", "clip_count", "n_clips", "total"):
            if key in v:
                return _count(v[key])
        # A dict of per-reason counts: sum the numeric ones.
        nums = [_count(x) for x in v.values() if isinstance(x, (int, float, np.integer, np.floating, bool, np.bool_))]
        nums = [x for x in nums if x is not None]
        return float(sum(nums)) if nums else None
    try:
        a = np.asarray(v, dtype=np.float64)
    except (TypeError, ValueError):
        return None
    return float(a.sum()) if a.size else 0.0


def safety_clip_count(step_infos_total: float, final_info: dict[str, Any]) -> float:
    """Episode clip count: ``info["safety_episode"]`` at the last step when present, else the
    sum of the per-step ``info["safety"]`` counts (``step_infos_total``)."""
    ep = _count(final_info.get("safety_episode")) if isinstance(final_info, dict) else None
    return float(ep) if ep is not None else float(step_infos_total)


def env_control_dt(env: Any) -> float | None:
    """Seconds per env step: ``unwrapped.control_dt``, else ``unwrapped.dt``/``env.dt``, else 1/render_fps."""
    candidates = []
    for obj in (getattr(env, "unwrapped", None), env):
        if obj is None:
            continue
        for name in ("control_dt", "dt"):
            try:
                candidates.append(getattr(obj, name))
            except Exception:
                continue
    for c in candidates:
        try:
            c = float(c)
        except (TypeError, ValueError):
            continue
        if math.isfinite(c) and c > 0:
            return c
    fps = (getattr(env, "metadata", None) or {}).get("render_fps")
    if fps:
        return 1.0 / float(fps)
    return None


# ----------------------------------------------------------------------------- episodes

class _VideoWriter:
    """imageio + ffmpeg writer; frames are [H, W, 3] uint8 from ``env.render()``."""

    def __init__(self, path: str, fps: float) -> None:
        import imageio.v2 as imageio

        from roborl.errors import UsageError

        Path(path).parent.mkdir(parents=True, exist_ok=True)
        try:
            # macro_block_size=1: MuJoCo render sizes are not always multiples of 16.
            self._w = imageio.get_writer(path, fps=max(1.0, float(fps)), codec="libx264", quality=7,
                                         macro_block_size=1, pixelformat="yuv420p")
        except Exception as e:
            raise UsageError(f"--video {path}: cannot open a video writer ({type(e).__name__}: {e})".splitlines()[0]) from None
        self.frames = 0
        self._shape: tuple[int, ...] | None = None

    def add(self, frame: Any) -> None:
        if frame is None:
            return
        f = np.asarray(frame)
        if f.ndim != 3:
            return
        if f.dtype != np.uint8:
            f = np.clip(f * (255 if f.max() <= 1.0 else 1), 0, 255).astype(np.uint8)
        f = f[..., :3]
        # yuv420p needs even sizes.
        f = f[: f.shape[0] - f.shape[0] % 2, : f.shape[1] - f.shape[1] % 2]
        if self._shape is None:
            self._shape = f.shape
        self._w.append_data(np.ascontiguousarray(f))
        self.frames += 1

    def close(self) -> None:
        self._w.close()


class _RngGuard:
    """Seed torch/numpy global RNGs for the eval and restore them afterwards.

    Makes stochastic eval reproducible for a seed without perturbing the training RNG
    stream of a runner that evaluates in the middle of training.
    """

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def __enter__(self) -> "_RngGuard":
        import torch

        self._np = np.random.get_state()
        self._torch = torch.get_rng_state()
        np.random.seed(self.seed % (2**32))
        torch.manual_seed(self.seed)
        return self

    def __exit__(self, *exc: Any) -> None:
        import torch

        np.random.set_state(self._np)
        torch.set_rng_state(self._torch)


def build_eval_env(env_cfg: Any, seed: int, video: bool = False, obs_normalizer: dict[str, Any] | None = None):
    """``build_env(env_cfg, seed=seed, eval=True)`` (rgb_array rendering for --video), with the
    checkpoint's frozen observation statistics loaded when the stack normalizes; one-line errors."""
    from roborl.envs.config import build_env
    from roborl.errors import ConfigError, UsageError

    try:
        env = build_env(env_cfg, seed=seed, eval=True, render_mode="rgb_array" if video else None)
    except (UsageError, ConfigError):
        raise
    except Exception as e:
        msg = str(e).splitlines()[0] if str(e) else ""
        raise UsageError(f"env {env_cfg.id!r}: cannot be built ({type(e).__name__}: {msg[:200]})") from None
    if obs_normalizer is not None or getattr(env_cfg, "normalize_obs", False):
        from roborl.envs.wrappers import load_obs_normalizer_state

        try:
            load_obs_normalizer_state(env, obs_normalizer)
        except BaseException:
            env.close()
            raise
    return env



def run_episodes(policy: "Policy", env_cfg: "EnvConfig", episodes: int, seed: int, *, deterministic: bool = True,
                 env: "gym.Env | None" = None, video_path: str | None = None,
                 progress: bool = False, obs_normalizer: dict[str, Any] | None = None) -> EvalResult:
    """Run ``episodes`` evaluation episodes of ``policy``; episode ``i`` resets with ``seed + i``.

    Args:
        policy: maps obs ``[1, obs_dim]`` float32 to actions ``[1, act_dim]`` in [-1, 1].
        env_cfg: how to build the env (``build_env(env_cfg, seed=seed, eval=True)``, DR off).
        env: an already built env to use instead (not closed here); it must be built as above
            for the numbers to match ``roborl eval``.
        video_path: record every episode (reset frame + one frame per step) to this mp4; the
            env is built with ``render_mode="rgb_array"`` (needs an env built here, or an
            ``env`` created with that render mode).
        progress: show a progress bar (off when stderr is not a TTY).
        obs_normalizer: statistics for the env stack's ``NormalizeObservation`` (runs with
            ``env.normalize_obs``), loaded into an env built here; ignored when ``env`` is given.
    """
    from roborl.errors import UsageError

    if episodes <= 0:
        raise UsageError(f"--episodes must be positive, got {episodes}")
    own_env = env is None
    if own_env:
        env = build_eval_env(env_cfg, seed, video=bool(video_path), obs_normalizer=obs_normalizer)
    assert env is not None
    writer: _VideoWriter | None = None
    returns: list[float] = []
    successes: list[bool] = []
    lengths: list[int] = []
    clips: list[float] = []
    tts: list[float | None] = []
    dt = env_control_dt(env)
    try:
        if video_path:
            fps = (getattr(env, "metadata", None) or {}).get("render_fps") or (1.0 / dt if dt else 30.0)
            writer = _VideoWriter(video_path, fps)
        with _RngGuard(seed):
            for i in _episode_iter(episodes, progress):
                ret, succ, length, clip, t = _one_episode(policy, env, seed + i, deterministic, writer, dt)
                returns.append(ret)
                successes.append(succ)
                lengths.append(length)
                clips.append(clip)
                tts.append(t)
    finally:
        if writer is not None:
            writer.close()
        if own_env:
            env.close()
    return EvalResult.from_episodes(returns, successes, lengths, clips, tts)


def _episode_iter(episodes: int, progress: bool) -> Iterator[int]:
    if progress:
        from roborl.runs import progress as bar

        yield from bar(range(episodes), total=episodes, desc="eval")
    else:
        yield from range(episodes)


def _one_episode(policy: "Policy", env: Any, seed: int, deterministic: bool, writer: _VideoWriter | None,
                 dt: float | None) -> tuple[float, bool, int, float, float | None]:
    obs, info = env.reset(seed=int(seed))
    if writer is not None:
        writer.add(env.render())
    total = 0.0
    steps = 0
    success = False
    t_success: float | None = None
    step_clips = 0.0
    while True:
        # Dict observations (cameras) go to the policy as they are; it adds the batch dim per leaf.
        o = obs if isinstance(obs, dict) else np.asarray(obs, dtype=np.float32)[None]
        a = np.asarray(policy.act(o, deterministic=deterministic))
        a = a.reshape(a.shape[1:]) if a.ndim >= 2 and a.shape[0] == 1 else a
        if a.ndim == 1 and a.shape[0] == 1 and a.dtype.kind in "iu":
            a = a.reshape(())  # a discrete policy's [1] action index -> the scalar gymnasium Discrete expects
        obs, reward, terminated, truncated, info = env.step(a)
        steps += 1
        total += float(reward)
        if writer is not None:
            writer.add(env.render())
        if isinstance(info, dict):
            c = _count(info.get("safety"))
            step_clips += c or 0.0
            if not success and step_success(info):
                success = True
                t_success = steps * dt if dt else float(steps)
        if terminated or truncated:
            break
    clip = safety_clip_count(step_clips, info if isinstance(info, dict) else {})
    return total, success, steps, clip, t_success

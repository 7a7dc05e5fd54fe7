"""Action scaling and observation normalization (issue 2 §4 "Scaling and normalization").

* :class:`RescaleAction`: the agent acts in ``[-1, 1]^d``; the env receives the affine
  image in its own ``Box(low, high)``. ``info["executed_action"]`` is reported in the
  agent's ``[-1, 1]`` space, so learners store what was executed.
* :class:`RunningMeanStd` and :class:`NormalizeObservation`: running mean/variance
  (Chan et al. 1979 parallel update), ``(obs - mean) / sqrt(var + eps)`` clipped to
  ``[-clip, clip]``; statistics freeze at eval and round-trip through
  ``state_dict()``/``load_state_dict()`` (numpy arrays, saved by
  :mod:`roborl.checkpoint`). Dict observations normalize only their float fields
  (images and integer fields pass through).
"""
from __future__ import annotations

from typing import Any, TypeVar

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from roborl.errors import UsageError

__all__ = ["RescaleAction", "RunningMeanStd", "NormalizeObservation", "find_wrapper",
           "obs_normalizer_state", "load_obs_normalizer_state"]

W = TypeVar("W", bound=gym.Wrapper)


def _clip(x: np.ndarray, lo: Any, hi: Any) -> np.ndarray:
    """In-place clip of a float array; ``np.minimum``/``np.maximum`` skip np.clip's Python
    dispatch, which costs more than the arithmetic on these small per-step vectors."""
    np.maximum(x, lo, out=x)
    np.minimum(x, hi, out=x)
    return x


def find_wrapper(env: gym.Env, cls: type[W]) -> W | None:
    """The outermost wrapper of type ``cls`` in ``env``'s wrapper chain, or None."""
    e: Any = env
    while True:
        if isinstance(e, cls):
            return e
        if not isinstance(e, gym.Wrapper):
            return None
        e = e.env


# ----------------------------------------------------------------------------- actions

class RescaleAction(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """Expose ``Box(-1, 1, shape)`` and map actions affinely onto the env's ``Box(low, high)``.

    Agent actions outside ``[-1, 1]`` are clipped first (the env would otherwise see
    actions outside its bounds). ``info["executed_action"]``: if the inner env reports
    one (the safety layer does, in its own action space) it is mapped back into
    ``[-1, 1]``; otherwise the clipped agent action is reported.
    """

    def __init__(self, env: gym.Env) -> None:
        # RecordConstructorArgs lets env.spec re-make the whole stack (gymnasium's checker does).
        gym.utils.RecordConstructorArgs.__init__(self)
        gym.Wrapper.__init__(self, env)
        space = env.action_space
        if not isinstance(space, spaces.Box):
            raise UsageError(f"env.scale_actions: action space {space} is not a Box")
        low = np.asarray(space.low, dtype=np.float64)
        high = np.asarray(space.high, dtype=np.float64)
        if not (np.all(np.isfinite(low)) and np.all(np.isfinite(high))):
            raise UsageError(f"env.scale_actions: action space {space} has infinite bounds; set env.scale_actions=false")
        self._low, self._high = low, high
        self._half = (high - low) / 2.0
        self._mid = (high + low) / 2.0
        self._dtype = space.dtype
        # Already [-1, 1] (our arm tasks, most dm_control tasks): skip the arithmetic.
        self._identity = bool(np.all(low == -1.0) and np.all(high == 1.0))
        self.action_space = spaces.Box(-1.0, 1.0, shape=space.shape, dtype=np.float32)

    def action(self, action: np.ndarray) -> np.ndarray:
        """``[-1, 1]^d`` -> env space (clipped into its bounds)."""
        a = np.clip(np.asarray(action, dtype=np.float64), -1.0, 1.0)
        if self._identity:
            return a.astype(self._dtype, copy=False)
        return np.clip(self._mid + self._half * a, self._low, self._high).astype(self._dtype, copy=False)

    def reverse_action(self, action: np.ndarray) -> np.ndarray:
        """Env space -> ``[-1, 1]^d`` (float32)."""
        if self._identity:
            return np.asarray(action, dtype=np.float32)
        a = np.asarray(action, dtype=np.float64)
        # A zero-width dimension (low == high) maps to 0.
        with np.errstate(divide="ignore", invalid="ignore"):
            out = np.where(self._half > 0, (a - self._mid) / np.where(self._half > 0, self._half, 1.0), 0.0)
        return out.astype(np.float32)

    def step(self, action: np.ndarray) -> tuple[Any, float, bool, bool, dict]:
        if self._identity:  # hot path for [-1, 1] envs: one copy, two ufuncs
            a = _clip(np.array(action, dtype=self._dtype), -1.0, 1.0)  # a copy: never edit the caller's array
            inner = a
        else:
            a = _clip(np.array(action, dtype=np.float64), -1.0, 1.0)
            inner = _clip(self._mid + self._half * a, self._low, self._high).astype(self._dtype, copy=False)
        obs, reward, terminated, truncated, info = self.env.step(inner)
        executed = info.get("executed_action")
        info["executed_action"] = (np.array(a, dtype=np.float32) if executed is None or executed is inner
                                   else self.reverse_action(executed))
        return obs, reward, terminated, truncated, info


# ----------------------------------------------------------------------------- normalization

class RunningMeanStd:
    """Running mean and (population) variance of vectors of shape ``shape``.

    ``update(x)`` takes a batch ``(B, *shape)``; batches merge with the parallel formula
    of Chan, Golub & LeVeque (1979), so the result equals the statistics of all samples
    seen (up to float64 rounding). ``count`` starts at ``epsilon`` so the first division
    is safe.
    """

    def __init__(self, shape: tuple[int, ...] = (), epsilon: float = 1e-4) -> None:
        self.mean = np.zeros(shape, dtype=np.float64)
        self.var = np.ones(shape, dtype=np.float64)
        self.count = float(epsilon)

    def update(self, x: np.ndarray) -> None:
        """Fold in a batch ``x`` of shape ``(B, *shape)``."""
        x = np.asarray(x, dtype=np.float64)
        if x.shape[0] == 1:
            self.update_one(x[0])
            return
        self.update_from_moments(x.mean(axis=0), x.var(axis=0), x.shape[0])

    def update_one(self, x: np.ndarray) -> None:
        """Fold in one sample ``x`` of shape ``shape`` (Welford's update; the per-step hot path)."""
        n = self.count + 1.0
        step = (x - self.mean) / n
        self.mean += step
        # population variance: var_n = (var_{n-1} * (n - 1) + delta * (x - mean_n)) / n
        self.var *= self.count / n
        self.var += step * (x - self.mean)
        self.count = n

    def update_from_moments(self, batch_mean: np.ndarray, batch_var: np.ndarray, batch_count: float) -> None:
        delta = batch_mean - self.mean
        total = self.count + batch_count
        self.mean = self.mean + delta * (batch_count / total)
        m2 = self.var * self.count + batch_var * batch_count + delta ** 2 * (self.count * batch_count / total)
        self.var = m2 / total
        self.count = float(total)

    def normalize(self, x: np.ndarray, clip: float | None = None, eps: float = 1e-8) -> np.ndarray:
        y = np.subtract(x, self.mean, dtype=np.float64)
        y /= np.sqrt(self.var + eps)
        if clip is not None:
            _clip(y, -clip, clip)
        return y

    def state_dict(self) -> dict[str, Any]:
        return {"mean": self.mean.copy(), "var": self.var.copy(), "count": np.array([self.count], dtype=np.float64)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        mean = np.asarray(state["mean"], dtype=np.float64)
        var = np.asarray(state["var"], dtype=np.float64)
        if mean.shape != self.mean.shape or var.shape != self.var.shape:
            raise UsageError(f"obs normalizer: checkpoint statistics have shape {mean.shape}, "
                             f"the env's observation has {self.mean.shape}")
        self.mean, self.var, self.count = mean.copy(), var.copy(), float(np.asarray(state["count"]).reshape(-1)[0])


def _is_float_box(space: gym.Space) -> bool:
    return isinstance(space, spaces.Box) and np.issubdtype(space.dtype, np.floating)


class NormalizeObservation(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """Normalize float observations with running statistics (see the module docstring).

    Box observations: one :class:`RunningMeanStd` under the key ``""``. Dict observations:
    one per float Box field, keyed by field name; other fields pass through unchanged.
    The statistics update on every ``reset``/``step`` unless frozen (``freeze()``, used at
    eval so evaluation does not shift the statistics the policy was trained with).
    Normalized fields become ``Box(-clip, clip)`` float32.
    """

    def __init__(self, env: gym.Env, clip: float | None = 10.0, epsilon: float = 1e-8, frozen: bool = False) -> None:
        gym.utils.RecordConstructorArgs.__init__(self, clip=clip, epsilon=epsilon, frozen=frozen)
        gym.Wrapper.__init__(self, env)
        space = env.observation_space
        self.clip = None if clip is None else float(clip)
        self.epsilon = float(epsilon)
        self.frozen = bool(frozen)
        bound = np.inf if self.clip is None else self.clip

        def norm_space(s: spaces.Box) -> spaces.Box:
            return spaces.Box(-bound, bound, shape=s.shape, dtype=np.float32)

        if _is_float_box(space):
            self.rms: dict[str, RunningMeanStd] = {"": RunningMeanStd(space.shape)}
            self.observation_space = norm_space(space)
        elif isinstance(space, spaces.Dict):
            self.rms = {k: RunningMeanStd(s.shape) for k, s in space.spaces.items() if _is_float_box(s)}
            if not self.rms:
                raise UsageError(f"env.normalize_obs: observation space {space} has no float fields to normalize")
            self.observation_space = spaces.Dict(
                {k: (norm_space(s) if k in self.rms else s) for k, s in space.spaces.items()})
        else:
            raise UsageError(f"env.normalize_obs: cannot normalize observation space {space}")

    def freeze(self) -> None:
        """Stop updating the statistics (eval)."""
        self.frozen = True

    def unfreeze(self) -> None:
        self.frozen = False

    def normalize(self, obs: Any) -> Any:
        """Normalize ``obs`` with the current statistics (no update)."""
        if "" in self.rms:
            return self.rms[""].normalize(obs, self.clip, self.epsilon).astype(np.float32)
        out = dict(obs)
        for k, rms in self.rms.items():
            out[k] = rms.normalize(obs[k], self.clip, self.epsilon).astype(np.float32)
        return out

    def _observe(self, obs: Any) -> Any:
        if self.frozen:
            return self.normalize(obs)
        if "" in self.rms:
            return self._update_normalize(self.rms[""], obs)
        out = dict(obs)
        for k, rms in self.rms.items():
            out[k] = self._update_normalize(rms, obs[k])
        return out

    def _update_normalize(self, rms: RunningMeanStd, x: Any) -> np.ndarray:
        """Welford update with ``x``, then ``x`` normalized by the new statistics, fused so the
        per-step hot path reuses ``x - mean_new`` (same result as update_one + normalize)."""
        x = np.asarray(x, dtype=np.float64)
        n = rms.count + 1.0
        step = x - rms.mean
        step /= n
        rms.mean += step
        centered = x - rms.mean
        rms.var *= rms.count / n
        rms.var += step * centered
        rms.count = n
        centered /= np.sqrt(rms.var + self.epsilon)
        if self.clip is not None:
            _clip(centered, -self.clip, self.clip)
        return centered.astype(np.float32)

    def reset(self, **kwargs: Any) -> tuple[Any, dict]:
        obs, info = self.env.reset(**kwargs)
        return self._observe(obs), info

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        return self._observe(obs), reward, terminated, truncated, info

    def state_dict(self) -> dict[str, Any]:
        """``{field: {"mean", "var", "count"}}`` (numpy arrays; field ``""`` for Box obs)."""
        return {k: rms.state_dict() for k, rms in self.rms.items()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        missing = set(self.rms) - set(state)
        if missing:
            raise UsageError(f"obs normalizer: checkpoint has no statistics for field(s) {sorted(missing)}")
        for k, rms in self.rms.items():
            rms.load_state_dict(state[k])


def obs_normalizer_state(env: gym.Env) -> dict[str, Any] | None:
    """The :class:`NormalizeObservation` statistics of ``env`` (for a checkpoint), or None if it has none."""
    w = find_wrapper(env, NormalizeObservation)
    return None if w is None else w.state_dict()


def load_obs_normalizer_state(env: gym.Env, state: dict[str, Any] | None) -> None:
    """Load checkpointed statistics into ``env``'s normalizer (no-op when both have none).

    Raises UsageError when exactly one side has a normalizer, so a checkpoint trained with
    ``env.normalize_obs`` is never evaluated on raw observations (or vice versa).
    """
    w = find_wrapper(env, NormalizeObservation)
    if w is None and state is None:
        return
    if w is None:
        raise UsageError("env.normalize_obs: the checkpoint has observation statistics but the env does not normalize")
    if state is None:
        raise UsageError("env.normalize_obs: the env normalizes observations but the checkpoint has no statistics")
    w.load_state_dict(state)

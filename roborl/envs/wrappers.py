"""Action scaling and observation normalization (one concern per wrapper, as gymnasium's).

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

from typing import Any, SupportsFloat, TypeVar

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from roborl.envs.success import SUCCESS_KEYS, step_success
from roborl.errors import UsageError

__all__ = ["RescaleAction", "skip_unread_info", "EXECUTION_INFO_KEYS", "INFO_BLIND_WRAPPERS", "RunningMeanStd",
           "NormalizeObservation", "find_wrapper", "obs_normalizer_state", "load_obs_normalizer_state",
           "HistoryObservation", "TerminateOnSuccess"]

W = TypeVar("W", bound=gym.Wrapper)
_F32 = np.dtype(np.float32)


try:  # the ufunc behind np.clip (numpy >= 2 keeps it in numpy._core)
    from numpy._core.umath import clip as _clip_ufunc
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core.umath import clip as _clip_ufunc  # type: ignore[no-redef]


def _clip_minmax(x: np.ndarray, lo: Any, hi: Any, out: np.ndarray | None = None) -> np.ndarray:
    """``minimum(maximum(x, lo), hi)`` into ``out`` (a new array when None). ``np.minimum`` /
    ``np.maximum`` skip np.clip's Python dispatch, which costs more than the arithmetic on
    these small per-step vectors."""
    out = np.maximum(x, lo, out=out)
    return np.minimum(out, hi, out=out)


def _clip(x: np.ndarray, lo: Any, hi: Any) -> np.ndarray:
    """In-place clip of a float array (see _clip_minmax)."""
    return _clip_minmax(x, lo, hi, x)


def clip_function(lo: Any, hi: Any) -> Any:
    """``f(x, lo, hi, out)``: the fastest exact ``minimum(maximum(x, lo), hi)`` for these bounds.

    The clip ufunc (what np.clip calls after ~1.5 us of Python dispatch) does it in one call
    (~0.25 us on a 13-vector, against ~0.75 us for maximum + minimum, whose positional ``out``
    numpy 2.4 deprecates). It is bit-identical to maximum + minimum (NaN and -0.0 values
    included) except for the sign of a zero result when a bound is +-0.0, so bounds that
    contain a zero keep maximum + minimum (checked in test_env_fastpaths.py).
    """
    lo_a, hi_a = np.asarray(lo), np.asarray(hi)
    if np.all(lo_a != 0) and np.all(hi_a != 0):
        return _clip_ufunc
    return _clip_minmax


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
    ``[-1, 1]``; otherwise the clipped agent action is reported. ``step_clipped`` is the
    entry for callers whose action is already clipped (DomainRandomization's noisy action).
    ``report_info = False`` (set by :func:`skip_unread_info` for a caller that drops
    ``executed_action`` unread) skips building that entry; the env sees the same action.
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
        self._neg1 = np.array(-1.0, dtype=self._dtype)
        self._pos1 = np.array(1.0, dtype=self._dtype)
        self.action_space = spaces.Box(-1.0, 1.0, shape=space.shape, dtype=np.float32)
        #: Write ``info["executed_action"]`` each step; False only for a caller that drops it unread.
        self.report_info = True

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

    def step_clipped(self, action: np.ndarray) -> tuple[Any, float, bool, bool, dict]:
        """``step`` for an action already clipped into ``[-1, 1]`` (NaN allowed: clipping keeps it),
        which the inner env may keep (pass a fresh array).

        :class:`~roborl.envs.dr.DomainRandomization` calls this with its noisy action, which it
        has just clipped into this action space; ``step`` would only clip and copy it again.
        Same result as ``step(action)``, which handles every case but an identity map with
        an ndarray of the inner env's dtype.
        """
        if not self._identity or type(action) is not np.ndarray or action.dtype is not self._dtype or not action.ndim:
            return self.step(action)
        return self._identity_step(action)

    def _identity_step(self, a: np.ndarray) -> tuple[Any, float, bool, bool, dict]:
        """Step the inner env with ``a`` (already in [-1, 1] = the inner space) and make
        ``info["executed_action"]`` a float32 array of its own."""
        if not self.report_info:
            return self.env.step(a)
        out = self.env.step(a)
        info = out[4]
        executed = info.get("executed_action")
        if executed is None or executed is a:
            info["executed_action"] = np.array(a, dtype=np.float32)
        elif type(executed) is not np.ndarray or executed.dtype is not _F32:
            info["executed_action"] = np.asarray(executed, dtype=np.float32)
        # else: a float32 array in [-1, 1] already; reverse_action would return it as is
        return out  # the inner 5-tuple itself: only info (a dict) was edited

    def step(self, action: np.ndarray) -> tuple[Any, float, bool, bool, dict]:
        if self._identity:  # hot path for [-1, 1] envs: one clip ufunc, which makes the copy
            if type(action) is np.ndarray and action.dtype is self._dtype and action.ndim:
                # == clip(array(action), -1, 1): one clip-ufunc call with the bounds as 0-d arrays
                # of the same dtype (numpy takes those ~40 % faster than Python floats); a new array.
                a = _clip_ufunc(action, self._neg1, self._pos1)
            else:
                a = _clip(np.array(action, dtype=self._dtype), -1.0, 1.0)  # a copy: never edit the caller's array
            return self._identity_step(a)
        else:
            a = _clip(np.array(action, dtype=np.float64), -1.0, 1.0)
            inner = _clip(self._mid + self._half * a, self._low, self._high).astype(self._dtype, copy=False)
        if not self.report_info:
            return self.env.step(inner)
        obs, reward, terminated, truncated, info = self.env.step(inner)
        executed = info.get("executed_action")
        info["executed_action"] = (np.array(a, dtype=np.float32) if executed is None or executed is inner
                                   else self.reverse_action(executed))
        return obs, reward, terminated, truncated, info


#: Info entries the action wrappers build each step for callers that store what was executed
#: (the off-policy runner and ``env_step`` read ``executed_action``; eval reads the safety counts).
EXECUTION_INFO_KEYS: tuple[str, ...] = ("executed_action", "safety", "safety_episode")


def skip_unread_info(env: gym.Env, keep: Any) -> list[gym.Wrapper]:
    """Ask the wrappers of ``env`` not to build the :data:`EXECUTION_INFO_KEYS` entries that a caller
    keeping only the info keys ``keep`` drops unread; returns the wrappers switched (``report_info = False``).

    Why: on the on-policy rollout's hot path every env step built an ``executed_action`` array and
    two safety dicts that the runner's info filter then threw away (BENCHMARKS.md, PPO rollout:
    the env stack's wrapper overhead). Only a wrapper whose entries nobody inside the stack reads either may skip
    them, so the walk goes down from the top through wrappers that read none of these keys (the
    types in :data:`INFO_BLIND_WRAPPERS`, and the reporters themselves) and stops at the first
    other one (e.g. DomainRandomization, which reads ``executed_action``; DiscretizeActions).
    Nothing changes when ``keep`` holds any of the keys. The actions, observations, rewards,
    terminations, truncations and all other info entries are the same as with every wrapper
    reporting (tests/envs/test_lean_info.py steps both stacks side by side).
    """
    if any(k in keep for k in EXECUTION_INFO_KEYS):
        return []
    switched: list[gym.Wrapper] = []
    e: Any = env
    while isinstance(e, gym.Wrapper):
        if hasattr(e, "report_info"):
            e.report_info = False
            switched.append(e)
        elif type(e) not in INFO_BLIND_WRAPPERS:
            break
        e = e.env
    return switched


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
        # shape -> float64 buffers (x, step, centered) and the per-step scalars n and count / n
        # as 0-d arrays, reused by every update
        self._bufs: dict[tuple[int, ...], tuple[np.ndarray, ...]] = {}
        self._eps0 = np.array(self.epsilon)
        self._lo0 = np.array(-np.inf if self.clip is None else -self.clip)
        self._hi0 = np.array(np.inf if self.clip is None else self.clip)
        self._box_rms: RunningMeanStd | None = self.rms[""] if "" in self.rms else None

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
        per-step hot path reuses ``x - mean_new`` (same result as update_one + normalize).

        The float operations are those of update_one + normalize, in the same order, so the
        result is bit-identical to them. Speed: every intermediate goes into
        preallocated float64 buffers, passed as the ufunc's positional ``out`` (the ``out=``
        keyword costs ~50 ns more per call), scalars are passed as 0-d float64 arrays, which
        numpy handles ~40 % faster than Python floats, and the clip is one clip-ufunc call;
        only the returned float32 array is new: 11 ufunc calls plus copyto and astype, ~0.2 us each.
        """
        mean, var, count = rms.mean, rms.var, rms.count
        bufs = self._bufs.get(mean.shape)
        if bufs is None:
            bufs = self._bufs[mean.shape] = (np.empty(mean.shape), np.empty(mean.shape), np.empty(mean.shape),
                                             np.zeros(()), np.zeros(()))
        x64, step, centered, k0, k1 = bufs
        n = count + 1.0
        # float32 x: one copy into float64 first, since a mixed-dtype ufunc call costs ~2x.
        np.copyto(x64, x)
        np.subtract(x64, mean, step)
        k0[()] = n
        np.divide(step, k0, step)
        np.add(mean, step, mean)
        np.subtract(x64, mean, centered)
        k1[()] = count / n
        np.multiply(var, k1, var)
        rms.count = n
        np.multiply(step, centered, step)
        np.add(var, step, var)
        np.add(var, self._eps0, step)
        np.sqrt(step, step)
        np.divide(centered, step, centered)
        if self.clip is not None:
            _clip_ufunc(centered, self._lo0, self._hi0, centered)  # +-clip: nonzero bounds, exact
        return centered.astype(np.float32)

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        if not self.frozen and self._box_rms is not None:  # hot path: Box observations, training
            return self._update_normalize(self._box_rms, obs), reward, terminated, truncated, info
        return self._observe(obs), reward, terminated, truncated, info

    def reset(self, **kwargs: Any) -> tuple[Any, dict]:
        obs, info = self.env.reset(**kwargs)
        return self._observe(obs), info

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


# ----------------------------------------------------------------------------- history

class HistoryObservation(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """Append past observations and commanded actions to a flat Box observation
    (config ``env.obs_history`` and ``env.obs_last_actions``).

    ``obs_t [O] -> [o_t, o_{t-1}, ..., o_{t-j}, a_{t-1}, ..., a_{t-k}]`` of size ``O*(1+j) + A*k``
    (newest first; actions clipped to the action space). After ``reset`` the past observations
    repeat the first one and the past actions are the "hold" action (zero projected into the
    action space), the action the DR latency queue (:mod:`roborl.envs.dr`) feeds the plant
    before the first command arrives.

    Why: with action latency the plant executes an action chosen steps ago, and mass or
    friction changes are invisible in one observation; the commanded actions still in flight
    make latency Markov again, and a short state/action history lets a feed-forward policy
    identify the dynamics implicitly (ANYmal: Hwangbo et al. 2019 and Lee et al. 2020 feed the
    previous two actions and a joint-state history; Tan et al. 2018). In the stack it
    sits outside domain randomization, so it records what the learner *commanded* (not the
    delayed or noised action, which a real controller knows exactly) and the observations as
    the sensors delivered them (noise included).
    """

    def __init__(self, env: gym.Env, actions: int = 1, obs: int = 0) -> None:
        gym.utils.RecordConstructorArgs.__init__(self, actions=actions, obs=obs)
        gym.Wrapper.__init__(self, env)
        obs_space, act_space = env.observation_space, env.action_space
        self.k, self.j = int(actions), int(obs)
        if self.k < 0 or self.j < 0 or self.k + self.j == 0:
            raise UsageError(f"env.obs_last_actions/env.obs_history: need >= 0 each and one > 0, got {actions}/{obs}")
        if not (_is_float_box(obs_space) and len(obs_space.shape) == 1):
            raise UsageError(f"env.obs_last_actions/env.obs_history: need a flat float Box observation space, got {obs_space}")
        if self.k and not (isinstance(act_space, spaces.Box) and len(act_space.shape) == 1):
            raise UsageError(f"env.obs_last_actions: needs a flat Box action space, got {act_space}")
        self._dtype = obs_space.dtype
        o = obs_space.shape[0]
        a = act_space.shape[0] if self.k else 0
        self._o = o
        # One flat buffer [o_t, o_{t-1}.., a_{t-1}..]: shifting it is two slice copies and an
        # observation is one copy of it.
        self._buf = np.zeros(o * (1 + self.j) + a * self.k, dtype=self._dtype)
        if self.k:
            self._a = a
            self._a_low = np.asarray(act_space.low, dtype=np.float64)
            self._a_high = np.asarray(act_space.high, dtype=np.float64)
            self._hold = np.clip(np.zeros(act_space.shape), self._a_low, self._a_high)
        lows = [obs_space.low] * (1 + self.j) + ([act_space.low] * self.k if self.k else [])
        highs = [obs_space.high] * (1 + self.j) + ([act_space.high] * self.k if self.k else [])
        self.observation_space = spaces.Box(np.concatenate(lows).astype(self._dtype),
                                            np.concatenate(highs).astype(self._dtype), dtype=self._dtype)

    def reset(self, **kwargs: Any) -> tuple[np.ndarray, dict]:
        obs, info = self.env.reset(**kwargs)
        o, b = self._o, self._buf
        b[:o * (1 + self.j)] = np.tile(np.asarray(obs, dtype=self._dtype).reshape(-1), 1 + self.j)
        if self.k:
            b[o * (1 + self.j):] = np.tile(self._hold, self.k)
        return b.copy(), info

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        o, j, b = self._o, self.j, self._buf
        if j:
            b[o:o * (1 + j)] = b[:o * j].copy()
        b[:o] = np.asarray(obs, dtype=self._dtype).reshape(-1)
        if self.k:
            s, a = o * (1 + j), self._a
            if self.k > 1:
                b[s + a:] = b[s:s + a * (self.k - 1)].copy()
            b[s:s + a] = _clip(np.array(action, dtype=np.float64).reshape(-1), self._a_low, self._a_high)
        return b.copy(), reward, terminated, truncated, info


# ----------------------------------------------------------------------------- episode end

class TerminateOnSuccess(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """End the episode (``terminated=True``) on the first step whose info flags success
    (config ``env.terminate_on_success``; the key is ``env.success_key``, read by
    :func:`roborl.envs.success.step_success`: by default ``is_success``, else ``success``).

    Why: on a robot an episode stops when the task is done (HIL-SERL and SERL end an episode when
    the reward classifier fires, then reset), so no robot time goes into holding a finished pose;
    the env-step budget goes into more, shorter episodes. A success is absorbing for the TD target
    (no bootstrap past it). On simulated Push with the default SAC recipe it did not raise success
    (BENCHMARKS.md, SAC screening runs), so configs/default.yaml leaves it off.
    Eval success (any step succeeds) is unchanged. An env that never reports success is a
    configuration error, caught on the first step rather than silently never terminating.
    """

    def __init__(self, env: gym.Env, env_id: str = "", success_key: str | None = None) -> None:
        gym.utils.RecordConstructorArgs.__init__(self, env_id=env_id, success_key=success_key)
        gym.Wrapper.__init__(self, env)
        self._env_id = env_id or str(getattr(env.spec, "id", "env"))
        self.success_key = success_key
        self._checked = False

    def step(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        if not self._checked:
            keys = (self.success_key,) if self.success_key else SUCCESS_KEYS
            if not any(k in info for k in keys):
                named = " nor ".join(f"info[{k!r}]" for k in keys)
                hint = "" if self.success_key else "; set env.success_key to the env's own key"
                raise UsageError(f"env.terminate_on_success: {self._env_id} reports no {named}{hint}")
            self._checked = True
        if step_success(info, self.success_key):
            terminated = True
        return obs, reward, terminated, truncated, info


#: Wrappers that read no :data:`EXECUTION_INFO_KEYS` entry (nor pass one to a decision), so
#: :func:`skip_unread_info` may walk through them. An explicit table: a wrapper not named here
#: stops the walk, so a new wrapper that reads the entries keeps getting them.
INFO_BLIND_WRAPPERS: frozenset[type] = frozenset({
    NormalizeObservation, HistoryObservation, TerminateOnSuccess,
    gym.wrappers.TimeLimit, gym.wrappers.OrderEnforcing, gym.wrappers.PassiveEnvChecker,
})

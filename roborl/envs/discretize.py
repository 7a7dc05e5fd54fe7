"""Discrete actions over a Box env: a fixed grid of ``bins`` values per action dimension.

Discrete-action learners (``train.algo: sac_discrete``) need a gymnasium ``Discrete`` space. For a
continuous arm task the simplest faithful option is a product grid: each of the ``D`` action
dimensions takes one of ``bins`` evenly spaced values in ``[-1, 1]`` (with an odd ``bins`` the
middle one is exactly 0, i.e. "hold still" on a velocity-controlled arm), so the agent picks one
of ``bins ** D`` joint actions. This is the discretisation used by the Atari-style baselines on
continuous control (e.g. Tang & Agrawal 2020, "Discretizing Continuous Action Space for On-Policy
Optimization", who show a few bins per dimension already work well); it keeps every grid point
reachable without a factorised policy.

The wrapper sits outermost on the action side (see :func:`roborl.envs.config.build_env`), so
every inner layer (safety clip, rescaling, domain randomization, action history) still sees a
Box action. Two conveniences keep the rest of the toolkit working:

* ``step`` also accepts a Box vector (an operator's intervention, a scripted expert): it is sent
  as it is, and the step reports the nearest grid index as the executed action;
* ``info["executed_action"]`` (the safety layer's clipped command, in ``[-1, 1]``) is mapped to
  the nearest grid index, so the store keeps integer actions for the discrete learner and the
  critic learns about what the arm actually did.
"""
from __future__ import annotations

from typing import Any, SupportsFloat

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from roborl.errors import UsageError

__all__ = ["DiscretizeActions", "MAX_DISCRETE_ACTIONS", "action_grid"]

# Discrete SAC has one logit (and one Q-value per critic) per action; past a few thousand the
# output layers dominate the network and exploration over the grid gets hopeless.
MAX_DISCRETE_ACTIONS = 4096


def action_grid(bins: int, dims: int) -> np.ndarray:
    """All ``bins ** dims`` grid points in ``[-1, 1]^dims``, row ``i`` for action index ``i``.

    Returns:
        float32 ``[bins ** dims, dims]``; the last dimension varies fastest (C order), so index
        ``i`` has per-dimension bin ``np.unravel_index(i, (bins,) * dims)``.
    """
    if bins < 2:
        raise UsageError(f"env.action_bins: {bins} bins per dimension; need >= 2 (or 0 = off)")
    values = np.linspace(-1.0, 1.0, bins)
    mesh = np.meshgrid(*([values] * dims), indexing="ij")
    return np.stack([m.reshape(-1) for m in mesh], axis=1).astype(np.float32)


class DiscretizeActions(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """Expose ``Discrete(bins ** D)`` over an env with ``Box(-1, 1, (D,))`` actions.

    Args:
        env: an env whose actions are a 1-D Box scaled to ``[-1, 1]`` (``env.scale_actions``).
        bins: values per dimension (>= 2; odd keeps 0 on the grid).
    """

    def __init__(self, env: gym.Env, bins: int) -> None:
        gym.utils.RecordConstructorArgs.__init__(self, bins=bins)
        gym.Wrapper.__init__(self, env)
        space = env.action_space
        if not isinstance(space, spaces.Box) or len(space.shape) != 1:
            raise UsageError(f"env.action_bins: needs a 1-D Box action space to discretise; the env has {space}")
        if not (np.allclose(space.low, -1.0) and np.allclose(space.high, 1.0)):
            raise UsageError("env.action_bins: the env's actions are not scaled to [-1, 1]; set env.scale_actions=true")
        dims = int(space.shape[0])
        n = int(bins) ** dims
        if n > MAX_DISCRETE_ACTIONS:
            raise UsageError(f"env.action_bins: {bins} bins over {dims} action dimensions make {n} actions "
                             f"(> {MAX_DISCRETE_ACTIONS}); use fewer bins")
        self.bins, self.dims = int(bins), dims
        self.grid = action_grid(self.bins, dims)  # [n, D]
        self._values = self.grid[: self.bins, -1].copy()  # [bins] the per-dimension values, ascending
        self._dtype = space.dtype
        self.action_space = spaces.Discrete(n)

    def to_box(self, action: Any) -> np.ndarray:
        """A grid index (int or 0-d / 1-element array) -> its ``[D]`` Box action; a ``[D]`` vector passes."""
        a = np.asarray(action)
        if a.ndim == 1 and a.shape[0] == self.dims and self.dims > 1:
            return a.astype(self._dtype, copy=False)
        idx = int(a.reshape(-1)[0]) if a.size == 1 else -1
        if not 0 <= idx < self.grid.shape[0]:
            raise UsageError(f"action: {action!r} is not an index in Discrete({self.grid.shape[0]}) or a "
                             f"[{self.dims}] vector")
        return self.grid[idx].astype(self._dtype, copy=False)

    def nearest(self, box_action: np.ndarray) -> int:
        """The grid index nearest to a ``[D]`` action in ``[-1, 1]`` (per dimension: nearest bin)."""
        a = np.clip(np.nan_to_num(np.asarray(box_action, dtype=np.float64).reshape(self.dims)), -1.0, 1.0)
        per_dim = np.abs(a[:, None] - self._values[None, :]).argmin(axis=1)  # [D]
        return int(np.ravel_multi_index(tuple(per_dim), (self.bins,) * self.dims))

    def step(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
        box = self.to_box(action)
        obs, reward, terminated, truncated, info = self.env.step(box)
        executed = info.get("executed_action", box)
        info = dict(info)
        info["executed_action"] = np.int64(self.nearest(executed))
        return obs, reward, terminated, truncated, info

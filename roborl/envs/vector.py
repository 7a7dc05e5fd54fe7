"""A synchronous vector env with a lean step for same-step autoreset (the on-policy rollout's hot path).

:class:`FastSyncVectorEnv` is gymnasium's :class:`~gymnasium.vector.SyncVectorEnv` with one method
replaced: ``step`` under ``AutoresetMode.SAME_STEP`` with a ``Box`` action space. It returns exactly
what the parent's ``step`` returns (the same batched observations, float64 rewards, bool terminations
and truncations, and the same info dict: ``final_obs`` / ``final_info`` of the envs that ended, each
info key with its ``_key`` mask), and keeps the same internal state (``_env_obs``, ``_observations``,
``_autoreset_envs``), so ``reset``, ``call`` and everything else inherited stay valid.

Why: the parent spends Python time per env per step on work that a Box action space and an empty
info do not need (BENCHMARKS.md, learner throughput: the rollout hot path): ``iterate`` (a
singledispatch generator over the action rows), ``_add_info`` called for every env even when its
info is empty (the on-policy runner's envs drop every key it does not read, so it usually is), a
branch on the autoreset mode per env, and ``copy.deepcopy`` of the batched observation array. Here
the rows are indexed, ``_add_info`` runs only for a non-empty info, the mode is checked once per
step and a numeric observation array is copied with ``ndarray.copy``. Every other configuration
(NEXT_STEP / DISABLED autoreset, Dict or Tuple action spaces, non-array actions) takes the parent's
``step`` unchanged. tests/envs/test_vector.py steps both side by side and compares every output.
"""
from __future__ import annotations

from copy import deepcopy
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector.utils import concatenate

__all__ = ["FastSyncVectorEnv"]


class FastSyncVectorEnv(gym.vector.SyncVectorEnv):
    """``SyncVectorEnv`` whose SAME_STEP ``step`` skips per-env work that changes nothing (module doc)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._lean = (self.autoreset_mode == gym.vector.AutoresetMode.SAME_STEP
                      and isinstance(self.action_space, gym.spaces.Box))

    def step(self, actions: Any) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """Step every env with its row of ``actions`` [N, ...]; returns (obs [N, ...], rewards [N] float64,
        terminations [N] bool, truncations [N] bool, infos), as :meth:`SyncVectorEnv.step`."""
        if not self._lean or type(actions) is not np.ndarray or actions.shape[:1] != (self.num_envs,):
            return super().step(actions)
        # Plain formula: SyncVectorEnv.step's SAME_STEP branch (same order of calls on every env).
        env_obs, rewards, terms, truncs = self._env_obs, self._rewards, self._terminations, self._truncations
        add_info = self._add_info
        infos: dict[str, Any] = {}
        for i, env in enumerate(self.envs):
            obs, r, term, trunc, info = env.step(actions[i])
            rewards[i], terms[i], truncs[i] = r, term, trunc
            if term or trunc:
                infos = add_info(infos, {"final_obs": obs, "final_info": info}, i)
                obs, info = env.reset()
            env_obs[i] = obs
            if info:  # _add_info of an empty dict returns ``infos`` unchanged
                infos = add_info(infos, info, i)
        self._observations = concatenate(self.single_observation_space, env_obs, self._observations)
        self._autoreset_envs = np.logical_or(terms, truncs)
        obs_out = self._observations
        if self.copy:  # deepcopy of a numeric ndarray is a plain copy, without copy.deepcopy's memo machinery
            obs_out = obs_out.copy() if type(obs_out) is np.ndarray and obs_out.dtype != object else deepcopy(obs_out)
        return obs_out, np.copy(rewards), np.copy(terms), np.copy(truncs), infos

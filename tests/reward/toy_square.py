"""Test helpers: a toy camera task whose success is visible, and real replay stores of it on disk.

``SquareEnv``: a Dict observation {"cam": uint8 [24, 24, 3], "state": float32 [2]}; a step succeeds
when its action's first component is > 0, and the returned frame then shows a red 6x6 square at a
random place on a noisy grey background (no square otherwise). Episodes last ``horizon`` steps.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from roborl.store import ReplayStore

SIZE = 24


class SquareEnv(gym.Env):
    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(self, horizon: int = 10, cam: str = "cam", nested: bool = False) -> None:
        self.horizon = horizon
        self.cam = cam
        self.nested = nested  # {"pixels": {"front", "wrist"}, "state"}: two cameras under a nested Dict
        img = gym.spaces.Box(0, 255, (SIZE, SIZE, 3), np.uint8)
        cams: dict[str, gym.Space] = ({"pixels": gym.spaces.Dict({"front": img, "wrist": img})} if nested
                                      else {cam: img})
        self.observation_space = gym.spaces.Dict({**cams, "state": gym.spaces.Box(-np.inf, np.inf, (2,), np.float32)})
        self.action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)
        self.rng = np.random.default_rng(0)
        self.t = 0

    def _img(self, success: bool) -> np.ndarray:
        img = self.rng.integers(60, 140, (SIZE, SIZE, 3)).astype(np.uint8)
        if success:
            r, c = self.rng.integers(0, SIZE - 6, 2)
            img[r:r + 6, c:c + 6] = (230, 20, 20)
        return img

    def _obs(self, success: bool) -> dict[str, Any]:
        state = np.array([self.t / self.horizon, float(success)], np.float32)
        if self.nested:
            return {"pixels": {"front": self._img(success), "wrist": self._img(False)}, "state": state}
        return {self.cam: self._img(success), "state": state}

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        if seed is not None:
            self.rng = np.random.default_rng(seed)
        self.t = 0
        return self._obs(False), {}

    def step(self, action: Any):
        self.t += 1
        success = bool(np.asarray(action).reshape(-1)[0] > 0)
        return self._obs(success), float(success), False, self.t >= self.horizon, {"is_success": success}


def write_store(path: Path, episodes: int, seed: int, p_success: float = 0.3, horizon: int = 10,
                nested: bool = False) -> Path:
    """Episodes of SquareEnv with random successes (each step succeeds with ``p_success``)."""
    env = SquareEnv(horizon, nested=nested)
    rng = np.random.default_rng(seed)
    st = ReplayStore.create(path, env_id="toy/Square", observation_space=env.observation_space,
                            action_space=env.action_space)
    try:
        for ep in range(episodes):
            obs, _ = env.reset(seed=seed * 1000 + ep)
            st.start_episode(obs, "demo")
            done = False
            while not done:
                a = np.array([1.0 if rng.random() < p_success else -1.0], np.float32)
                nxt, r, term, trunc, info = env.step(a)
                st.add_step(action=a, reward=r, next_obs=nxt, terminated=term, truncated=trunc,
                            is_success=info["is_success"])
                done = term or trunc
    finally:
        st.close()
    env.close()
    return path

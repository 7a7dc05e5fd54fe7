"""dm_control suite tasks as gymnasium envs: ``make_env("dmc:cartpole-swingup")``.

The adapter turns a ``dm_env.Environment`` into a ``gymnasium.Env``:

* observations: the task's observation dict flattened (in spec order) into one
  float32 vector of shape ``(obs_dim,)``; with ``from_pixels=True`` (as DrQ) a Dict in our
  convention (docs/tasks.md): ``{"pixels": {<camera>: uint8 (height, width, 3)}}`` from
  ``camera_id`` (named by the model's camera name, ``camera<id>`` when it has none), plus
  ``"proprio"`` = that state vector only with ``proprio=True``; the state vector is then
  privileged (``privileged_info_keys``) and travels in ``info["privileged_state"]``;
* actions: ``Box`` with the bounds of the dm_control action spec, float32;
* the suite's time limit ends an episode with ``truncated=True`` (dm_control signals
  it with ``discount=1``; a bootstrapping learner must not treat it as terminal), and a
  task's own termination with ``terminated=True``;
* ``reset(seed=s)`` reseeds the task's ``RandomState`` (which draws the initial state),
  so equal seeds give equal episodes;
* ``render()`` returns an ``(H, W, 3)`` uint8 array (``render_mode="rgb_array"``);
* ``model``/``data`` are the raw ``mujoco.MjModel``/``MjData`` behind the physics and
  ``physics`` the dm_control ``Physics``, so :class:`roborl.envs.dr.DomainRandomization`
  can edit the model in place.
"""
from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from roborl.errors import UsageError

__all__ = ["DMCEnv", "make_dmc_env", "parse_dmc_id"]

# The headless GL default (OSMesa, else EGL, when there is no display) is chosen by
# roborl/envs/__init__.py, which runs before this module and before dm_control imports mujoco.


def parse_dmc_id(spec: str) -> tuple[str, str]:
    """``"cartpole-swingup"`` (or ``"dmc:cartpole-swingup"``) -> ``("cartpole", "swingup")``.

    Domains never contain '-', tasks may (``"ball_in_cup-catch"``), so split at the first '-'.
    """
    rest = spec[len("dmc:"):] if spec.startswith("dmc:") else spec
    domain, sep, task = rest.partition("-")
    if not sep or not domain or not task:
        raise UsageError(f"env.id: {spec!r} is not of the form 'dmc:<domain>-<task>' (e.g. dmc:cartpole-swingup)")
    return domain, task


def _check_task(domain: str, task: str, spec: str) -> None:
    import difflib

    from dm_control import suite

    names = [f"{d}-{t}" for d, t in suite.ALL_TASKS]
    if (domain, task) not in suite.ALL_TASKS:
        close = difflib.get_close_matches(f"{domain}-{task}", names, n=3, cutoff=0.5)
        hint = f" (did you mean {', '.join('dmc:' + c for c in close)}?)" if close else ""
        raise UsageError(f"env.id: unknown dm_control task {spec!r}{hint}")


class DMCEnv(gym.Env[np.ndarray, np.ndarray]):
    """A dm_control suite task behind the gymnasium API (see the module docstring)."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 50}
    #: In pixel mode the flat state vector is ground truth a camera-only agent lacks.
    privileged_info_keys: tuple[str, ...] = ("privileged_state",)
    privileged_obs_keys: tuple[str, ...] = ()

    def __init__(self, domain: str, task: str, *, render_mode: str | None = None,
                 render_height: int = 84, render_width: int = 84, camera_id: int = 0,
                 from_pixels: bool = False, height: int = 84, width: int = 84, proprio: bool = False,
                 task_kwargs: dict[str, Any] | None = None, environment_kwargs: dict[str, Any] | None = None,
                 visualize_reward: bool = False) -> None:
        from dm_control import suite

        spec = f"dmc:{domain}-{task}"
        _check_task(domain, task, spec)
        if render_mode not in (None, "rgb_array"):
            raise UsageError(f"render_mode: {render_mode!r} is not supported by {spec} (only 'rgb_array')")
        for key, v in (("height", height), ("width", width)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not 8 <= int(v) <= 1024:
                raise UsageError(f"env.kwargs.{key}: expected an integer in [8, 1024] pixels, got {v!r}")
        if proprio and not from_pixels:
            raise UsageError(f"env.kwargs.proprio: {spec}: proprio=true only applies with from_pixels=true")
        task_kwargs = dict(task_kwargs or {})
        # The task's RandomState draws initial states; reset(seed) reseeds it in place.
        task_kwargs.setdefault("random", np.random.RandomState())
        self._env = suite.load(domain, task, task_kwargs=task_kwargs,
                               environment_kwargs=environment_kwargs, visualize_reward=visualize_reward)
        self.render_mode = render_mode
        self.render_height, self.render_width, self.camera_id = int(render_height), int(render_width), int(camera_id)
        self.spec_id = spec

        self._obs_keys = list(self._env.observation_spec().keys())
        self._obs_sizes = [int(np.prod(s.shape)) for s in self._env.observation_spec().values()]
        dim = int(sum(self._obs_sizes))
        self.from_pixels, self.proprio = bool(from_pixels), bool(proprio)
        self.height, self.width = int(height), int(width)
        state_space = spaces.Box(-np.inf, np.inf, shape=(dim,), dtype=np.float32)
        if self.from_pixels:
            model = self._env.physics.model
            if not 0 <= self.camera_id < model.ncam:
                raise UsageError(f"env.kwargs.camera_id: {spec} has cameras 0-{model.ncam - 1}, got {self.camera_id}")
            self.camera_name = model.id2name(self.camera_id, "camera") or f"camera{self.camera_id}"
            image = spaces.Box(0, 255, (self.height, self.width, 3), dtype=np.uint8)
            parts: dict[str, spaces.Space] = {"pixels": spaces.Dict({self.camera_name: image})}
            if self.proprio:
                parts["proprio"] = state_space
            self.observation_space: spaces.Space = spaces.Dict(parts)
        else:
            self.observation_space = state_space
        a = self._env.action_spec()
        low = np.broadcast_to(np.asarray(a.minimum, dtype=np.float32), a.shape).copy()
        high = np.broadcast_to(np.asarray(a.maximum, dtype=np.float32), a.shape).copy()
        self.action_space = spaces.Box(low, high, shape=a.shape, dtype=np.float32)
        self.metadata = dict(self.metadata, render_fps=int(round(1.0 / self._env.control_timestep())))

    # --------------------------------------------------------------- raw access (for DR)
    @property
    def physics(self) -> Any:
        """The dm_control ``Physics``."""
        return self._env.physics

    @property
    def model(self) -> Any:
        """The raw ``mujoco.MjModel`` (edits are seen by the physics)."""
        return self._env.physics.model.ptr

    @property
    def data(self) -> Any:
        """The raw ``mujoco.MjData``."""
        return self._env.physics.data.ptr

    @property
    def dm_env(self) -> Any:
        """The wrapped ``dm_env.Environment``."""
        return self._env

    # --------------------------------------------------------------------------- API
    def _flatten(self, obs: dict[str, Any]) -> np.ndarray:
        """Observation dict -> float32 vector ``(obs_dim,)``, in spec order."""
        return np.concatenate([np.asarray(obs[k], dtype=np.float32).reshape(-1) for k in self._obs_keys])

    def _observe(self, obs: dict[str, Any], info: dict[str, Any]) -> Any:
        """The observation in this env's mode; in pixel mode the state goes to ``info["privileged_state"]``."""
        state = self._flatten(obs)
        if not self.from_pixels:
            return state
        info["privileged_state"] = state
        frame = self._env.physics.render(height=self.height, width=self.width, camera_id=self.camera_id)
        out: dict[str, Any] = {"pixels": {self.camera_name: np.ascontiguousarray(frame, dtype=np.uint8)}}
        if self.proprio:
            out["proprio"] = state.copy()
        return out

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict]:
        super().reset(seed=seed)
        if seed is not None:
            self._env.task.random.seed(int(seed) % 2**32)  # RandomState takes 32-bit seeds
        ts = self._env.reset()
        info: dict[str, Any] = {}
        return self._observe(ts.observation, info), info

    def step(self, action: np.ndarray) -> tuple[Any, float, bool, bool, dict]:
        action = np.asarray(action, dtype=np.float64).reshape(self.action_space.shape)
        ts = self._env.step(action)
        reward = float(ts.reward or 0.0)
        terminated = truncated = False
        if ts.last():
            at_limit = self._env._step_count >= self._env._step_limit
            # dm_control ends at the time limit with discount 1 (a truncation); a task's own
            # termination carries its discount (usually 0).
            truncated = bool(at_limit)
            terminated = not truncated
        info: dict[str, Any] = {"discount": float(ts.discount if ts.discount is not None else 1.0)}
        return self._observe(ts.observation, info), reward, terminated, truncated, info

    def render(self) -> np.ndarray | None:
        """``(render_height, render_width, 3)`` uint8 frame from ``camera_id``."""
        if self.render_mode is None:
            gym.logger.warn(f"{self.spec_id}: render() called without render_mode='rgb_array'")
            return None
        return self._env.physics.render(height=self.render_height, width=self.render_width, camera_id=self.camera_id)

    def __str__(self) -> str:
        return f"<DMCEnv<{self.spec_id}>>"

    def close(self) -> None:
        try:
            self._env.close()
        except Exception:  # noqa: BLE001 - closing twice / GL teardown must not raise at exit
            pass


def make_dmc_env(spec: str, **kwargs: Any) -> DMCEnv:
    """Factory used by the ``dmc:`` scheme of :func:`roborl.envs.make.make_env`."""
    domain, task = parse_dmc_id(spec)
    return DMCEnv(domain, task, **kwargs)

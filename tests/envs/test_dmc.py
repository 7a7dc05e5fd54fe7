"""dm_control -> gymnasium adapter: spaces, truncation, seeding, env checker, raw model access."""
from __future__ import annotations

import subprocess
import sys

import mujoco
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from roborl.envs.dmc import DMCEnv, make_dmc_env, parse_dmc_id


def test_parse_ids():
    assert parse_dmc_id("dmc:ball_in_cup-catch") == ("ball_in_cup", "catch")
    assert parse_dmc_id("cartpole-swingup_sparse") == ("cartpole", "swingup_sparse")


@pytest.mark.parametrize("spec", ["dmc:walker-walk", "dmc:reacher-easy"])
def test_spaces_match_dm_specs(spec):
    env = make_dmc_env(spec)
    dm = env.dm_env
    dim = sum(int(np.prod(s.shape)) for s in dm.observation_spec().values())
    assert env.observation_space.shape == (dim,) and env.observation_space.dtype == np.float32
    a = dm.action_spec()
    assert env.action_space.dtype == np.float32
    np.testing.assert_array_equal(env.action_space.low, np.broadcast_to(a.minimum, a.shape).astype(np.float32))
    np.testing.assert_array_equal(env.action_space.high, np.broadcast_to(a.maximum, a.shape).astype(np.float32))
    obs, info = env.reset(seed=0)
    assert obs.dtype == np.float32 and obs.shape == (dim,) and env.observation_space.contains(obs)
    # Flattening keeps spec order: the first block is the first spec entry.
    ts_obs = env.dm_env.task.get_observation(env.physics)
    first = next(iter(ts_obs.values()))
    np.testing.assert_allclose(obs[: np.size(first)], np.ravel(first).astype(np.float32))
    env.close()


def test_time_limit_truncates_not_terminates():
    # cartpole's control step is 0.01 s: a 0.05 s limit gives 5-step episodes.
    env = DMCEnv("cartpole", "balance", task_kwargs={"time_limit": 0.05})
    env.reset(seed=1)
    out = [env.step(env.action_space.sample()) for _ in range(5)]
    assert [o[3] for o in out] == [False] * 4 + [True]
    assert not any(o[2] for o in out)
    assert out[-1][4]["discount"] == 1.0
    env.close()


def test_seeding_is_deterministic():
    def rollout(env, seed):
        obs, _ = env.reset(seed=seed)
        traj = [obs]
        rng = np.random.default_rng(0)
        for _ in range(20):
            obs, r, *_ = env.step(rng.uniform(-1, 1, env.action_space.shape).astype(np.float32))
            traj.append(np.append(obs, r))
        return traj

    a, b = make_dmc_env("dmc:cartpole-swingup"), make_dmc_env("dmc:cartpole-swingup")
    ta, tb = rollout(a, 7), rollout(b, 7)
    for x, y in zip(ta, tb):
        np.testing.assert_array_equal(x, y)
    # Same env, reseeded: same again; another seed: a different initial state.
    np.testing.assert_array_equal(rollout(a, 7)[0], ta[0])
    assert not np.array_equal(rollout(a, 8)[0], ta[0])
    a.close(), b.close()


def test_env_checker_passes():
    env = make_dmc_env("dmc:cartpole-swingup")
    check_env(env, skip_render_check=True)
    env.close()


def test_exposes_raw_model_and_data():
    env = make_dmc_env("dmc:cartpole-swingup")
    assert isinstance(env.model, mujoco.MjModel) and isinstance(env.data, mujoco.MjData)
    assert env.model is env.physics.model.ptr and env.data is env.physics.data.ptr
    # A model edit through the raw pointer is seen by the dm_control physics.
    env.model.dof_damping[0] = 0.123
    assert env.physics.model.dof_damping[0] == 0.123
    env.close()


def test_render_rgb_array(gl_env):
    """Needs a headless GL backend (EGL or OSMesa, probed: tests/conftest.py); runs in a subprocess to keep GL
    out of this process."""
    code = ("from roborl.envs.dmc import make_dmc_env\n"
            "e = make_dmc_env('dmc:cartpole-swingup', render_mode='rgb_array', render_height=48, render_width=64)\n"
            "e.reset(seed=0)\n"
            "f = e.render()\n"
            "print(f.shape, f.dtype, int(f.std() > 0))\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=gl_env)
    assert p.returncode == 0, p.stderr
    assert p.stdout.split("\n")[0] == "(48, 64, 3) uint8 1"

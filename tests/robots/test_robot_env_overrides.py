"""`roborl robot serve --backend sim:...` takes the same env.* overrides as `roborl train`: the served twin
and a training run with those overrides see one env."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from roborl import config as C
from roborl.envs.config import EnvConfig, build_env
from roborl.robots.client import make_robot_env
from roborl.robots.launch import ServerProcess

TASK = "roborl/Reach-v0"


def test_served_twin_matches_the_training_env_built_from_the_same_overrides():
    over = ["env.kwargs.obs_mode=proprio", "env.max_episode_steps=7", "env.kwargs.reward_type=sparse"]
    cfg = C.build(EnvConfig, dict(C.parse_overrides(over)["env"], id=TASK))
    train_env = build_env(cfg)
    with ServerProcess(f"sim:{TASK}", hz=200, sim_clock="lockstep", extra=over) as srv:
        env = make_robot_env(srv.url)
        try:
            assert env.observation_space == train_env.observation_space
            assert env.max_episode_steps == 7
            o_srv, _ = env.reset(seed=3)
            o_tr, _ = train_env.reset(seed=3)
            np.testing.assert_allclose(o_srv["proprio"], o_tr["proprio"], atol=1e-6)
            a = np.array([0.5, -0.5, 0.2, 0.0], np.float32)
            for _ in range(7):
                o_srv, r_srv, _, trunc, _ = env.step(a)
                o_tr, r_tr, _, _, _ = train_env.step(a)
                np.testing.assert_allclose(o_srv["proprio"], o_tr["proprio"], atol=1e-5)
                assert r_srv == pytest.approx(r_tr) and r_srv in (0.0, -1.0)  # sparse reward reached the twin
            assert trunc  # env.max_episode_steps reached the twin
        finally:
            env.close()
            train_env.close()


@pytest.mark.parametrize("args, culprit", [
    (["sac.lr=1e-4"], "sac"),
    (["env.kwargs.obs_mode=bogus"], "obs_mode"),
    (["env.nope=1"], "nope"),
    (["env.id=roborl/Push-v0"], "env.id"),
])
def test_bad_env_overrides_are_one_line(args: list[str], culprit: str):
    r = subprocess.run([sys.executable, "-m", "roborl.cli", "robot", "serve", "--backend", f"sim:{TASK}",
                        "--seconds", "1", *args], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and culprit in r.stderr, r.stderr

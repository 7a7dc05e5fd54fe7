"""Discretised actions over a Box env (env.action_bins): the grid, the nearest-index map, the env stack,
and discrete SAC on our arm through the real runner, store and eval."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from gymnasium import spaces
from gymnasium.utils.env_checker import check_env

from roborl import config as C
from roborl.envs.config import EnvConfig, build_env
from roborl.envs.discretize import DiscretizeActions, action_grid
from roborl.envs.wrappers import find_wrapper
from roborl.errors import UsageError
from roborl.runners.config import RunConfig


def test_grid_covers_every_combination_once_with_zero_in_the_middle() -> None:
    g = action_grid(3, 4)
    assert g.shape == (81, 4) and g.dtype == np.float32
    assert len({tuple(r) for r in g.tolist()}) == 81
    assert set(np.unique(g).tolist()) == {-1.0, 0.0, 1.0}
    assert np.all(g[40] == 0.0)  # the middle index is "hold still"
    # C order: index i has bins np.unravel_index(i, (3,) * 4).
    for i in (0, 7, 40, 80):
        assert np.allclose(g[i], np.array(np.unravel_index(i, (3,) * 4)) - 1.0)
    assert np.allclose(np.unique(action_grid(5, 1)), [-1, -0.5, 0, 0.5, 1])


def test_nearest_inverts_the_grid_and_rounds_off_grid_actions() -> None:
    env = DiscretizeActions(build_env(EnvConfig(id="roborl/Reach-v0")), 5)
    try:
        for i in range(env.action_space.n):
            assert env.nearest(env.grid[i]) == i
        assert env.nearest(np.array([0.2, -0.3, 0.74, -2.0])) == env.nearest(np.array([0.0, -0.5, 0.5, -1.0]))
        assert env.nearest(np.array([np.nan, 0.0, 0.0, 0.0])) == env.nearest(np.zeros(4))
    finally:
        env.close()


def test_reach_with_bins_passes_the_env_checker_and_reports_integer_executed_actions() -> None:
    env = build_env(EnvConfig(id="roborl/Reach-v0", action_bins=3), seed=0)
    try:
        assert env.action_space == spaces.Discrete(81)
        wrapper = find_wrapper(env, DiscretizeActions)
        assert wrapper is not None
        check_env(env, skip_render_check=True)
        obs0, _ = env.reset(seed=1)
        for _ in range(5):  # +x at full speed: the arm (and so the observation) must move
            obs, _, _, _, info = env.step(int(np.flatnonzero((wrapper.grid == [1, 0, 0, 0]).all(1))[0]))
            assert isinstance(info["executed_action"], np.integer) and 0 <= info["executed_action"] < 81
        assert not np.allclose(obs, obs0)
        # A Box vector (an operator's intervention) passes through; the executed index is the nearest.
        _, _, _, _, info = env.step(np.array([0.1, -0.9, 0.0, 0.8], dtype=np.float32))
        assert int(info["executed_action"]) == wrapper.nearest(np.array([0.0, -1.0, 0.0, 1.0]))
        with pytest.raises(UsageError, match="Discrete"):
            env.step(81)
    finally:
        env.close()


def test_bad_bins_are_refused() -> None:
    with pytest.raises(UsageError, match="env.action_bins"):
        build_env(EnvConfig(id="roborl/Reach-v0", action_bins=1))
    with pytest.raises(UsageError, match="env.action_bins.*10000"):
        build_env(EnvConfig(id="roborl/Reach-v0", action_bins=10))
    with pytest.raises(UsageError, match="env.action_bins"):
        build_env(EnvConfig(id="CartPole-v1", action_bins=3))  # already Discrete


def test_continuous_arm_without_bins_is_refused_for_discrete_sac_in_one_line(tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, "-m", "roborl", "train", "configs/sac_discrete_reach.yaml",
                        "env.action_bins=0", f"run.dir={tmp_path / 'run'}"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Discrete" in r.stderr and "Reach" in r.stderr
    assert not (tmp_path / "run").exists()


def test_discrete_sac_on_the_discretised_arm_trains_stores_indices_and_evals(tmp_path: Path) -> None:
    from roborl.checkpoint import load_checkpoint
    from roborl.learners import load_policy
    from roborl.runners.off_policy import OffPolicyRunner

    cfg = C.load(RunConfig, Path("configs/sac_discrete_reach.yaml"),
                 [f"run.dir={tmp_path}", "train.total_steps=300", "train.eval_every=0", "train.checkpoint_every=300",
                  "train.eval_episodes=1", "sac_discrete.warmup_steps=100", "sac_discrete.hidden=[32,32]",
                  "sac_discrete.batch_size=32"])
    runner = OffPolicyRunner(cfg, tmp_path)
    runner.train(quiet=True)
    b = runner.sampler.sample(16, gamma=0.95, step=runner.step)
    assert b.action.shape == (16,) and set(b.action.long().tolist()) <= set(range(81))
    runner.close()
    state, meta, _ = load_checkpoint(tmp_path)
    assert meta["act_shape"] == [81]
    a = load_policy(state, meta).act(np.zeros((1, int(meta["obs_shape"][0])), np.float32))
    assert 0 <= int(np.asarray(a).reshape(-1)[0]) < 81
    ev = subprocess.run([sys.executable, "-m", "roborl", "eval", str(tmp_path), "--episodes", "1", "--json"],
                        capture_output=True, text=True, timeout=120)
    assert ev.returncode == 0, ev.stderr

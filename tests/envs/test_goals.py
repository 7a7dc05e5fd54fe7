"""GoalRelabeler (HER): for the true goal it reproduces each goal-conditioned task's own reward and success."""
from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

import roborl


@pytest.mark.parametrize("env_id", ["roborl/Reach-v0", "roborl/Push-v0", "roborl/PickPlace-v0"])
@pytest.mark.parametrize("reward_type", ["dense", "sparse"])
def test_relabeler_reproduces_env_reward(env_id: str, reward_type: str) -> None:
    env = gym.make(env_id, reward_type=reward_type)
    rl = env.unwrapped.goal_relabeler()
    nxt, rew, succ = [], [], []
    for ep in range(2):
        ex = roborl.envs.expert(env, noise=0.3, seed=ep)
        obs, _ = env.reset(seed=ep)
        ex.reset()
        for _ in range(40):
            obs, r, _, _, info = env.step(ex(obs))
            nxt.append(obs)
            rew.append(r)
            succ.append(info["is_success"])
    env.close()
    o = torch.as_tensor(np.array(nxt))
    goal = o[:, rl.goal[0]:rl.goal[1]]
    assert np.allclose(rl.reward(o, goal).numpy(), rew, atol=1e-5)
    assert rl.success(o, goal).numpy().tolist() == succ
    assert any(succ) and not all(succ)  # both branches exercised
    # with_goal rewrites the goal and the goal - achieved feature, and nothing else.
    g = o[:, rl.achieved[0]:rl.achieved[1]].flip(0)
    o2 = rl.with_goal(o, g)
    assert torch.equal(o2[:, rl.goal[0]:rl.goal[1]], g)
    lo, hi = rl.goal_minus_achieved
    assert torch.allclose(o2[:, lo:hi], g - o[:, rl.achieved[0]:rl.achieved[1]])
    keep = torch.ones(o.shape[1], dtype=torch.bool)
    keep[rl.goal[0]:rl.goal[1]] = False
    keep[lo:hi] = False
    assert torch.equal(o2[:, keep], o[:, keep])


def test_peg_insert_has_no_relabeler() -> None:
    env = gym.make("roborl/PegInsert-v0")
    assert getattr(env.unwrapped, "goal_relabeler", lambda: None)() is None
    env.close()


def test_pickplace_relabeled_success_is_the_envs_3d_success() -> None:
    # PickPlace's goal is 5-20 cm above the table: a relabelled goal right above or below the cube (same xy)
    # must not count as reached, as it would with Push's table-plane (2-D) distance. Checked against the env
    # itself: the env's goal is moved to each relabelled goal and its own success test is asked.
    env = gym.make("roborl/PickPlace-v0")
    u = env.unwrapped
    rl = u.goal_relabeler()
    assert rl.distance_dims == 3
    agree = checked = hits = 0
    for ep in range(2):
        ex = roborl.envs.expert(env, noise=0.15, seed=ep)
        obs, _ = env.reset(seed=ep)
        ex.reset()
        true_goal = u._goal.copy()
        for _ in range(40):
            obs, _, _, _, info = env.step(ex(obs))
            achieved = obs[rl.achieved[0]:rl.achieved[1]].astype(np.float64)
            for dz in (0.0, 0.02, -0.025, 0.04, 0.1):
                for dxy in (0.0, 0.02):
                    g = achieved + np.array([dxy, 0.0, dz])
                    u._goal = g
                    env_success = u._task_eval()[2]
                    ours = bool(rl.success(torch.as_tensor(obs)[None], torch.as_tensor(g, dtype=torch.float32)[None])[0])
                    agree += env_success == ours
                    checked += 1
                    hits += env_success
                    if dxy == 0.0 and dz == 0.04:
                        assert not ours  # 4 cm straight above: reached in the plane, not in space
            u._goal = true_goal
    env.close()
    assert agree == checked and 0 < hits < checked

"""Scripted experts: success rates, noise, wrapped envs."""
from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import roborl
from roborl.envs.registry import TASKS
from roborl.errors import UsageError


def success_rate(env_id: str, episodes: int, noise: float = 0.0, wrap=None) -> float:
    env = gym.make(env_id)
    if wrap is not None:
        env = wrap(env)
    ex = roborl.envs.expert(env, noise=noise, seed=0)
    wins = 0
    for ep in range(episodes):
        obs, _ = env.reset(seed=ep)
        ex.reset()
        done = False
        while not done:
            action = ex(obs)
            assert env.action_space.contains(action)
            obs, _, terminated, truncated, info = env.step(action)
            done = terminated or truncated
        wins += info["is_success"]  # success at the end of the episode, not just once
    env.close()
    return wins / episodes


@pytest.mark.parametrize("env_id", list(TASKS))
def test_expert_10_episodes(env_id):
    assert success_rate(env_id, 10) >= 0.9


@pytest.mark.slow
@pytest.mark.parametrize("env_id", list(TASKS))
def test_expert_100_episodes_at_least_95_percent(env_id):
    assert success_rate(env_id, 100) >= 0.95


def test_expert_ignores_observation_wrappers():
    # Normalized observations would fool an obs-reading expert; ours reads the true state.
    assert success_rate("roborl/Push-v0", 5, wrap=gym.wrappers.NormalizeObservation) >= 0.8


def test_noisy_expert_is_imperfect_but_reasonable_and_seeded():
    env = gym.make("roborl/Push-v0")
    env.reset(seed=0)
    clean = roborl.envs.expert(env)
    noisy_a = roborl.envs.expert(env, noise=0.3, seed=1)
    noisy_b = roborl.envs.expert(env, noise=0.3, seed=1)
    acts = [noisy_a(None) for _ in range(20)]
    assert all(np.array_equal(a, noisy_b(None)) for a in acts)  # reproducible from the seed
    assert not np.allclose(acts[0], clean(None))
    assert all(a[-1] == clean(None)[-1] for a in acts)  # the gripper command is never perturbed
    assert noisy_a.random_prob == pytest.approx(0.15)
    assert success_rate("roborl/Push-v0", 10, noise=0.1) >= 0.7


def test_expert_rejects_unknown_envs_and_bad_noise():
    with pytest.raises(UsageError, match="Pendulum"):
        roborl.envs.expert(gym.make("Pendulum-v1"))
    with pytest.raises(UsageError):
        roborl.envs.expert(gym.make("roborl/Reach-v0"), noise=-1.0)


def test_expert_with_yaw_actions():
    env = gym.make("roborl/Reach-v0", yaw=True)
    ex = roborl.envs.expert(env)
    obs, _ = env.reset(seed=3)
    for _ in range(30):
        obs, _, _, _, info = env.step(ex(obs))
    assert info["is_success"]

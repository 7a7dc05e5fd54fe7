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


def _noisy_peg_success(episodes: int) -> float:
    """Success rate of the PegInsert expert at the demo noise (std 0.15, 7.5 % random motions)."""
    env = gym.make("roborl/PegInsert-v0")
    wins = 0
    for ep in range(episodes):
        ex = roborl.envs.expert(env, noise=0.15, seed=ep)
        obs, _ = env.reset(seed=ep)
        ex.reset()
        for _ in range(60):
            obs, _, _, _, info = env.step(ex(obs))
        wins += info["is_success"]
    env.close()
    return wins / episodes


def test_peginsert_noisy_expert_succeeds_at_demo_noise():
    # Before the plunge/re-grasp/let-go expert, 4-8 of 20 such episodes succeeded.
    assert _noisy_peg_success(10) >= 0.9


@pytest.mark.slow
def test_peginsert_noisy_expert_100_episodes():
    assert _noisy_peg_success(100) >= 0.95


def _drop_peg_then_expert(seed: int, where: tuple[float, float, float], noise: float) -> tuple[bool, set[str], float]:
    """Carry the peg to ``where`` (tip offset from the hole bottom, m), force the fingers open for 3 steps
    (the peg drops), then hand over to the expert for the rest of the 60 steps.
    Returns (success at the end, modes the expert went through, finger opening right after the drop)."""
    env = gym.make("roborl/PegInsert-v0")
    u = env.unwrapped
    ex = roborl.envs.expert(env, noise=noise, seed=seed)
    obs, _ = env.reset(seed=seed)
    ex.reset()
    goal = u.task_state()["goal"]
    target = goal + np.asarray(where)
    for _ in range(8):
        s = u.task_state()
        move = np.clip((target - s["object"]) / u.max_delta, -1.0, 1.0)
        obs, *_ = env.step(np.array([*move, -1.0], dtype=np.float32))
    for _ in range(3):
        obs, *_ = env.step(np.array([0.0, 0.0, 0.0, 1.0], dtype=np.float32))
    s = u.task_state()
    in_hole = s["object"][2] - goal[2] < 0.035 and np.linalg.norm(s["object"][:2] - goal[:2]) < 0.008
    assert not in_hole  # the drop left the peg to be picked up again
    modes = set()
    for _ in range(60 - 11):
        obs, _, _, _, info = env.step(ex(obs))
        modes.add(ex.mode)
    env.close()
    return bool(info["is_success"]), modes, float(s["grip_open"])


@pytest.mark.parametrize("where", [(0.015, 0.0, 0.045), (-0.05, -0.03, 0.01)], ids=["on_rim", "on_table"])
def test_peginsert_expert_recovers_a_forced_drop(where):
    # Dropped on the hole's rim 15 mm off the axis, or standing on the table next to the hole:
    # the expert sees the peg is not held, opens, re-grasps it and inserts it.
    for seed in range(3):
        success, modes, opening = _drop_peg_then_expert(seed, where, noise=0.0)
        assert opening > 0.08  # fingers open after the forced drop
        assert "regrasp" in modes and success, (seed, modes)
    success, modes, _ = _drop_peg_then_expert(0, (0.015, 0.0, 0.045), noise=0.15)
    assert "regrasp" in modes and success


def test_peginsert_expert_detects_a_peg_not_in_hand():
    env = gym.make("roborl/PegInsert-v0")
    ex = roborl.envs.expert(env)
    env.reset(seed=0)
    s = env.unwrapped.task_state()
    assert ex._in_hand(s)  # at reset the peg is grasped
    assert not ex._in_hand({**s, "grip_open": 0.0005})  # fingers closed on nothing
    assert not ex._in_hand({**s, "grip_open": 0.09})  # fingers open
    assert not ex._in_hand({**s, "object": s["object"] + np.array([0.05, 0.0, 0.0])})  # peg away from the hand
    env.close()

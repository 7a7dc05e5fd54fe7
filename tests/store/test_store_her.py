"""HER relabelling in the sampler (store.sampler.her_fraction): goals come from the same episode's
future, rewards are the env's own for the new goal, and her_fraction 0 leaves batches untouched."""
from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

import roborl
from roborl.config import build
from roborl.errors import UsageError
from roborl.store import ReplayStore, Sampler, SamplerConfig


def _push_store(tmp_path: Path, episodes: int = 3) -> tuple[ReplayStore, object, list[np.ndarray]]:
    """A real store of noisy scripted Push episodes (real physics); also returns each episode's next_obs rows."""
    env = gym.make("roborl/Push-v0")
    rl = env.unwrapped.goal_relabeler()
    st = ReplayStore.create(tmp_path / "s", env_id="roborl/Push-v0", observation_space=env.observation_space,
                            action_space=env.action_space, chunk_rows=64)
    nexts = []
    for ep in range(episodes):
        ex = roborl.envs.expert(env, noise=0.3, seed=ep)
        obs, _ = env.reset(seed=ep)
        ex.reset()
        st.start_episode(obs, "online")
        rows = []
        while True:
            obs, r, term, trunc, info = env.step(ex(obs))
            st.add_step(action=np.zeros(4), reward=r, next_obs=obs, terminated=term, truncated=trunc,
                        is_success=info["is_success"])
            rows.append(obs)
            if term or trunc:
                break
        nexts.append(np.array(rows))
    env.close()
    return st, rl, nexts


def test_relabelled_goals_are_future_achieved_goals_and_rewards_are_recomputed(tmp_path: Path) -> None:
    st, rl, nexts = _push_store(tmp_path)
    gamma, n = 0.9, 3
    sp = Sampler(st, build(SamplerConfig, {"her_fraction": 1.0, "n_step": n}, "test"), seed=1, relabeler=rl)
    b = sp.sample(256, gamma=gamma, step=0)
    g0, g1 = rl.goal
    a0, a1 = rl.achieved
    all_next = np.concatenate(nexts)
    ends = np.cumsum([len(x) for x in nexts])
    rows = (b.index.numpy() - 1) // 2  # online rows (index = row * 2 + partition id 1)
    for i, row in enumerate(rows):
        end = int(ends[np.searchsorted(ends, row, side="right")])
        goal = b.obs[i, g0:g1].numpy()
        # The new goal is an achieved cube position at some step t' in [t, end) of the same episode.
        fut = all_next[row:end, a0:a1]
        assert np.isclose(fut, goal, atol=1e-6).all(1).any()
        assert np.allclose(b.next_obs[i, g0:g1].numpy(), goal)
        gm0, gm1 = rl.goal_minus_achieved
        assert np.allclose(b.obs[i, gm0:gm1].numpy(), goal - b.obs[i, a0:a1].numpy(), atol=1e-6)
        # The n-step return is recomputed with the env's reward for that goal, step by step.
        k = min(n, end - row)
        expect = 0.0
        for j in range(k):
            o = all_next[row + j]
            d = np.linalg.norm(goal[:2] - o[a0:a0 + 2])
            expect += gamma ** j * (-d - 0.5 * np.linalg.norm(o[10:13]) + 0.5 * (d < 0.03))
        assert b.reward[i].item() == pytest.approx(expect, abs=1e-5)
    # Relabelling with future goals yields successes the original goals mostly lack.
    succ_new = rl.success(b.next_obs, b.next_obs[:, g0:g1]).float().mean().item()
    assert succ_new > 0.2
    st.close()


def test_her_fraction_zero_is_the_plain_sampler_and_misconfiguration_is_a_usage_error(tmp_path: Path) -> None:
    st, rl, _ = _push_store(tmp_path, episodes=2)
    plain = Sampler(st, build(SamplerConfig, {"n_step": 3}, "test"), seed=3)
    off = Sampler(st, build(SamplerConfig, {"n_step": 3}, "test"), seed=3, relabeler=rl)
    a, b = plain.sample(64, gamma=0.95), off.sample(64, gamma=0.95)
    assert torch.equal(a.obs, b.obs) and torch.equal(a.reward, b.reward) and torch.equal(a.next_obs, b.next_obs)
    half = Sampler(st, build(SamplerConfig, {"n_step": 3, "her_fraction": 0.5}, "test"), seed=3, relabeler=rl)
    c = half.sample(512, gamma=0.95)
    rows = ((c.index - 1) // 2).numpy()
    stored = torch.as_tensor(st.read_rows("online", 0, st.num_steps("online"), ["obs"])["obs"][rows])
    changed = (c.obs[:, rl.goal[0]:rl.goal[1]] != stored[:, rl.goal[0]:rl.goal[1]]).any(1)
    assert 0.4 < changed.float().mean().item() < 0.6  # ~half relabelled (a future goal is never the original)
    # relabel=False (BC targets, normaliser fits): stored goals even with her_fraction > 0.
    d = half.sample(512, gamma=0.95, relabel=False)
    rows = ((d.index - 1) // 2).numpy()
    stored = torch.as_tensor(st.read_rows("online", 0, st.num_steps("online"), ["obs"])["obs"][rows])
    assert torch.equal(d.obs, stored)
    with pytest.raises(UsageError, match="store.sampler.her_fraction"):
        Sampler(st, build(SamplerConfig, {"her_fraction": 0.5}, "test"))
    st.close()


def test_her_batches_resume_exactly_from_a_checkpoint(tmp_path: Path) -> None:
    from roborl.checkpoint import load_checkpoint, save_checkpoint

    st, rl, _ = _push_store(tmp_path, episodes=2)
    cfg = build(SamplerConfig, {"n_step": 3, "her_fraction": 0.5}, "test")
    a = Sampler(st, cfg, seed=7, relabeler=rl)
    a.sample(128, gamma=0.95)
    save_checkpoint(tmp_path / "run", 1, {"sampler": a.state_dict()}, {})
    want = a.sample(128, gamma=0.95)
    b = Sampler(st, cfg, seed=123, relabeler=rl)
    state, _, _ = load_checkpoint(tmp_path / "run")
    b.load_state_dict(state["sampler"])
    got = b.sample(128, gamma=0.95)
    assert torch.equal(want.obs, got.obs) and torch.equal(want.reward, got.reward)
    assert torch.equal(want.next_obs, got.next_obs) and torch.equal(want.index, got.index)
    st.close()

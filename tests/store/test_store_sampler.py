"""Sampler: sum-tree frequencies, n-step targets, demo split, sync with appends/evictions, exact resume."""
from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

from roborl.checkpoint import load_checkpoint, save_checkpoint
from roborl.config import build
from roborl.store import ReplayStore, Sampler, SamplerConfig, StoreError
from roborl.store.sumtree import SumTree

OBS = gym.spaces.Box(-np.inf, np.inf, (2,), np.float32)
ACT = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)


def _episode(st: ReplayStore, rewards: list[float], end: str, part: str = "online", success: bool = False) -> None:
    """Episode with obs = [row, part]; next_obs of row t is [t + 1, part]."""
    pid = 0.0 if part == "demo" else 1.0
    row = st.parts[part].end
    st.start_episode(np.array([row, pid]), part)
    for i, r in enumerate(rewards):
        last = i == len(rewards) - 1
        st.add_step(action=[r / 100], reward=r, next_obs=np.array([row + i + 1, pid]),
                    terminated=last and end == "term", truncated=last and end == "trunc", is_success=success and last)


def _store(tmp_path: Path, **kw) -> ReplayStore:
    return ReplayStore.create(tmp_path / "s", env_id="t", observation_space=OBS, action_space=ACT, chunk_rows=16, **kw)


def test_sumtree_frequencies_match_priorities() -> None:
    rng = np.random.default_rng(0)
    pri = rng.uniform(0.1, 5.0, 37)
    pri[[3, 20]] = 0.0  # zero-priority leaves are never drawn
    t = SumTree(37)
    t.set_all(pri)
    t.update(np.array([5, 5, 7]), np.array([9.0, 10.0, 0.5]))  # duplicate: last wins
    pri[5], pri[7] = 10.0, 0.5
    assert t.total == pytest.approx(pri.sum())
    n = 200_000
    idx = t.find(rng.random(n) * t.total)
    counts = np.bincount(idx, minlength=37)
    expected = n * pri / pri.sum()
    assert counts[3] == 0 and counts[20] == 0
    nz = expected > 0
    chi2 = (((counts - expected) ** 2)[nz] / expected[nz]).sum()
    assert chi2 < 70, chi2  # 34 dof: p(chi2 > 70) ~ 3e-4 under the null; a wrong tree gives thousands


def test_per_sampling_follows_updated_priorities(tmp_path: Path) -> None:
    st = _store(tmp_path)
    for _ in range(4):
        _episode(st, [1.0] * 5, "trunc")
    s = Sampler(st, SamplerConfig(kind="per", alpha=1.0, eps=1e-9), seed=3)
    b = s.sample(20, gamma=0.9)
    assert torch.all(b.weight == 1.0)  # all priorities equal at first
    idx = torch.arange(20, dtype=torch.int64) * 2 + 1  # online rows 0..19
    td = torch.tensor([10.0 if r < 5 else 1.0 for r in range(20)])
    s.update_priorities(idx, td)
    rows = np.concatenate([(s.sample(100, gamma=0.9).index.numpy() >> 1) for _ in range(200)])
    share = np.mean(rows < 5)
    assert share == pytest.approx(50 / 65, abs=0.02)  # 5*10 / (5*10 + 15*1)
    b = s.sample(64, gamma=0.9, step=0)
    hi = (b.index >> 1) < 5
    # IS weights (N P)^-beta normalised by the batch max: high-priority rows get the smaller weight.
    assert torch.all(b.weight[hi] < b.weight[~hi].min()) and b.weight.max() == 1.0
    lap = Sampler(st, SamplerConfig(kind="lap"), seed=0)
    lap.update_priorities(idx, td)
    assert torch.all(lap.sample(32, gamma=0.9).weight == 1.0)


def test_n_step_targets_hand_computed(tmp_path: Path) -> None:
    st = _store(tmp_path)
    _episode(st, [1, 2, 3, 4], "term")    # rows 0..3, terminal at row 3
    _episode(st, [10, 20, 30], "trunc")   # rows 4..6, truncated at row 6
    s = Sampler(st, SamplerConfig(), seed=0)
    b = s.sample(400, gamma=0.5, n_step=3)
    # row: (n-step return, discount, row of next_obs)
    want = {0: (1 + 0.5 * 2 + 0.25 * 3, 0.125, 3), 1: (2 + 0.5 * 3 + 0.25 * 4, 0.0, 4), 2: (3 + 0.5 * 4, 0.0, 4),
            3: (4, 0.0, 4), 4: (10 + 0.5 * 20 + 0.25 * 30, 0.125, 7), 5: (20 + 0.5 * 30, 0.25, 7), 6: (30, 0.5, 7)}
    rows = (b.index >> 1).numpy()
    assert set(rows.tolist()) == set(want)
    for i, r in enumerate(rows):
        ret, disc, nxt = want[int(r)]
        assert b.reward[i].item() == pytest.approx(ret)
        assert b.discount[i].item() == pytest.approx(disc)
        assert b.next_obs[i, 0].item() == nxt and b.obs[i, 0].item() == r
    b1 = s.sample(50, gamma=0.5, n_step=1)
    r1 = (b1.index >> 1).numpy()
    assert np.allclose(b1.discount.numpy(), np.where(r1 == 3, 0.0, 0.5))
    assert np.allclose(b1.action[:, 0].numpy(), b1.reward.numpy() / 100)


def test_demo_split_anneal_and_fallback(tmp_path: Path) -> None:
    st = _store(tmp_path)
    _episode(st, [1.0] * 6, "term", part="demo")
    s = Sampler(st, build(SamplerConfig, {"demo_fraction": 0.5, "demo_fraction_final": 0.1, "demo_anneal_steps": 100}))
    assert s.sample(16, gamma=0.9).is_demo.all()  # online empty: all demo
    _episode(st, [2.0] * 6, "trunc")
    b = s.sample(10, gamma=0.9, step=0)  # picks up the new episode without an explicit sync
    assert int(b.is_demo.sum()) == 5 and b.is_demo[:5].all()
    assert int(s.sample(10, gamma=0.9, step=100).is_demo.sum()) == 1
    assert int(s.sample(10, gamma=0.9, demo_fraction=1.0).is_demo.sum()) == 10
    assert torch.all((b.reward == 1.0) == b.is_demo)
    with pytest.raises(StoreError, match="demo_fraction"):
        s.sample(10, gamma=0.9, demo_fraction=1.5)


def test_sync_follows_eviction_and_success_boost(tmp_path: Path) -> None:
    st = _store(tmp_path, online_capacity=30)
    s = Sampler(st, SamplerConfig(kind="per", success_boost=4.0), seed=1)
    with pytest.raises(StoreError, match="no ended episodes"):
        s.sample(4, gamma=0.9)
    for e in range(40):
        _episode(st, [float(e)] * 5, "trunc", success=e % 2 == 0)
        b = s.sample(32, gamma=0.9)
        rows = (b.index >> 1).numpy()
        assert rows.min() >= st.parts["online"].head_row and rows.max() < st.parts["online"].end
        assert np.array_equal(b.obs[:, 0].numpy(), rows)  # the mirror row matches the store row
    assert st.num_steps("online") == 30
    rewards = np.concatenate([s.sample(64, gamma=0.9).reward.numpy() for _ in range(50)])
    succ = np.mean(rewards % 2 == 0)  # even episodes succeeded
    assert succ == pytest.approx(4 / 5, abs=0.05)  # 3 successful vs 3 plain episodes live, boost 4


def test_exact_resume_through_checkpoint(tmp_path: Path) -> None:
    st = _store(tmp_path)
    rng = np.random.default_rng(0)
    for e in range(12):
        _episode(st, list(rng.normal(size=int(rng.integers(3, 9)))), "term" if e % 3 else "trunc",
                 part="demo" if e < 3 else "online")
    s = Sampler(st, SamplerConfig(kind="per", n_step=3), seed=7)
    for _ in range(5):
        b = s.sample(32, gamma=0.99, step=10)
        s.update_priorities(b.index, b.reward.abs())
    save_checkpoint(tmp_path / "run", 1, {"sampler": s.state_dict()}, {})
    gen = st.generation
    st.close()
    want = [s.sample(32, gamma=0.99, step=11) for _ in range(3)]
    st2 = ReplayStore.open(tmp_path / "s", mode="a")
    assert st2.generation >= gen
    s2 = Sampler(st2, SamplerConfig(kind="per", n_step=3), seed=999)
    state, _, _ = load_checkpoint(tmp_path / "run")
    s2.load_state_dict(state["sampler"])
    for w in want:
        g = s2.sample(32, gamma=0.99, step=11)
        for f in ("obs", "action", "reward", "next_obs", "discount", "weight", "index", "is_demo"):
            assert torch.equal(getattr(w, f), getattr(g, f)), f
    st2.close()

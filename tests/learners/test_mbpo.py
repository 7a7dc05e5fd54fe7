"""MBPO: the dynamics ensemble learns a known linear system (NLL drops, variance learned), branched rollouts
start from real states and never run past a terminal, the length schedule, and a short run through the
off-policy runner with checkpoint, resume and the eval loader."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from roborl import config as C
from roborl.checkpoint import find_checkpoint, load_checkpoint
from roborl.learners import load_policy
from roborl.learners.config import MBPOConfig
from roborl.learners.mbpo import DynamicsEnsemble, branched_rollout, gaussian_nll, rollout_length
from roborl.runners.config import RunConfig
from roborl.runners.off_policy import OffPolicyRunner

O, A, NOISE = 3, 1, 0.05


def _linear_system(n: int, g: torch.Generator) -> tuple[torch.Tensor, ...]:
    Am = torch.tensor([[0.9, 0.1, 0.0], [0.0, 0.8, 0.2], [0.1, 0.0, 0.7]])
    Bm = torch.tensor([[0.5], [0.0], [-0.3]])
    s = torch.randn(n, O, generator=g)
    a = torch.rand(n, A, generator=g) * 2 - 1
    nxt = s @ Am.T + a @ Bm.T + NOISE * torch.randn(n, O, generator=g)
    r = s.sum(-1) - a[:, 0] ** 2 + NOISE * torch.randn(n, generator=g)
    return s, a, torch.cat([nxt - s, r[:, None]], -1)


def test_model_nll_drops_on_a_known_linear_system_and_learns_the_noise() -> None:
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    E = 3
    model = DynamicsEnsemble(O, A, E, (64, 64))
    s, a, y = _linear_system(4096, g)
    model.fit_input_stats(torch.cat([s, a], -1))
    hs, ha, hy = _linear_system(1024, g)  # held out

    def heldout_nll() -> float:
        with torch.no_grad():
            mean, logvar, _ = model(hs, ha)
            return float(gaussian_nll(mean, logvar, hy).mean())

    before = heldout_nll()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    done = torch.zeros(E, 256)
    for _ in range(1500):
        idx = torch.randint(4096, (E, 256), generator=g)  # one bootstrap batch per member
        loss = model.loss(s[idx], a[idx], y[idx], done)
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = heldout_nll()
    assert after < before - 2.0, (before, after)
    with torch.no_grad():
        mean, logvar, logit = model(hs, ha)
    # The learned variance of the state dims approaches the true noise variance (0.05^2, log = -6.0).
    assert abs(float(logvar[..., :O].mean()) - math.log(NOISE ** 2)) < 1.0
    assert float((mean - hy).pow(2).mean()) < 4 * NOISE ** 2
    assert torch.all(torch.sigmoid(logit) < 0.1)  # never terminal in the data


def test_branched_rollouts_start_from_real_states_and_stop_at_terminals() -> None:
    g = torch.Generator().manual_seed(1)
    start = torch.rand(64, 2, generator=g)  # x in [0, 1)

    def step(obs, act):  # x grows by 0.3 per step; terminal once x >= 1
        nxt = obs + 0.3
        return nxt, nxt[:, 0], nxt[:, 0] >= 1.0

    tr = branched_rollout(start, 5, lambda o: torch.zeros(o.shape[0], 1), step)
    first = tr["h"] == 0
    torch.testing.assert_close(tr["obs"][first], start)  # every rollout begins at its real state
    for i in range(64):
        rows = torch.nonzero(tr["start"] == i).flatten()
        hs = tr["h"][rows]
        assert torch.equal(hs, torch.arange(len(rows)))
        d = tr["done"][rows]
        assert not d[:-1].any(), "a rollout continued past a terminal"
        # it ends at its first terminal, or after k steps
        x0 = float(start[i, 0])
        expected = min(5, next(k for k in range(1, 10) if x0 + 0.3 * k >= 1.0))
        assert len(rows) == expected
        torch.testing.assert_close(tr["obs"][rows[1:]], tr["next_obs"][rows[:-1]])  # consecutive states chain


def test_rollout_length_schedule() -> None:
    cfg = C.build(MBPOConfig, {"rollout_min_length": 1, "rollout_max_length": 15, "rollout_min_step": 20_000,
                               "rollout_max_step": 100_000})
    assert [rollout_length(s, cfg) for s in (0, 20_000, 60_000, 100_000, 500_000)] == [1, 1, 8, 15, 15]


def _cfg(tmp_path, total: int) -> RunConfig:
    return C.build(RunConfig, {
        "device": "cpu", "run": {"dir": str(tmp_path), "seed": 0}, "env": {"id": "InvertedPendulum-v5"},
        "train": {"algo": "mbpo", "total_steps": total, "eval_every": 0, "eval_episodes": 1, "checkpoint_every": 200,
                  "log_every": 100},
        "store": {"online_capacity": 10_000, "sampler": {"demo_fraction": 0.0}},
        "mbpo": {"batch_size": 32, "utd": 1, "warmup_steps": 150, "ensemble_size": 3, "elites": 2,
                 "model_hidden": [32, 32], "model_batch": 32, "model_train_every": 100, "model_steps": 10,
                 "rollout_batch": 20, "rollout_min_length": 3, "rollout_max_length": 3,
                 "sac": {"hidden": [32, 32], "batch_size": 32}}})


def test_mbpo_trains_on_the_off_policy_runner_resumes_and_rolls_out_from_stored_states(tmp_path) -> None:
    runner = OffPolicyRunner(_cfg(tmp_path, 300), tmp_path)
    try:
        runner.train(quiet=True)
        ln = runner.learner
        assert ln.buf_size > 0 and torch.isfinite(ln.buf["reward"][:ln.buf_size]).all()
        # Start states of a model rollout are stored (real) observations.
        start = runner.sampler.sample(16, gamma=0.99, n_step=1).obs.float()
        tr = branched_rollout(start, 3, lambda o: ln.sac.act(o), ln.model_step)
        torch.testing.assert_close(tr["obs"][tr["h"] == 0], start)
        stored = torch.as_tensor(runner.store.read_rows("online", 0, runner.store.num_steps("online"), ["obs"])["obs"],
                                 dtype=torch.float32)
        assert all((stored == s).all(-1).any() for s in start)
    finally:
        runner.close()
    state, meta, _ = load_checkpoint(find_checkpoint(tmp_path))
    assert meta["algo"] == "mbpo" and "dynamics" in state["learner"]
    pol = load_policy(state, meta)
    obs = np.zeros((2, 4), np.float32)
    assert pol.act(obs).shape == (2, 1)
    runner = OffPolicyRunner(_cfg(tmp_path, 400), tmp_path)
    try:
        assert runner.try_resume() and runner.step == 300
        runner.train(quiet=True)
        assert runner.step == 400
    finally:
        runner.close()

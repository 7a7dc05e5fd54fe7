"""Retrace (store.sampler.nstep_correction=retrace): the corrected n-step return on a hand-worked trace with a
terminal and a truncation, the uncorrected return recovered when pi = mu, truncated traces, the sampler's
trace from a real store (behaviour log_prob kept), and SAC building its critic target from it."""
from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

from roborl import config as C
from roborl.learners.config import SACConfig
from roborl.learners.sac import SAC
from roborl.store import ReplayStore, Sampler, SamplerConfig
from roborl.learners.retrace import retrace_return, retrace_traces
from roborl.store.sampler import TraceBatch

T, F = True, False


def test_hand_worked_trace_with_a_terminal_and_a_truncation() -> None:
    gamma = 0.5
    # Row 0: s_3 is terminal (step 2 ends the episode); row 1: a time limit ends the episode after step 1.
    reward = torch.tensor([[1.0, 2.0, 3.0, 0.0], [1.0, 1.0, 0.0, 0.0]])
    valid = torch.tensor([[T, T, T, F], [T, T, F, F]])
    terminal = torch.tensor([[F, F, T, F], [F, F, F, F]])
    c = torch.tensor([[9.0, 0.5, 1.0, 9.0], [9.0, 1.0, 9.0, 9.0]])        # c_0 and steps past the end are unused
    q = torch.tensor([[9.0, 2.0, 1.0, 9.0], [9.0, 3.0, 9.0, 9.0]])        # Q(s_k, a_k), q_0 unused
    v_next = torch.tensor([[1.0, 4.0, 99.0, 9.0], [2.0, 6.0, 9.0, 9.0]])  # V(s_{k+1}); V after a terminal unused
    # Row 0: G_2 = 3 (terminal); G_1 = 2 + .5 (4 + 1.0 (3 - 1)) = 5; G_0 = 1 + .5 (1 + .5 (5 - 2)) = 2.25.
    # Row 1: G_1 = 1 + .5 * 6 = 4 (the truncation bootstraps); G_0 = 1 + .5 (2 + 1 (4 - 3)) = 2.5.
    torch.testing.assert_close(retrace_return(reward, valid, terminal, c, q, v_next, gamma), torch.tensor([2.25, 2.5]))
    # Cut traces (c = 0) give the one-step target r_0 + gamma V(s_1).
    torch.testing.assert_close(retrace_return(reward, valid, terminal, torch.zeros_like(c), q, v_next, gamma),
                               torch.tensor([1.5, 2.0]))


def test_pi_equal_mu_recovers_the_uncorrected_n_step_return() -> None:
    g = torch.Generator().manual_seed(0)
    B, n, gamma = 256, 5, 0.9
    reward = torch.randn(B, n, generator=g)
    length = torch.randint(1, n + 1, (B,), generator=g)  # steps inside the episode within the window
    valid = torch.arange(n)[None, :] < length[:, None]
    ends = torch.rand(B, generator=g) < 0.5  # the episode ends inside the window ...
    term_row = ends & (torch.rand(B, generator=g) < 0.5)  # ... by a terminal (else a truncation)
    terminal = (torch.arange(n)[None, :] == (length - 1)[:, None]) & term_row[:, None]
    v_next = torch.randn(B, n, generator=g)
    logp = torch.randn(B, n, generator=g)
    c = retrace_traces(logp, logp, 1.0)  # pi = mu, lambda = 1
    assert torch.all(c == 1.0)
    q = torch.cat([torch.zeros(B, 1), v_next[:, :-1]], 1)  # the plain return's V(s_k) is the taken action's value
    got = retrace_return(reward * valid, valid, terminal, c, q, v_next, gamma)
    k = torch.arange(n)
    plain = (reward * valid * gamma ** k).sum(1)
    boot = torch.where(term_row, 0.0, gamma ** length.float() * v_next[torch.arange(B), length - 1])
    torch.testing.assert_close(got, plain + boot)


def test_traces_are_truncated_importance_weights() -> None:
    pi = torch.log(torch.tensor([[0.2, 0.9, 0.5]]))
    mu = torch.log(torch.tensor([[0.4, 0.3, float("nan")]]))
    torch.testing.assert_close(retrace_traces(pi, mu, 0.9), torch.tensor([[0.45, 0.9, 0.0]]))


def _store(tmp_path) -> ReplayStore:
    """Two episodes of a 1-D world: obs = step index; ep 0 terminates after 3 steps, ep 1 is truncated after 2."""
    st = ReplayStore.create(tmp_path / "s", env_id="toy", observation_space=gym.spaces.Box(-100, 100, (1,), np.float32),
                            action_space=gym.spaces.Box(-1, 1, (1,), np.float32), online_capacity=100)
    for ep, (length, term) in enumerate(((3, True), (2, False))):
        st.start_episode(np.array([10.0 * ep], np.float32))
        for t in range(length):
            last = t == length - 1
            st.add_step(action=np.array([0.1 * t], np.float32), reward=float(10 * ep + t + 1),
                        next_obs=np.array([10.0 * ep + t + 1], np.float32), terminated=last and term,
                        truncated=last and not term, log_prob=float(-t - 1))
    return st


def test_sampler_trace_from_a_real_store_keeps_the_behaviour_log_prob(tmp_path) -> None:
    st = _store(tmp_path)
    try:
        cfg = C.build(SamplerConfig, {"nstep_correction": "retrace", "retrace_lambda": 0.7, "demo_fraction": 0.0})
        sm = Sampler(st, cfg, seed=0)
        b = sm.sample(64, gamma=0.5, n_step=3)
        assert isinstance(b, TraceBatch) and b.trace is not None
        tr = b.trace
        assert float(tr["lambda"]) == pytest.approx(0.7)
        for i in range(64):
            s0 = float(b.obs[i, 0])
            ep, t = (0, int(s0)) if s0 < 10 else (1, int(s0 - 10))
            length, term = ((3, True), (2, False))[ep]
            k = np.arange(3)
            valid = t + k < length
            assert tr["valid"][i].tolist() == valid.tolist()
            assert tr["terminal"][i].tolist() == (valid & (t + k == length - 1) & term).tolist()
            np.testing.assert_allclose(tr["reward"][i].numpy(), np.where(valid, 10 * ep + t + k + 1, 0.0))
            nv = int(valid.sum())
            np.testing.assert_allclose(tr["next_obs"][i, :nv, 0].numpy(), 10 * ep + t + k[:nv] + 1)
            np.testing.assert_allclose(tr["behaviour_logp"][i, :nv].numpy(), -(t + k[:nv]) - 1)
            np.testing.assert_allclose(tr["action"][i, :nv, 0].numpy(), 0.1 * (t + k[:nv]), rtol=1e-6)
        # The batch's own reward/discount stay the uncorrected n-step return.
        plain = Sampler(st, C.build(SamplerConfig, {"demo_fraction": 0.0}), seed=0).sample(64, gamma=0.5, n_step=3)
        assert type(plain) is not TraceBatch
        torch.testing.assert_close(plain.reward, b.reward)
    finally:
        st.close()


def test_sac_builds_its_critic_target_from_the_trace(tmp_path) -> None:
    st = _store(tmp_path)
    try:
        sm = Sampler(st, C.build(SamplerConfig, {"nstep_correction": "retrace", "demo_fraction": 0.0}), seed=0)
        torch.manual_seed(0)
        sac = SAC(1, 1, C.build(SACConfig, {"hidden": [16, 16], "gamma": 0.5}))
        b = sm.sample(32, gamma=0.5, n_step=3)
        sac.normalizer.fit(b.obs)
        with torch.no_grad():  # the same random draws as update: its soft target's a' ~ pi(s'), then the trace's
            torch.manual_seed(5)
            sac.policy(sac.normalizer(b.next_obs.float()))
            y = sac._retrace_target(b.trace, sac.alpha.detach())
            q = sac.critic(sac.normalizer(b.obs.float()), b.action.float())
        torch.manual_seed(5)
        _, td_abs = sac.update(b)
        torch.testing.assert_close(td_abs, (q - y).abs().mean(0), rtol=1e-5, atol=1e-5)
        # Traces cut everywhere (lambda = 0): the target is the one-step soft target r + gamma V(s_1).
        b.trace["lambda"] = torch.tensor(0.0)
        with torch.no_grad():
            y0 = sac._retrace_target(b.trace, sac.alpha.detach())
            s1 = sac.normalizer(b.trace["next_obs"][:, 0].float())
            tr = b.trace
        assert torch.isfinite(y0).all()
        one_step_terminal = tr["terminal"][:, 0]
        torch.testing.assert_close(y0[one_step_terminal], tr["reward"][one_step_terminal, 0])
        assert s1.shape == (32, 1)
    finally:
        st.close()


def test_off_policy_run_with_retrace_stores_the_behaviour_log_prob(tmp_path) -> None:
    import math

    from roborl.runners.config import RunConfig
    from roborl.runners.off_policy import OffPolicyRunner

    cfg = C.build(RunConfig, {
        "device": "cpu", "run": {"dir": str(tmp_path), "seed": 0}, "env": {"id": "Pendulum-v1", "max_episode_steps": 50},
        "train": {"algo": "sac", "total_steps": 300, "eval_every": 0, "eval_episodes": 1, "checkpoint_every": 300},
        "store": {"online_capacity": 10_000, "sampler": {"n_step": 3, "nstep_correction": "retrace", "demo_fraction": 0.0}},
        "sac": {"hidden": [32, 32], "batch_size": 32, "warmup_steps": 100}})
    runner = OffPolicyRunner(cfg, tmp_path)
    try:
        runner.train(quiet=True)
        rows = runner.store.read_rows("online", 0, 300, ["log_prob"])["log_prob"]
        np.testing.assert_allclose(rows[:100], -math.log(2.0))  # uniform warmup actions on [-1, 1]
        assert np.isfinite(rows[100:]).all() and not np.allclose(rows[100:], -math.log(2.0))
        b = runner.sampler.sample(16, gamma=0.99)
        assert isinstance(b, TraceBatch) and torch.isfinite(b.trace["behaviour_logp"][b.trace["valid"]]).all()
    finally:
        runner.close()


@pytest.mark.parametrize("over", [["train.algo=td3"], ["sac.residual=true"]])
def test_retrace_with_a_learner_that_does_not_read_traces_is_a_config_error(over) -> None:
    from roborl.runners.config import RunConfig

    with pytest.raises(C.ConfigError) as e:
        C.load(RunConfig, None, ["store.sampler.nstep_correction=retrace", *over])
    assert "store.sampler.nstep_correction" in str(e.value) and "\n" not in str(e.value)

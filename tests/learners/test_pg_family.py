"""REINFORCE, A2C, NPG and TRPO as learners: their updates do what the math says, they train through the
one on-policy runner (rollout settings from their own section), checkpoint, resume and evaluate; bad
action-space combinations are refused with one line and exit 2."""
from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch.nn.utils import parameters_to_vector

from roborl import config as C
from roborl.checkpoint import find_checkpoint, load_checkpoint
from roborl.learners import LEARNERS, build_learner, load_policy
from roborl.learners.base import Rollout
from roborl.learners.config import A2CConfig, NPGConfig, ReinforceConfig, TRPOConfig
from roborl.learners.ppo import gaussian_kl, gaussian_log_prob
from roborl.learners.reinforce import discounted_returns
from roborl.runners.config import RunConfig
from roborl.runners.on_policy import OnPolicyTrainer, run

PG = ("reinforce", "a2c", "npg", "trpo")
T, N, O, A = 16, 4, 3, 2


def _rollout(learner, seed: int = 0, terminate_at: int | None = 7) -> Rollout:
    """A rollout of random observations acted on by ``learner`` (rewards favour action[0] > 0)."""
    g = torch.Generator().manual_seed(seed)
    obs = torch.randn(T, N, O, generator=g)
    acts, us, logps, mus, vs = zip(*(learner.act({"policy": obs[t]}) for t in range(T)))
    u = torch.stack(us)
    rewards = u[..., 0].clamp(-1, 1) + 0.1 * torch.randn(T, N, generator=g)
    term = torch.zeros(T, N)
    if terminate_at is not None:
        term[terminate_at, 0] = 1.0
    values = torch.stack(vs)
    next_values = torch.cat([values[1:], values[-1:]])
    return Rollout(obs={"policy": obs}, actions=u, logp=torch.stack(logps), mu=torch.stack(mus), values=values,
                   rewards=rewards, next_values=next_values, terminated=term, dones=term.clone())


def test_a2c_step_follows_the_advantage_actor_critic_gradient() -> None:
    """One A2C step with plain SGD-like Adam lr moves the log-prob of positive-advantage actions up."""
    torch.manual_seed(0)
    cfg = C.build(A2CConfig, {"optimizer": "adam", "lr": 1e-2, "max_grad_norm": None})
    ln = build_learner("a2c", O, A, cfg)
    r = _rollout(ln)
    from roborl.learners.ppo import compute_gae

    adv, ret = compute_gae(r.rewards, r.values, r.next_values, r.terminated, r.dones, cfg.gamma, cfg.gae_lambda)
    x, u, _, _ = ln.flat_rollout(r)
    m = ln.model
    mu, v = m.plain(x)
    logp = gaussian_log_prob(u, mu, m.log_std)
    surrogate = (logp * adv.reshape(-1)).mean()  # what the policy step ascends
    ln.update(r)
    with torch.no_grad():
        mu2, v2 = m.plain(x)
        assert float((gaussian_log_prob(u, mu2, m.log_std) * adv.reshape(-1)).mean()) > float(surrogate)
        assert float((v2 - ret.reshape(-1)).pow(2).mean()) < float((v - ret.reshape(-1)).pow(2).mean())


def test_reinforce_reward_to_go_weights_are_the_discounted_returns_within_episodes() -> None:
    torch.manual_seed(0)
    cfg = C.build(ReinforceConfig, {"weighting": "reward_to_go", "norm_adv": False})
    ln = build_learner("reinforce", O, A, cfg)
    r = _rollout(ln, terminate_at=7)
    g = discounted_returns(r.rewards, cfg.gamma, r.dones)
    # env 0's return at t=7 stops at its terminal: G_7 = r_7.
    assert float(g[7, 0]) == pytest.approx(float(r.rewards[7, 0]))
    m = ln.model
    x, u, _, _ = ln.flat_rollout(r)
    params = [p for p in m.parameters()]
    logp = gaussian_log_prob(u, m.plain(x)[0], m.log_std)
    expected = torch.autograd.grad(-(logp * g.reshape(-1)).mean(), params, allow_unused=True)
    before = [p.detach().clone() for p in params]
    # One Adam step moves each parameter by -lr * sign(grad) (first step, eps small): compare directions.
    ln.update(r)
    for p0, p, e in zip(before, params, expected):
        if e is None or e.abs().max() < 1e-6:
            continue
        moved = (p.detach() - p0)
        mask = e.abs() > 1e-4
        assert torch.all(torch.sign(moved[mask]) == -torch.sign(e[mask]))


@pytest.mark.parametrize("algo", ["npg", "trpo"])
def test_natural_step_hits_the_kl_model_and_trpo_stays_in_the_trust_region(algo: str) -> None:
    torch.manual_seed(1)
    cfg_cls = NPGConfig if algo == "npg" else TRPOConfig
    cfg = C.build(cfg_cls, {"max_kl": 0.01, "cg_iters": 30})
    ln = build_learner(algo, O, A, cfg)
    r = _rollout(ln, seed=3)
    x, u, logp_old, mu_old = ln.flat_rollout(r)
    m = ln.model
    log_std_old = m.log_std.detach().clone()
    old = parameters_to_vector(ln.actor_params()).detach().clone()
    critic_old = parameters_to_vector(ln.critic_params()).detach().clone()
    out = ln.update(r)
    with torch.no_grad():
        kl = float(gaussian_kl(mu_old, log_std_old, m.actor_mean(x), m.log_std).mean())
    moved = not torch.equal(parameters_to_vector(ln.actor_params()), old)
    if algo == "npg":
        # The quadratic model of the step's KL is delta: the exact KL of a small step is close to it.
        assert moved and kl == pytest.approx(cfg.max_kl, rel=0.3)
    else:
        assert out["accepted"] in (0.0, 1.0)
        if out["accepted"]:
            assert moved and kl <= cfg.max_kl and out["surrogate_gain"] > 0
        else:
            assert not moved
    assert not torch.equal(parameters_to_vector(ln.critic_params()), critic_old)  # the critic was fitted


def test_trpo_rejects_a_step_that_cannot_improve() -> None:
    """With all advantages zero no step improves the surrogate: the policy stays exactly where it was."""
    torch.manual_seed(2)
    ln = build_learner("trpo", O, A, C.build(TRPOConfig, {"norm_adv": False, "gamma": 0.5}))
    r = _rollout(ln, terminate_at=None)
    r.rewards.zero_()
    r.values.zero_()
    r.next_values.zero_()
    old = parameters_to_vector(ln.actor_params()).detach().clone()
    out = ln.update(r)
    assert out["accepted"] == 0.0
    assert torch.equal(parameters_to_vector(ln.actor_params()), old)


def test_runner_reads_rollout_settings_from_the_learners_own_section() -> None:
    cfg = C.build(RunConfig, {"device": "cpu", "env": {"id": "Pendulum-v1"},
                              "train": {"algo": "a2c"}, "a2c": {"n_envs": 3, "rollout_steps": 7}})
    assert cfg.ppo.n_envs != 3
    tr = OnPolicyTrainer(cfg)
    try:
        assert tr.n == 3 and tr.buf.rewards.shape == (7, 3)
        assert type(tr.learner).__name__ == "A2C"
        tr.iterate()
        assert tr.global_step == 21
    finally:
        tr.close()


def _train_cfg(algo: str, run_dir, total: int, **extra) -> RunConfig:
    section = {"n_envs": 2, "rollout_steps": 64, "torch_threads": 1, **extra}
    return C.build(RunConfig, {"device": "cpu", "run": {"dir": str(run_dir), "seed": 1},
                               "env": {"id": "InvertedPendulum-v5"},
                               "train": {"algo": algo, "total_steps": total, "eval_every": 0, "eval_episodes": 2,
                                         "checkpoint_every": 128, "log_every": 128}, algo: section})


@pytest.mark.parametrize("algo", PG)
def test_trains_checkpoints_resumes_and_evaluates(algo: str, tmp_path, capsys) -> None:
    assert LEARNERS[algo].kind == "on_policy"
    assert run(_train_cfg(algo, tmp_path, 256), tmp_path, "local", None) == 0
    ck = find_checkpoint(tmp_path)
    state, meta, _ = load_checkpoint(ck)
    assert meta["algo"] == algo and meta["global_step"] == 256
    # Resume: the same run.dir continues from the checkpoint up to the new budget.
    assert run(_train_cfg(algo, tmp_path, 512), tmp_path, "local", None) == 0
    assert "resumed from step 256" in capsys.readouterr().out
    state, meta, _ = load_checkpoint(find_checkpoint(tmp_path))
    assert meta["global_step"] == 512
    # roborl eval's loader rebuilds the same deterministic policy the trainer had.
    pol = load_policy(state, meta)
    obs = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
    cfg = _train_cfg(algo, tmp_path, 512)
    ln = build_learner(algo, {"policy": 4}, 1, getattr(cfg, algo))
    ln.load_state_dict(state["learner"])
    np.testing.assert_array_equal(pol.act(obs), ln.policy().act(obs))
    r = subprocess.run([sys.executable, "-m", "roborl", "eval", str(tmp_path), "--episodes", "1", "--json"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert '"return_mean"' in r.stdout


@pytest.mark.parametrize("args, culprit", [
    (["train.algo=a2c", "env.id=CartPole-v1"], "Box action space"),
    (["train.algo=trpo", "env.id=CartPole-v1"], "Box action space"),
    (["train.algo=sac_discrete", "env.id=Pendulum-v1"], "needs Discrete actions"),
    (["train.algo=td3", "env.id=CartPole-v1"], "needs Box actions"),
    (["train.algo=mbpo", "env.id=robot://127.0.0.1:9"], "simulation only"),
])
def test_bad_action_space_or_robot_combinations_are_one_line_exit_2(args, culprit, tmp_path) -> None:
    cfg = tmp_path / "empty.yaml"
    cfg.write_text("run: {seed: 0}\n")
    r = subprocess.run([sys.executable, "-m", "roborl", "train", "--quiet", str(cfg), *args, f"run.dir={tmp_path / 'r'}",
                        "train.total_steps=2000", "device=cpu"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and culprit in lines[0], r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize("name", ["reinforce_invertedpendulum", "a2c_invertedpendulum", "npg_invertedpendulum",
                                  "trpo_invertedpendulum", "trpo_halfcheetah", "mbpo_invertedpendulum",
                                  "sac_value_pendulum", "sac_retrace_pendulum"])
def test_shipped_configs_load(name: str) -> None:
    from pathlib import Path

    cfg = C.load(RunConfig, Path(__file__).resolve().parents[2] / "configs" / f"{name}.yaml")
    assert cfg.train.algo in LEARNERS

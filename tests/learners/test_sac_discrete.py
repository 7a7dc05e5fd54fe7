"""Discrete-action SAC: exact expectations against Monte-Carlo, the temperature, CartPole through the runner."""
from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from roborl import config as C
from roborl.batch import Batch
from roborl.learners.config import DiscreteSACConfig
from roborl.learners.sac_discrete import DiscreteSAC, entropy, policy_loss, soft_value
from roborl.runners.config import RunConfig


def test_soft_value_and_policy_loss_equal_monte_carlo_over_sampled_actions() -> None:
    g = torch.Generator().manual_seed(0)
    q = torch.randn(3, 4, generator=g) * 3
    log_pi = torch.log_softmax(torch.randn(3, 4, generator=g), -1)
    alpha = 0.7
    n = 400_000
    a = torch.multinomial(log_pi.exp(), n, replacement=True, generator=g)  # [3, n] samples a ~ pi(.|s)
    q_a, lp_a = q.gather(1, a), log_pi.gather(1, a)
    mc_v = (q_a - alpha * lp_a).mean(1)  # E_a[Q(s, a) - alpha log pi(a|s)]
    mc_v_se = (q_a - alpha * lp_a).std(1) / math.sqrt(n)
    exact_v = soft_value(q, log_pi, alpha)
    assert torch.all((exact_v - mc_v).abs() < 4 * mc_v_se), (exact_v, mc_v, mc_v_se)
    mc_j = (alpha * lp_a - q_a).mean()
    assert abs(policy_loss(q, log_pi, alpha).item() - mc_j.item()) < 4 * mc_v_se.max().item()
    torch.testing.assert_close(entropy(log_pi), -lp_a.mean(1), atol=0.02, rtol=0)
    # The policy gradient of the exact loss equals the score-function (REINFORCE) estimate's mean.
    logits = torch.randn(1, 4, generator=g, requires_grad=True)
    lp = torch.log_softmax(logits, -1)
    exact_grad = torch.autograd.grad(policy_loss(q[:1], lp, alpha), logits)[0]
    a = torch.multinomial(lp.detach().exp(), n, replacement=True, generator=g)[0]
    lp2 = torch.log_softmax(logits, -1)[0]
    # d/dtheta E_a[f(a)] with f = alpha log pi - Q: E[f grad log pi] + E[alpha grad log pi] (the second is 0).
    f = (alpha * lp2.detach() - q[0])[a]
    sf = torch.autograd.grad((f * lp2[a]).mean(), logits)[0]
    torch.testing.assert_close(exact_grad, sf, atol=0.05, rtol=0)


def test_temperature_moves_toward_the_target_entropy() -> None:
    cfg = DiscreteSACConfig(hidden=(16,), alpha_lr=0.05, warmup_steps=0)
    learner = DiscreteSAC(3, 4, cfg)
    assert learner.target_entropy == pytest.approx(0.89 * math.log(4))

    def batch() -> Batch:
        return Batch(obs=torch.randn(32, 3), action=torch.randint(0, 4, (32,)), reward=torch.randn(32),
                     next_obs=torch.randn(32, 3), discount=torch.full((32,), 0.99), weight=torch.ones(32),
                     index=torch.arange(32), is_demo=torch.zeros(32, dtype=torch.bool))
    # A near-deterministic actor (entropy << target): alpha must grow.
    with torch.no_grad():
        learner.actor[-1].bias.copy_(torch.tensor([20.0, 0, 0, 0]))
        learner.actor[-1].weight.zero_()
    a0 = learner.alpha.item()
    learner.actor_opt = torch.optim.SGD(learner.actor.parameters(), lr=0.0)  # hold the actor still
    for _ in range(5):
        m, _ = learner.update(batch())
    assert m["entropy"] < learner.target_entropy and learner.alpha.item() > a0
    # A uniform actor (entropy log 4 > target): alpha must shrink.
    with torch.no_grad():
        learner.actor[-1].bias.zero_()
    learner.alpha_opt = torch.optim.Adam([learner.log_alpha], lr=0.05)  # no momentum from the first phase
    a1 = learner.alpha.item()
    for _ in range(5):
        learner.update(batch())
    assert learner.alpha.item() < a1


def test_continuous_env_is_refused_with_one_line_and_exit_2(tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, "-m", "roborl", "train", "configs/sac_discrete_cartpole.yaml",
                        "env.id=Pendulum-v1", f"run.dir={tmp_path / 'run'}"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Discrete" in r.stderr and "Pendulum-v1" in r.stderr


CARTPOLE = ["env.id=CartPole-v1", "train.algo=sac_discrete", "store.sampler.demo_fraction=0", "train.eval_every=0",
            "train.log_every=500", "sac_discrete.hidden=[64,64]", "sac_discrete.batch_size=64"]


def test_cartpole_runs_resumes_and_evals_through_the_runner(tmp_path: Path) -> None:
    from roborl.checkpoint import load_checkpoint
    from roborl.learners import load_policy
    from roborl.runners.off_policy import OffPolicyRunner

    cfg = C.load(RunConfig, None, CARTPOLE + [f"run.dir={tmp_path}", "train.total_steps=300",
                                              "train.checkpoint_every=300", "train.eval_episodes=2",
                                              "sac_discrete.warmup_steps=100"])
    r = OffPolicyRunner(cfg, tmp_path)
    summary = r.train(quiet=True)
    assert summary["env_steps"] == 300 and summary["eval_return"] > 0
    b = r.sampler.sample(8, gamma=0.99, step=r.step)
    assert b.action.shape == (8,) and set(b.action.long().tolist()) <= {0, 1}
    obs = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
    acted = r.learner.act(obs, deterministic=True)
    r.close()
    state, meta, _ = load_checkpoint(tmp_path)
    assert meta["algo"] == "sac_discrete" and meta["act_shape"] == [2]
    torch.testing.assert_close(torch.as_tensor(load_policy(state, meta).act(obs)), acted, rtol=0, atol=0)
    r2 = OffPolicyRunner(cfg, tmp_path)
    assert r2.try_resume() and r2.step == 300
    r2.close()
    # `roborl eval` on the run directory plays Discrete actions through the env stack.
    ev = subprocess.run([sys.executable, "-m", "roborl", "eval", str(tmp_path), "--episodes", "1", "--json"],
                        capture_output=True, text=True, timeout=120)
    assert ev.returncode == 0, ev.stderr
    assert '"episodes": 1' in ev.stdout


@pytest.mark.slow
def test_cartpole_improves(tmp_path: Path) -> None:
    from roborl.eval.episodes import run_episodes
    from roborl.runners.off_policy import OffPolicyRunner

    cfg = C.load(RunConfig, None, CARTPOLE + [f"run.dir={tmp_path}", "train.total_steps=6000",
                                              "train.checkpoint_every=100000", "train.eval_episodes=5",
                                              "sac_discrete.warmup_steps=1000"])
    runner = OffPolicyRunner(cfg, tmp_path)
    before = run_episodes(runner.learner.as_policy(), cfg.env, 5, seed=123).return_mean
    runner.train(quiet=True)
    after = run_episodes(runner.learner.as_policy(), cfg.env, 5, seed=123).return_mean
    runner.close()
    assert after > before + 100, (before, after)

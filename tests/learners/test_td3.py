"""TD3 and DDPG: the deterministic policy gradient, TD3's three changes, a real Pendulum run, resume, eval."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from roborl import config as C
from roborl.batch import Batch
from roborl.learners.config import DDPGConfig, TD3Config
from roborl.learners.ddpg import DDPG
from roborl.learners.td3 import TD3, clipped_double_q_target, smoothed_target_action
from roborl.runners.config import RunConfig


def _batch(b: int, o: int, a: int, seed: int = 0) -> Batch:
    g = torch.Generator().manual_seed(seed)
    return Batch(obs=torch.randn(b, o, generator=g), action=torch.rand(b, a, generator=g) * 2 - 1,
                 reward=torch.randn(b, generator=g), next_obs=torch.randn(b, o, generator=g),
                 discount=torch.full((b,), 0.99), weight=torch.ones(b), index=torch.arange(b),
                 is_demo=torch.zeros(b, dtype=torch.bool))


@pytest.mark.parametrize("cls,cfg", [(TD3, TD3Config(hidden=(16, 16))), (DDPG, DDPGConfig(hidden=(16, 16)))])
def test_actor_gradient_is_the_deterministic_policy_gradient(cls: type, cfg: object) -> None:
    """autograd of -Q(s, mu(s)) == central finite differences over every actor weight,
    and == the chain rule grad_a Q |_{a=mu(s)} . d mu / d theta written out (Silver et al. 2014)."""
    torch.manual_seed(0)
    learner = cls(4, 2, cfg)  # float32: the output layers always run in float32 (networks.fp32_head)
    obs = torch.randn(8, 4)
    params = list(learner.actor.parameters())
    grads = torch.autograd.grad(learner.actor_loss(obs), params)
    # Chain rule: d/dtheta [-mean_b Q(s_b, mu(s_b))] = -mean_b (dQ/da)(s_b, mu(s_b)) . dmu(s_b)/dtheta
    a = learner.actor(obs).detach().requires_grad_(True)
    dq_da = torch.autograd.grad(learner.critic(obs, a)[0].sum(), a)[0]  # [B, A]
    chain = torch.autograd.grad(learner.actor(obs), params, grad_outputs=-dq_da / obs.shape[0])
    eps = 1e-3
    checked = 0
    with torch.no_grad():
        for p, g, gc in zip(params, grads, chain):
            torch.testing.assert_close(g, gc, rtol=1e-5, atol=1e-7)
            flat = p.view(-1)
            for i in range(flat.numel()):
                old = flat[i].item()
                flat[i] = old + eps
                up = learner.actor_loss(obs).item()
                flat[i] = old - eps
                down = learner.actor_loss(obs).item()
                flat[i] = old
                fd, ad = (up - down) / (2 * eps), g.view(-1)[i].item()
                assert abs(fd - ad) < 2e-3 + 2e-2 * abs(ad), (i, fd, ad)
                checked += abs(ad) > 1e-3
    assert checked > 20  # the comparison is not vacuous


def test_target_is_the_min_over_target_critics() -> None:
    reward, discount = torch.tensor([1.0, 0.0, 2.0]), torch.tensor([0.9, 0.9, 0.0])
    q_next = torch.tensor([[5.0, -1.0, 3.0], [4.0, 2.0, 7.0]])
    torch.testing.assert_close(clipped_double_q_target(reward, discount, q_next),
                               torch.tensor([1.0 + 0.9 * 4.0, 0.9 * -1.0, 2.0]))
    # The learner's own critic target uses it: with the target critics' weights set apart, y follows the lower one.
    torch.manual_seed(0)
    learner = TD3(3, 1, TD3Config(hidden=(8,), policy_noise=0.0))
    with torch.no_grad():
        last = learner.critic_target.net[-1]
        last.weight.zero_()
        last.bias[0].fill_(10.0)
        last.bias[1].fill_(-3.0)
    b = _batch(5, 3, 1)
    b.discount = torch.ones(5)
    b.reward = torch.zeros(5)
    learner.critic_opt = torch.optim.SGD(learner.critic.parameters(), lr=0.0)  # look, don't move
    _, td = learner.update(b)
    q = learner.critic(b.obs, b.action).detach()
    torch.testing.assert_close(td, (q - (-3.0)).abs().mean(0))


def test_target_policy_smoothing_noise_is_clipped_and_actions_stay_in_range() -> None:
    g = torch.Generator().manual_seed(0)
    mu = torch.zeros(100_000, 1)
    a = smoothed_target_action(mu, noise_std=1.0, noise_clip=0.5, generator=g)
    assert a.abs().max() <= 0.5 + 1e-7
    # Std 1 clipped at 0.5: about 62% of draws land on the clip boundary.
    assert 0.55 < (a.abs() >= 0.5 - 1e-7).float().mean() < 0.68
    # Unclipped inside: small noise passes through unchanged in distribution.
    small = smoothed_target_action(mu, noise_std=0.1, noise_clip=0.5, generator=g)
    assert abs(small.std().item() - 0.1) < 2e-3
    # Near the action bound the result is clipped to [-1, 1].
    edge = smoothed_target_action(torch.full((1000, 2), 0.9), 0.2, 0.5, generator=g)
    assert edge.max() <= 1.0 and edge.min() >= 0.4 - 1e-6 and (edge == 1.0).any()


def test_actor_and_targets_move_only_every_policy_delay_critic_steps() -> None:
    torch.manual_seed(0)
    learner = TD3(3, 2, TD3Config(hidden=(8,), policy_delay=3))
    snap = lambda m: [p.detach().clone() for p in m.parameters()]  # noqa: E731
    moved = lambda a, b: any(not torch.equal(x, y) for x, y in zip(a, b))  # noqa: E731
    history = []
    for k in range(1, 7):
        actor, critic, a_t, c_t = snap(learner.actor), snap(learner.critic), snap(learner.actor_target), snap(learner.critic_target)
        metrics, _ = learner.update(_batch(16, 3, 2, seed=k))
        assert moved(critic, snap(learner.critic))  # the critic learns every step
        history.append((moved(actor, snap(learner.actor)), moved(a_t, snap(learner.actor_target)),
                        moved(c_t, snap(learner.critic_target)), "actor_loss" in metrics))
    assert history == [(k % 3 == 0,) * 4 for k in range(1, 7)]
    # DDPG: every step.
    d = DDPG(3, 2, DDPGConfig(hidden=(8,)))
    before = snap(d.actor)
    d.update(_batch(16, 3, 2))
    assert moved(before, snap(d.actor))


def test_bad_action_space_is_one_line_and_exit_2(tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, "-m", "roborl", "train", "configs/td3_pendulum.yaml", "env.id=CartPole-v1",
                        f"run.dir={tmp_path / 'run'}", "train.total_steps=2000"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "CartPole-v1" in r.stderr


PENDULUM = ["env.id=Pendulum-v1", "store.sampler.demo_fraction=0", "train.eval_episodes=3", "train.log_every=500",
            "train.eval_every=0", "train.checkpoint_every=100000"]


@pytest.mark.slow
@pytest.mark.parametrize("algo", ["td3", "ddpg"])
def test_pendulum_improves_through_the_runner(tmp_path: Path, algo: str) -> None:
    from roborl.eval.episodes import run_episodes
    from roborl.runners.off_policy import OffPolicyRunner

    cfg = C.load(RunConfig, None, PENDULUM + [f"run.dir={tmp_path}", f"train.algo={algo}", "train.total_steps=4000",
                                             f"{algo}.hidden=[64,64]", f"{algo}.batch_size=64", f"{algo}.warmup_steps=500",
                                             f"{algo}.actor_lr=1e-3", f"{algo}.critic_lr=1e-3"])
    runner = OffPolicyRunner(cfg, tmp_path)
    before = run_episodes(runner.learner.as_policy(), cfg.env, 5, seed=123).return_mean
    summary = runner.train(quiet=True)
    after = run_episodes(runner.learner.as_policy(), cfg.env, 5, seed=123).return_mean
    runner.close()
    assert after > before + 300, (before, after, summary)


@pytest.mark.parametrize("algo", ["td3", "ddpg"])
def test_resume_is_exact_and_eval_rebuilds_the_policy(tmp_path: Path, algo: str) -> None:
    from roborl.checkpoint import load_checkpoint
    from roborl.learners import load_policy
    from roborl.runners.off_policy import OffPolicyRunner

    cfg = C.load(RunConfig, None, PENDULUM + [f"run.dir={tmp_path}", f"train.algo={algo}", "train.total_steps=400",
                                             "train.checkpoint_every=400", f"{algo}.hidden=[32,32]",
                                             f"{algo}.batch_size=32", f"{algo}.warmup_steps=100"])
    r1 = OffPolicyRunner(cfg, tmp_path)
    r1.train(quiet=True)
    obs = np.random.default_rng(0).normal(size=(4, 3)).astype(np.float32)
    b1 = r1.sampler.sample(32, gamma=0.99, step=r1.step)
    r1.learner.update(b1)
    r1.learner.update(b1)
    p1 = [p.detach().clone() for p in r1.learner.parameters()]
    r1.close()
    r2 = OffPolicyRunner(cfg, tmp_path)
    assert r2.try_resume() and r2.step == 400
    acted = r2.learner.act(obs, deterministic=True)
    b2 = r2.sampler.sample(32, gamma=0.99, step=r2.step)
    # (400 steps = two whole Pendulum episodes, so the store holds no open episode.) TD3 smoothing draws from the global torch RNG, restored by the checkpoint.
    r2.learner.update(b2)
    r2.learner.update(b2)
    for a, b in zip(p1, r2.learner.parameters()):
        torch.testing.assert_close(a, b.detach(), rtol=0, atol=0)
    r2.close()
    # `roborl eval`'s loader rebuilds the same deterministic policy from the checkpoint alone.
    state, meta, _ = load_checkpoint(tmp_path)
    pol = load_policy(state, meta)
    torch.testing.assert_close(torch.as_tensor(pol.act(obs)), acted, rtol=0, atol=0)

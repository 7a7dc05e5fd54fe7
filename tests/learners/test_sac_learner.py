"""SAC learner unit tests: tanh log-prob, targets, residual action, a learning sanity check."""
from __future__ import annotations

import math
import types

import numpy as np
import pytest
import torch

from roborl.config import build
from roborl.learners.networks import CriticEnsemble, TanhGaussianActor, squashed_log_prob
from roborl.learners.sac import SAC, SACConfig, soft_td_target


def test_tanh_log_prob_matches_numerical_density() -> None:
    """Integrate exp(log pi) of a 1-D tanh-Gaussian over (-1, 1) -> 1, and compare with a histogram."""
    mu, log_std = torch.tensor([[0.7]]), torch.tensor([[math.log(0.9)]])
    a = torch.linspace(-0.9999, 0.9999, 200_001).unsqueeze(1)
    u = torch.atanh(a)
    dens = squashed_log_prob(u, mu.expand_as(u), log_std.expand_as(u)).exp()
    integral = torch.trapezoid(dens, a.squeeze(1)).item()
    assert integral == pytest.approx(1.0, abs=2e-3)
    # Monte Carlo: empirical histogram density vs the formula at bin centres.
    g = torch.Generator().manual_seed(0)
    samples = torch.tanh(mu + log_std.exp() * torch.randn(400_000, 1, generator=g)).squeeze(1)
    hist, edges = np.histogram(samples.numpy(), bins=40, range=(-0.95, 0.95))
    width = edges[1] - edges[0]
    emp = hist / (len(samples) * width)
    centres = torch.tensor((edges[:-1] + edges[1:]) / 2, dtype=torch.float32).unsqueeze(1)
    formula = squashed_log_prob(torch.atanh(centres), mu.expand_as(centres), log_std.expand_as(centres)).exp().numpy()
    np.testing.assert_allclose(emp, formula, rtol=0.06, atol=0.02)


def test_actor_log_prob_is_consistent_with_formula() -> None:
    torch.manual_seed(0)
    actor = TanhGaussianActor(3, 2, (16, 16))
    obs = torch.randn(5, 3)
    a, logp, _ = actor(obs)
    mu, log_std = actor.dist_params(obs)
    ref = torch.distributions.Normal(mu, log_std.exp()).log_prob(torch.atanh(a.clamp(-0.999999, 0.999999))).sum(-1)
    ref = ref - torch.log(1 - a.pow(2) + 1e-12).sum(-1)
    np.testing.assert_allclose(logp.detach().numpy(), ref.detach().numpy(), rtol=1e-3, atol=1e-3)


def test_target_terminal_vs_truncation() -> None:
    """A terminal (discount 0) does not bootstrap; a truncation (discount gamma) does."""
    r = torch.tensor([1.0, 1.0])
    q_next = torch.tensor([10.0, 10.0])
    logp = torch.tensor([-1.0, -1.0])
    alpha = 0.5
    disc = torch.tensor([0.0, 0.99])  # [terminal, truncated]
    y = soft_td_target(r, disc, q_next, logp, alpha)
    assert y[0].item() == pytest.approx(1.0)
    assert y[1].item() == pytest.approx(1.0 + 0.99 * (10.0 + 0.5))


def test_residual_action_is_clipped_sum() -> None:
    torch.manual_seed(0)
    cfg = build(SACConfig, {"residual": True, "residual_beta": 0.3, "hidden": [32, 32]})
    learner = SAC(4, 3, cfg)
    obs = torch.randn(64, 4) * 3
    with torch.no_grad():
        final, _, res = learner.policy(obs, deterministic=True)
        base = learner.base(obs)
    expected = (base + 0.3 * res).clamp(-1, 1)
    torch.testing.assert_close(final, expected)
    assert final.abs().max() <= 1.0


def test_ensemble_subset_and_layernorm_update_runs() -> None:
    torch.manual_seed(0)
    cfg = build(SACConfig, {"n_critics": 5, "critic_subset": 2, "layer_norm": True, "hidden": [32, 32],
                            "batch_size": 16, "grad_clip": 1.0, "bc_weight": 1.0})
    learner = SAC(4, 2, cfg)
    b = types.SimpleNamespace(obs=torch.randn(16, 4), action=torch.rand(16, 2) * 2 - 1, reward=torch.randn(16),
                              next_obs=torch.randn(16, 4), discount=torch.full((16,), 0.99), weight=torch.ones(16),
                              is_demo=torch.rand(16) > 0.5)
    metrics, td = learner.update(b)
    assert td.shape == (16,)
    assert set(metrics) >= {"critic_loss", "actor_loss", "alpha", "q_mean", "bc_loss"}
    assert all(torch.isfinite(v) for v in metrics.values())


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("layer_norm", [False, True])
def test_ensemble_members_forward_equals_selecting_from_all(precision: str, layer_norm: bool) -> None:
    """The target's subset forward runs only k members: the same Q values as running all N and selecting."""
    torch.manual_seed(0)
    ens = CriticEnsemble(10, 6, 2, (32, 32), layer_norm=layer_norm)
    with torch.no_grad():  # non-trivial LayerNorm affines, different per member
        for p in ens.parameters():
            p.add_(0.1 * torch.randn_like(p))
    obs, act = torch.randn(64, 6), torch.rand(64, 2) * 2 - 1
    idx = torch.tensor([7, 2])
    ctx = torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16" else torch.autocast("cpu", enabled=False)
    with torch.no_grad(), ctx:
        full = ens(obs, act)
        sub = ens(obs, act, members=idx)
    assert full.shape == (10, 64) and sub.shape == (2, 64) and sub.dtype == torch.float32
    tol = {"atol": 1e-5, "rtol": 1e-5} if precision == "fp32" else {"atol": 2e-2, "rtol": 2e-2}
    torch.testing.assert_close(sub, full.index_select(0, idx), **tol)
    assert not torch.allclose(sub[0], sub[1])  # two different members, not one repeated


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_critic_fits_a_fixed_target(precision: str) -> None:
    """With discount 0 the critic regresses the reward: the loss must fall by a lot (also in bf16 autocast)."""
    torch.manual_seed(0)
    cfg = build(SACConfig, {"hidden": [64, 64], "lr": 1e-3, "precision": precision})
    learner = SAC(3, 1, cfg)
    obs = torch.randn(256, 3)
    act = torch.rand(256, 1) * 2 - 1
    rew = obs[:, 0] * act[:, 0]
    b = types.SimpleNamespace(obs=obs, action=act, reward=rew, next_obs=obs, discount=torch.zeros(256),
                              weight=torch.ones(256), is_demo=torch.zeros(256, dtype=torch.bool))
    first = learner.update(b)[0]["critic_loss"].item()
    for _ in range(300):
        last = learner.update(b)[0]["critic_loss"].item()
    assert last < 0.1 * first


def test_metric_accumulator_averages_each_key_over_its_own_count() -> None:
    from roborl.runs import Accumulator

    acc = Accumulator()
    acc.add({"critic_loss": torch.tensor(2.0), "actor_loss": torch.tensor(4.0)})
    acc.add({"critic_loss": torch.tensor(4.0)})  # an update without an actor step (actor_every=2)
    out = acc.pop()
    assert out == {"critic_loss": 3.0, "actor_loss": 4.0}
    assert acc.pop() == {}


def test_bf16_keeps_outputs_targets_and_weights_float32() -> None:
    """precision=bf16 autocasts the hidden matmuls only: Q values, log-probs, TD errors and the
    parameters/Adam state stay float32, and the result stays close to the float32 update."""
    torch.manual_seed(0)
    b = types.SimpleNamespace(obs=torch.randn(32, 5), action=torch.rand(32, 2) * 2 - 1, reward=torch.randn(32),
                              next_obs=torch.randn(32, 5), discount=torch.full((32,), 0.99), weight=torch.ones(32),
                              is_demo=torch.zeros(32, dtype=torch.bool))
    learners = {}
    for precision in ("fp32", "bf16"):
        torch.manual_seed(1)
        learners[precision] = SAC(5, 2, build(SACConfig, {"hidden": [64, 64], "precision": precision, "residual": True}))
    lb = learners["bf16"]
    with lb._autocast():
        q = lb.critic(b.obs, b.action)
        a, logp, _ = lb.policy(b.obs)
    assert q.dtype == torch.float32 and logp.dtype == torch.float32 and a.dtype == torch.float32
    q32 = learners["fp32"].critic(b.obs, b.action)
    torch.testing.assert_close(q, q32, atol=0.05, rtol=0.05)  # bf16 hidden layers: ~3 significant digits
    for learner in learners.values():
        torch.manual_seed(2)
        metrics, td = learner.update(b)
        assert td.dtype == torch.float32 and all(torch.isfinite(v) for v in metrics.values())
    assert all(p.dtype == torch.float32 for p in lb.parameters())
    assert all(t.dtype == torch.float32 for st in lb.critic_opt.state.values() for t in st.values() if t.dim() > 0)

"""SAC with a value network (sac.value_net): V's target is the soft value E_a~pi[min Q(s, a) - alpha log pi(a|s)],
checked against quadrature over the Gaussian pre-squash sample; the critic bootstraps from the target V'."""
from __future__ import annotations

import math

import torch

from roborl import config as C
from roborl.batch import Batch
from roborl.learners.config import SACConfig
from roborl.learners.networks import squashed_log_prob
from roborl.learners.sac import SAC

OBS = 3


def _sac(**kw) -> SAC:
    torch.manual_seed(0)
    return SAC(OBS, 1, C.build(SACConfig, {"value_net": True, "hidden": [32, 32], "init_alpha": 0.5, **kw}))


def _soft_value_by_quadrature(sac: SAC, obs: torch.Tensor, n: int = 20001) -> torch.Tensor:
    """E_{u~N(mu, std)}[min Q(s, tanh u) - alpha log pi(tanh u|s)] by the trapezoid rule on mu +- 9 std: obs [B, O] -> [B]."""
    with torch.no_grad():
        mu, log_std = sac.actor.dist_params(obs)  # [B, 1]
        std = log_std.exp()
        z = torch.linspace(-9.0, 9.0, n, dtype=torch.float64)
        out = []
        for b in range(obs.shape[0]):
            u = (mu[b, 0].double() + std[b, 0].double() * z).float()[:, None]  # [n, 1]
            o = obs[b].expand(n, -1)
            logp = squashed_log_prob(u, mu[b].expand(n, -1), log_std[b].expand(n, -1))
            f = (sac.critic(o, torch.tanh(u)).min(0).values - sac.alpha * logp).double()
            w = torch.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)
            out.append(torch.trapezoid(f * w, z))
        return torch.stack(out).float()


def test_value_target_is_the_soft_value_monte_carlo() -> None:
    sac = _sac()
    obs = torch.randn(4, OBS, generator=torch.Generator().manual_seed(1))
    truth = _soft_value_by_quadrature(sac, obs)
    k = 40_000
    samples = sac.soft_value_target(obs.repeat(k, 1)).reshape(k, 4)  # [k, B]: one fresh a ~ pi per row
    mean, se = samples.mean(0), samples.std(0) / math.sqrt(k)
    assert torch.all((mean - truth).abs() < 4 * se + 1e-4), (mean, truth, se)


def test_value_regression_reaches_the_soft_value_and_the_critic_bootstraps_from_v_target() -> None:
    sac = _sac(lr=3e-3)
    obs = torch.randn(8, OBS, generator=torch.Generator().manual_seed(2))
    truth = _soft_value_by_quadrature(sac, obs)
    for _ in range(1500):
        sac._value_step(obs.repeat(32, 1))
    with torch.no_grad():
        v = sac.critic_v(obs)[:, 0]
    assert torch.allclose(v, truth, atol=0.05 * truth.abs().max().item() + 0.02), (v, truth)
    # The critic's TD target is r + discount * V'(s') (and not the soft Q target): the returned |TD| says so.
    B = 64
    g = torch.Generator().manual_seed(3)
    batch = Batch(obs=torch.randn(B, OBS, generator=g), action=torch.rand(B, 1, generator=g) * 2 - 1,
                  reward=torch.randn(B, generator=g), next_obs=torch.randn(B, OBS, generator=g),
                  discount=torch.full((B,), 0.5), weight=torch.ones(B), index=torch.arange(B),
                  is_demo=torch.zeros(B, dtype=torch.bool))
    sac.normalizer.fit(batch.obs)
    with torch.no_grad():
        sac.critic_v_target[-1].bias.add_(5.0)  # make V' differ clearly from the soft Q target
        q = sac.critic(sac.normalizer(batch.obs), batch.action)
        y = batch.reward + 0.5 * sac.critic_v_target(sac.normalizer(batch.next_obs))[:, 0]
    metrics, td_abs = sac.update(batch)
    assert "value_loss" in metrics
    torch.testing.assert_close(td_abs, (q - y).abs().mean(0), rtol=1e-5, atol=1e-5)


def test_value_nets_are_checkpointed_but_not_sent_to_actors() -> None:
    a, b = _sac(), _sac()
    with torch.no_grad():
        for p in a.critic_v.parameters():
            p.add_(1.0)
    st = a.full_state()
    assert "value_opt" in st and any(k.startswith("critic_v.") for k in st["model"])
    b.load_full_state(st)
    for p, q in zip(a.critic_v.parameters(), b.critic_v.parameters()):
        torch.testing.assert_close(p, q)
    assert not any(k.startswith("critic_v") for k in a.acting_state())

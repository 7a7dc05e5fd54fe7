"""REINFORCE (Williams 1992): the score-function policy gradient and its variance reducers.

For a trajectory tau = (s_0, a_0, r_0, ..., s_{T-1}, a_{T-1}, r_{T-1}) the policy gradient lemma gives

    grad J(theta) = E_tau [ sum_t grad log pi(a_t|s_t) * Psi_t ]

with any of these weights Psi_t, all unbiased:

- ``"return"``:       Psi_t = G_0 = sum_k gamma^k r_k          (the whole return, every step)
- ``"reward_to_go"``: Psi_t = G_t = sum_{k>=t} gamma^(k-t) r_k  (causality: a_t cannot change r_k, k < t)
- ``"baseline"``:     Psi_t = G_t - b(s_t)                      (E[grad log pi(a|s) b(s)] = 0 for any b(s))

Reward-to-go drops terms whose expectation is zero; a baseline near V(s_t) centres the weights.
Both leave the mean unchanged and lower the variance (measured in tests/learners/test_reinforce.py).
This module holds the estimator (losses are written as surrogate scalars whose autograd gradient
is the estimate) and :class:`Reinforce`, the learner the on-policy runner trains with
``train.algo=reinforce`` (config :class:`roborl.learners.config.ReinforceConfig`).
"""
from __future__ import annotations

from typing import Any, Literal

import torch

from roborl.learners.actor_critic import GaussianPGLearner, load_policy, standardize
from roborl.learners.base import Rollout
from roborl.learners.config import ReinforceConfig
from roborl.learners.ppo import PPOPolicy, compute_gae, gaussian_entropy, gaussian_log_prob

Weighting = Literal["return", "reward_to_go", "baseline"]


def discounted_returns(rewards: torch.Tensor, gamma: float, dones: torch.Tensor | None = None) -> torch.Tensor:
    """G_t = r_t + gamma (1 - done_t) G_{t+1}: rewards, dones [T, ...] -> G [T, ...] (reward-to-go).

    ``dones[t] = 1`` where the episode ended at step t, so returns never leak across episodes.
    """
    out = torch.empty_like(rewards)
    g = torch.zeros_like(rewards[0])
    for t in range(rewards.shape[0] - 1, -1, -1):
        keep = 1.0 if dones is None else 1.0 - dones[t].to(rewards.dtype)
        g = rewards[t] + gamma * keep * g
        out[t] = g
    return out


def reinforce_weights(rewards: torch.Tensor, gamma: float, weighting: Weighting,
                      baseline: torch.Tensor | None = None) -> torch.Tensor:
    """Psi_t for one episode: rewards [T] (and baseline b(s_t) [T] for ``"baseline"``) -> [T].

    ``"return"`` weights every step with G_0 discounted to t (gamma^t G_0 would be the exact
    discounted objective's weight; with gamma = 1 both are G_0).
    """
    g = discounted_returns(rewards, gamma)
    if weighting == "return":
        return g[0].expand_as(g).clone()
    if weighting == "reward_to_go":
        return g
    if baseline is None:
        raise ValueError("weighting 'baseline' needs baseline values b(s_t) [T]")
    return g - baseline


def reinforce_loss(logp: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Surrogate -sum_t log pi(a_t|s_t) Psi_t (mean over a leading episode axis if any): logp, weights [..., T] -> 0-d.

    Its gradient is minus the REINFORCE estimate of grad J; the weights are constants (detached).
    """
    return -(logp * weights.detach()).sum(-1).mean()


class Reinforce(GaussianPGLearner):
    """REINFORCE on the runner's rollouts: one policy-gradient step per rollout, weights Psi_t detached.

    ``weighting="reward_to_go"``: Psi_t = G_t, summed within the rollout (no critic; dones stop it),
    ``"baseline"``: Psi_t = G_t - V(s_t), G_t the Monte-Carlo return (GAE with lambda = 1: it
    bootstraps from V only where the rollout cuts an episode or a time limit truncates it), and V is
    regressed on G_t (the same step plus ``value_epochs`` critic-only steps).
    """

    cfg: ReinforceConfig

    def update(self, r: Rollout) -> dict[str, float]:
        cfg, m = self.cfg, self.model
        if cfg.weighting == "baseline":
            psi, ret = compute_gae(r.rewards, r.values, r.next_values, r.terminated, r.dones, cfg.gamma, 1.0)
        else:
            ret = discounted_returns(r.rewards, cfg.gamma, r.dones)  # [T, N]
            psi = ret
        x, u, _, _ = self.flat_rollout(r)
        B = u.shape[0]
        psi, ret = psi.reshape(B), ret.reshape(B)
        if cfg.norm_adv:
            psi = standardize(psi)
        mu, v = m.plain(x)
        logp = gaussian_log_prob(u, mu, m.log_std)
        pg = -(logp * psi.detach()).mean()  # reinforce_loss with the sum over t replaced by a mean over all B samples
        loss = pg - cfg.ent_coef * gaussian_entropy(m.log_std)
        v_loss = (v - ret).pow(2).mean()
        if cfg.weighting == "baseline":
            loss = loss + cfg.vf_coef * v_loss
        self._step(loss)
        if cfg.weighting == "baseline":
            for _ in range(cfg.value_epochs):
                v_loss = (m.plain(x)[1] - ret).pow(2).mean()
                self._step(cfg.vf_coef * v_loss)
        return {"loss/policy": float(pg.detach()), "loss/value": float(v_loss.detach()), "entropy": float(gaussian_entropy(m.log_std.detach())),
                "std": float(m.log_std.detach().exp().mean()), "lr": self.lr}

    def _step(self, loss: torch.Tensor) -> None:
        self.optim.zero_grad(set_to_none=True)
        loss.backward()
        if self.cfg.max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.max_grad_norm)
        self.optim.step()


def policy_from_checkpoint(state: dict[str, Any], meta: dict[str, Any], device: str = "cpu") -> PPOPolicy:
    return load_policy(state, meta, device, "reinforce", ReinforceConfig)

"""REINFORCE (Williams 1992): the score-function policy gradient and its variance reducers.

For a trajectory tau = (s_0, a_0, r_0, ..., s_{T-1}, a_{T-1}, r_{T-1}) the policy gradient lemma gives

    grad J(theta) = E_tau [ sum_t grad log pi(a_t|s_t) * Psi_t ]

with any of these weights Psi_t, all unbiased:

- ``"return"``:       Psi_t = G_0 = sum_k gamma^k r_k          (the whole return, every step)
- ``"reward_to_go"``: Psi_t = G_t = sum_{k>=t} gamma^(k-t) r_k  (causality: a_t cannot change r_k, k < t)
- ``"baseline"``:     Psi_t = G_t - b(s_t)                      (E[grad log pi(a|s) b(s)] = 0 for any b(s))

Reward-to-go drops terms whose expectation is zero; a baseline near V(s_t) centres the weights.
Both leave the mean unchanged and lower the variance (measured in tests/learners/test_reinforce.py).
This module holds the estimator; losses are written as surrogate scalars whose autograd gradient
is the estimate.
"""
from __future__ import annotations

from typing import Literal

import torch

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

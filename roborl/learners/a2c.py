"""A2C (Mnih et al. 2016, synchronous advantage actor-critic): one gradient step per short rollout.

On a rollout of T steps of N envs (``T*N`` samples, T small: SB3 uses 5), with advantages
A_t from GAE (lambda = 1 gives the n-step return up to the rollout's end, bootstrapped from V):

    L = -mean_t[log pi(u_t|s_t) A_t] + vf_coef * mean_t[(V(s_t) - R_t)^2] - ent_coef * H[pi],
    R_t = A_t + V(s_t),

minimised with one RMSprop (or Adam) step. Unlike PPO there is no importance ratio: the data is
always from the current policy, so each rollout is used for exactly one step.
"""
from __future__ import annotations

from typing import Any

import torch

from roborl.learners.actor_critic import GaussianPGLearner, load_policy
from roborl.learners.base import Rollout
from roborl.learners.config import A2CConfig
from roborl.learners.ppo import PPOPolicy, gaussian_entropy, gaussian_log_prob

__all__ = ["A2C", "a2c_loss", "policy_from_checkpoint"]


def a2c_loss(logp: torch.Tensor, adv: torch.Tensor, v: torch.Tensor, ret: torch.Tensor,
             vf_coef: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """logp, adv, v, ret: [B] -> (total, policy loss, value loss); advantages and returns are constants."""
    pg = -(logp * adv.detach()).mean()
    v_loss = (v - ret.detach()).pow(2).mean()
    return pg + vf_coef * v_loss, pg, v_loss


class A2C(GaussianPGLearner):
    """A2C learner (``train.algo=a2c``; config :class:`roborl.learners.config.A2CConfig`)."""

    cfg: A2CConfig

    def make_optimizer(self) -> torch.optim.Optimizer:
        if self.cfg.optimizer == "rmsprop":  # SB3's A2C: RMSprop(alpha=0.99, eps=1e-5)
            return torch.optim.RMSprop(self.model.parameters(), lr=self.cfg.lr, alpha=0.99, eps=1e-5)
        return torch.optim.Adam(self.model.parameters(), lr=self.cfg.lr, eps=1e-5)

    def update(self, r: Rollout) -> dict[str, float]:
        cfg, m = self.cfg, self.model
        x, u, _, _, adv, ret = self.gae_batch(r)
        B = u.shape[0]
        mu, v = m.plain(x)
        logp = gaussian_log_prob(u, mu, m.log_std)
        loss, pg, v_loss = a2c_loss(logp, adv, v, ret, cfg.vf_coef)
        ent = gaussian_entropy(m.log_std)
        loss = loss - cfg.ent_coef * ent
        self.optim.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(m.parameters(), cfg.max_grad_norm)
        self.optim.step()
        with torch.no_grad():
            ev = float(1.0 - (ret - v).var() / (ret.var() + 1e-8)) if B > 1 else 0.0
        return {"loss/policy": float(pg.detach()), "loss/value": float(v_loss.detach()), "entropy": float(ent.detach()),
                "explained_variance": ev, "std": float(m.log_std.detach().exp().mean()), "lr": self.lr}


def policy_from_checkpoint(state: dict[str, Any], meta: dict[str, Any], device: str = "cpu") -> PPOPolicy:
    return load_policy(state, meta, device, "a2c", A2CConfig)

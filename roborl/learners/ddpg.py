"""DDPG, Deep Deterministic Policy Gradient (Lillicrap et al. 2016): losses and updates, read top to bottom.

One critic Q(s, a) fitted to y = r + gamma Q'(s', mu'(s')), one deterministic actor mu(s) moved
along the deterministic policy gradient grad_a Q(s, a)|_{a=mu(s)} grad_theta mu(s) (Silver et al.
2014), Polyak-averaged target networks for both. Exploration is Gaussian action noise (as CleanRL
and SB3; the paper's Ornstein-Uhlenbeck noise brings no gain on these tasks, Fujimoto et al. 2018).

The skeleton is copied from :mod:`roborl.learners.td3` on purpose (CleanRL style: one readable file
per method); TD3 is this file plus clipped double-Q, target smoothing and delayed actor updates.
The config (:class:`roborl.learners.config.DDPGConfig`) lives in a torch-free module.
"""
from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch
from torch import nn

from roborl.batch import Batch
from roborl.learners.base import SampleFn
from roborl.learners.config import DDPGConfig
from roborl.learners.state import LearnerState, config_from_meta
from roborl.learners.networks import CriticEnsemble, DeterministicPolicy, ObsNormalizer
from roborl.learners.td3 import TD3Policy


class DDPG(LearnerState, nn.Module):
    """DDPG with a deterministic tanh actor and one critic.

    Acting: ``act(obs [N, O]) -> [N, A]`` in [-1, 1], plus Gaussian exploration noise unless deterministic.
    Learning: ``update(batch) -> (metrics, td_abs [B])``; metrics are detached 0-d tensors.
    """

    def __init__(self, obs_dim: int, act_dim: int, cfg: DDPGConfig, device: str = "cpu") -> None:
        super().__init__()
        self.cfg = cfg
        self.obs_dim, self.act_dim = obs_dim, act_dim
        hidden = tuple(cfg.hidden)
        self.normalizer = ObsNormalizer(obs_dim)
        self.actor = DeterministicPolicy(obs_dim, act_dim, hidden)
        self.actor_target = copy.deepcopy(self.actor).requires_grad_(False)
        self.critic = CriticEnsemble(1, obs_dim, act_dim, hidden)  # an ensemble of one: q is [1, B]
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self._updates = 0
        self.to(device)
        self.device = torch.device(device)
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=cfg.actor_lr)
        self.critic_opt = torch.optim.Adam(self.critic.parameters(), lr=cfg.critic_lr)
        self._critic_params = list(self.critic.parameters())

    # ------------------------------------------------------------------ policy
    @torch.no_grad()
    def act(self, obs: torch.Tensor | np.ndarray, deterministic: bool = False) -> torch.Tensor:
        """Raw obs [N, O] -> mu(s) [N, A], plus N(0, exploration_noise^2) when exploring, clipped to [-1, 1]."""
        obs_t = torch.as_tensor(obs, dtype=torch.float32, device=self.device)
        a = self.actor(self.normalizer(obs_t))
        if not deterministic and self.cfg.exploration_noise > 0:
            a = (a + self.cfg.exploration_noise * torch.randn_like(a)).clamp(-1.0, 1.0)
        return a

    def set_progress(self, env_step: int) -> None:
        """No schedules."""

    # ------------------------------------------------------------------ RL update
    def update(self, batch: Batch) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """One critic step, one actor step, one Polyak step."""
        c = self.cfg
        obs = self.normalizer(batch.obs.float())
        next_obs = self.normalizer(batch.next_obs.float())
        action = batch.action.float()

        # --- critic: y = r + gamma^k (1 - terminal) Q'(s', mu'(s'))
        with torch.no_grad():
            q_next = self.critic_target(next_obs, self.actor_target(next_obs))[0]
            target = batch.reward * c.reward_scale + batch.discount * q_next
        q = self.critic(obs, action)[0]  # [B]
        td = q - target
        critic_loss = 0.5 * (batch.weight * td.pow(2)).mean()
        self.critic_opt.zero_grad(set_to_none=True)
        critic_loss.backward()
        if c.grad_clip is not None:
            nn.utils.clip_grad_norm_(self._critic_params, c.grad_clip)
        self.critic_opt.step()

        # --- actor: ascend Q(s, mu(s)) (the critic's weights are frozen for this backward)
        for p in self._critic_params:
            p.requires_grad_(False)
        actor_loss = self.actor_loss(obs)
        self.actor_opt.zero_grad(set_to_none=True)
        actor_loss.backward()
        if c.grad_clip is not None:
            nn.utils.clip_grad_norm_(self.actor.parameters(), c.grad_clip)
        self.actor_opt.step()
        for p in self._critic_params:
            p.requires_grad_(True)

        self._updates += 1
        self._polyak()
        metrics = {"critic_loss": critic_loss.detach(), "actor_loss": actor_loss.detach(),
                   "q_mean": q.detach().mean(), "td_abs": td.detach().abs().mean()}
        return metrics, td.detach().abs()

    def actor_loss(self, obs_n: torch.Tensor) -> torch.Tensor:
        """-Q(s, mu(s)) averaged over normalised obs [B, O]; its gradient is the deterministic policy gradient."""
        return -self.critic(obs_n, self.actor(obs_n))[0].mean()

    @torch.no_grad()
    def _polyak(self) -> None:
        for net, tgt in ((self.critic, self.critic_target), (self.actor, self.actor_target)):
            torch._foreach_lerp_(list(tgt.parameters()), list(net.parameters()), self.cfg.tau)

    # ------------------------------------------------------------------ start of learning
    def start_learning(self, sample: SampleFn, *, num_steps: int, num_demo_steps: int) -> None:
        """Fit the observation normaliser once on the data so far (kept fixed afterwards)."""
        if self.cfg.normalize_obs:
            b = sample(min(20_000, max(1, num_steps)), gamma=self.cfg.gamma, n_step=1, relabel=False)
            self.normalizer.fit(b.obs.float())

    # ------------------------------------------------------------------ state
    def as_policy(self) -> TD3Policy:
        return TD3Policy(self)


def policy_from_checkpoint(state: dict[str, Any], meta: dict[str, Any], device: str = "cpu") -> TD3Policy:
    """Rebuild the acting policy (normaliser, actor) from a checkpoint alone."""
    cfg = config_from_meta(DDPGConfig, meta, "ddpg")
    learner = DDPG(int(meta["obs_shape"][0]), int(meta["act_shape"][0]), cfg, device)
    learner.load_state_dict(state["learner"]["model"])
    return TD3Policy(learner)

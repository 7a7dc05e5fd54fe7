"""TD3, Twin Delayed DDPG (Fujimoto et al. 2018): losses and updates, read top to bottom.

Three changes on top of DDPG (:mod:`roborl.learners.ddpg`), each against Q over-estimation:

1. clipped double-Q: the target takes the min of two target critics;
2. target-policy smoothing: the target action is mu'(s') plus clipped Gaussian noise, so the
   critic cannot exploit a narrow peak of Q in action space;
3. delayed actor updates: actor and target networks move once per ``policy_delay`` critic steps.

The skeleton (normaliser, ensemble critic, Polyak, checkpoint state) is copied from
:mod:`roborl.learners.sac` on purpose, CleanRL style: one file per method, readable alone.
The config (:class:`roborl.learners.config.TD3Config`) lives in a torch-free module.
"""
from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch
from torch import nn

from roborl.batch import Batch
from roborl.learners.base import SampleFn
from roborl.learners.config import TD3Config
from roborl.learners.state import LearnerState, config_from_meta
from roborl.learners.networks import CriticEnsemble, DeterministicPolicy, ObsNormalizer


def smoothed_target_action(mu_next: torch.Tensor, noise_std: float, noise_clip: float,
                           generator: torch.Generator | None = None) -> torch.Tensor:
    """a' = clip(mu'(s') + clip(eps, -c, c), -1, 1), eps ~ N(0, sigma^2): [B, A] -> [B, A] (TD3 eq. 14)."""
    eps = torch.randn(mu_next.shape, device=mu_next.device, dtype=mu_next.dtype, generator=generator)
    return (mu_next + (eps * noise_std).clamp(-noise_clip, noise_clip)).clamp(-1.0, 1.0)


def clipped_double_q_target(reward: torch.Tensor, discount: torch.Tensor, q_next: torch.Tensor) -> torch.Tensor:
    """y = r + discount * min_i Q'_i(s', a'): reward, discount [B], q_next [N, B] -> [B].

    ``discount`` is gamma^k, 0 after a terminal (a time-limit truncation still bootstraps).
    """
    return reward + discount * q_next.min(0).values


class TD3(LearnerState, nn.Module):
    """TD3 with a deterministic tanh actor and N (default 2) critics.

    Acting: ``act(obs [N, O]) -> [N, A]`` in [-1, 1], plus Gaussian exploration noise unless deterministic.
    Learning: ``update(batch) -> (metrics, td_abs [B])``; metrics are detached 0-d tensors.
    """

    def __init__(self, obs_dim: int, act_dim: int, cfg: TD3Config, device: str = "cpu") -> None:
        super().__init__()
        self.cfg = cfg
        self.obs_dim, self.act_dim = obs_dim, act_dim
        hidden = tuple(cfg.hidden)
        self.normalizer = ObsNormalizer(obs_dim)
        self.actor = DeterministicPolicy(obs_dim, act_dim, hidden)
        self.actor_target = copy.deepcopy(self.actor).requires_grad_(False)
        self.critic = CriticEnsemble(cfg.n_critics, obs_dim, act_dim, hidden)
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
        """One critic step; every ``policy_delay`` critic steps one actor step and one Polyak step."""
        c = self.cfg
        obs = self.normalizer(batch.obs.float())
        next_obs = self.normalizer(batch.next_obs.float())
        action = batch.action.float()

        # --- critic: y = r + gamma^k (1 - terminal) min_i Q'_i(s', clip(mu'(s') + clip(eps)))
        with torch.no_grad():
            next_a = smoothed_target_action(self.actor_target(next_obs), c.policy_noise, c.noise_clip)
            target = clipped_double_q_target(batch.reward * c.reward_scale, batch.discount,
                                             self.critic_target(next_obs, next_a))
        q = self.critic(obs, action)  # [N, B]
        td = q - target.unsqueeze(0)
        critic_loss = (batch.weight * td.pow(2)).mean(1).sum() * 0.5
        self.critic_opt.zero_grad(set_to_none=True)
        critic_loss.backward()
        if c.grad_clip is not None:
            nn.utils.clip_grad_norm_(self._critic_params, c.grad_clip)
        self.critic_opt.step()
        metrics = {"critic_loss": critic_loss.detach(), "q_mean": q.detach().mean(), "td_abs": td.detach().abs().mean()}

        self._updates += 1
        if self._updates % c.policy_delay == 0:
            metrics["actor_loss"] = self._actor_step(obs)
            self._polyak()
        return metrics, td.detach().abs().mean(0)

    def actor_loss(self, obs_n: torch.Tensor) -> torch.Tensor:
        """-Q_1(s, mu(s)) averaged over normalised obs [B, O]: its gradient is the deterministic
        policy gradient E[grad_a Q(s, a)|_{a=mu(s)} grad_theta mu(s)] (Silver et al. 2014)."""
        return -self.critic(obs_n, self.actor(obs_n))[0].mean()

    def _actor_step(self, obs: torch.Tensor) -> torch.Tensor:
        c = self.cfg
        for p in self._critic_params:  # no critic grads from the actor loss
            p.requires_grad_(False)
        loss = self.actor_loss(obs)
        self.actor_opt.zero_grad(set_to_none=True)
        loss.backward()
        if c.grad_clip is not None:
            nn.utils.clip_grad_norm_(self.actor.parameters(), c.grad_clip)
        self.actor_opt.step()
        for p in self._critic_params:
            p.requires_grad_(True)
        return loss.detach()

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
    def as_policy(self) -> "TD3Policy":
        return TD3Policy(self)


class TD3Policy:
    """The Policy protocol over a TD3 (or DDPG) learner: raw obs [N, O] (numpy) -> actions [N, A] in [-1, 1]."""

    def __init__(self, learner: Any) -> None:
        self.learner = learner.eval()

    def act(self, obs: np.ndarray, deterministic: bool = True) -> np.ndarray:
        return self.learner.act(np.asarray(obs, dtype=np.float32), deterministic).cpu().numpy()


def policy_from_checkpoint(state: dict[str, Any], meta: dict[str, Any], device: str = "cpu") -> TD3Policy:
    """Rebuild the acting policy (normaliser, actor) from a checkpoint alone."""
    cfg = config_from_meta(TD3Config, meta, "td3")
    learner = TD3(int(meta["obs_shape"][0]), int(meta["act_shape"][0]), cfg, device)
    learner.load_state_dict(state["learner"]["model"])
    return TD3Policy(learner)

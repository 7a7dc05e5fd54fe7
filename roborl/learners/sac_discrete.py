"""Soft Actor-Critic for discrete actions (Christodoulou 2019): losses and updates, read top to bottom.

With finitely many actions the expectations over pi(.|s) that continuous SAC estimates with one
reparameterised sample are computed exactly, as sums over the actions:

- soft value   V(s')   = sum_a pi(a|s') [min_i Q'_i(s', a) - alpha log pi(a|s')]
- policy loss  J_pi    = E_s sum_a pi(a|s) [alpha log pi(a|s) - min_i Q_i(s, a)]
- temperature  J_alpha = E_s log(alpha) [H(pi(.|s)) - H_target], H_target = ratio * log|A|

The critics output one Q value per action (Q(s) -> [N, B, |A|]), the actor the logits of a
categorical policy. The skeleton follows :mod:`roborl.learners.sac`, on purpose.
The config (:class:`roborl.learners.config.DiscreteSACConfig`) lives in a torch-free module.
"""
from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from roborl.batch import Batch
from roborl.learners.base import SampleFn
from roborl.learners.config import DiscreteSACConfig
from roborl.learners.state import LearnerState, config_from_meta
from roborl.learners.networks import EnsembleLinear, ObsNormalizer, mlp


def soft_value(q: torch.Tensor, log_pi: torch.Tensor, alpha: torch.Tensor | float) -> torch.Tensor:
    """V(s) = sum_a pi(a|s) (Q(s, a) - alpha log pi(a|s)): q, log_pi [B, A] -> [B] (the exact expectation)."""
    return (log_pi.exp() * (q - alpha * log_pi)).sum(-1)


def policy_loss(q: torch.Tensor, log_pi: torch.Tensor, alpha: torch.Tensor | float) -> torch.Tensor:
    """J_pi = mean_s sum_a pi(a|s) (alpha log pi(a|s) - Q(s, a)): q, log_pi [B, A] -> 0-d (= -mean V(s))."""
    return (log_pi.exp() * (alpha * log_pi - q)).sum(-1).mean()


def entropy(log_pi: torch.Tensor) -> torch.Tensor:
    """H(pi(.|s)) = -sum_a pi(a|s) log pi(a|s): [B, A] -> [B]."""
    return -(log_pi.exp() * log_pi).sum(-1)


class QEnsemble(nn.Module):
    """N critics with one output per action. forward(obs [B, O]) -> q [N, B, A] (one batched matmul per layer)."""

    def __init__(self, n: int, obs_dim: int, n_actions: int, hidden: tuple[int, ...]) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        last = obs_dim
        for h in hidden:
            layers += [EnsembleLinear(n, last, h), nn.ReLU()]
            last = h
        layers.append(EnsembleLinear(n, last, n_actions))
        self.n = n
        self.net = nn.Sequential(*layers)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.net(obs.unsqueeze(0).expand(self.n, *obs.shape))


class DiscreteSAC(LearnerState, nn.Module):
    """SAC over ``act_dim`` discrete actions (``act_dim`` = gymnasium ``Discrete.n``).

    Acting: ``act(obs [N, O]) -> [N]`` int64 action indices (sampled, or argmax when deterministic).
    Learning: ``update(batch) -> (metrics, td_abs [B])``; ``batch.action`` holds indices [B].
    """

    OPTIMIZERS = ("actor_opt", "critic_opt", "alpha_opt")  # checkpointed by LearnerState

    def __init__(self, obs_dim: int, act_dim: int, cfg: DiscreteSACConfig, device: str = "cpu") -> None:
        super().__init__()
        self.cfg = cfg
        self.obs_dim, self.act_dim = obs_dim, act_dim
        hidden = tuple(cfg.hidden)
        self.normalizer = ObsNormalizer(obs_dim)
        self.actor = mlp(obs_dim, hidden, act_dim)  # logits [B, A]
        self.critic = QEnsemble(cfg.n_critics, obs_dim, act_dim, hidden)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.log_alpha = nn.Parameter(torch.tensor(math.log(cfg.init_alpha)))
        # The largest entropy a policy over |A| actions can have is log|A| (uniform).
        self.target_entropy = cfg.target_entropy_ratio * math.log(act_dim)
        self._updates = 0
        self.to(device)
        self.device = torch.device(device)
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=cfg.actor_lr)
        self.critic_opt = torch.optim.Adam(self.critic.parameters(), lr=cfg.critic_lr)
        self.alpha_opt = torch.optim.Adam([self.log_alpha], lr=cfg.alpha_lr)

    @property
    def alpha(self) -> torch.Tensor:
        return self.log_alpha.exp()

    def log_pi(self, obs_n: torch.Tensor) -> torch.Tensor:
        """Normalised obs [B, O] -> log pi(.|s) [B, A]."""
        return F.log_softmax(self.actor(obs_n), dim=-1)

    @torch.no_grad()
    def act(self, obs: torch.Tensor | np.ndarray, deterministic: bool = False) -> torch.Tensor:
        """Raw obs [N, O] -> action indices [N] (int64)."""
        obs_t = torch.as_tensor(obs, dtype=torch.float32, device=self.device)
        logits = self.actor(self.normalizer(obs_t))
        if deterministic:
            return logits.argmax(-1)
        return torch.distributions.Categorical(logits=logits).sample()

    def set_progress(self, env_step: int) -> None:
        """No schedules."""

    # ------------------------------------------------------------------ RL update
    def update(self, batch: Batch) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """One critic step, one actor step and one temperature step (exact expectations over actions)."""
        c = self.cfg
        obs = self.normalizer(batch.obs.float())
        next_obs = self.normalizer(batch.next_obs.float())
        action = batch.action.reshape(-1).long()  # [B] indices (the store keeps Discrete actions as integers)
        alpha = self.alpha.detach()

        # --- critic: y = r + gamma^k (1 - terminal) V'(s'), V' the exact soft value under min_i Q'_i
        with torch.no_grad():
            q_next = self.critic_target(next_obs).min(0).values  # [B, A]
            target = batch.reward * c.reward_scale + batch.discount * soft_value(q_next, self.log_pi(next_obs), alpha)
        q_all = self.critic(obs)  # [N, B, A]
        q = q_all.gather(2, action.view(1, -1, 1).expand(q_all.shape[0], -1, 1)).squeeze(-1)  # [N, B]
        td = q - target.unsqueeze(0)
        critic_loss = (batch.weight * td.pow(2)).mean(1).sum() * 0.5
        self.critic_opt.zero_grad(set_to_none=True)
        critic_loss.backward()
        self.critic_opt.step()

        # --- actor: sum over actions, no sampling and no reparameterisation needed
        log_pi = self.log_pi(obs)
        actor_loss = policy_loss(q_all.detach().min(0).values, log_pi, alpha)
        self.actor_opt.zero_grad(set_to_none=True)
        actor_loss.backward()
        self.actor_opt.step()

        # --- temperature toward the target entropy: alpha grows while H(pi) < H_target
        h = entropy(log_pi.detach())
        metrics = {"critic_loss": critic_loss.detach(), "actor_loss": actor_loss.detach(), "q_mean": q.detach().mean(),
                   "td_abs": td.detach().abs().mean(), "entropy": h.mean(), "alpha": alpha}
        if c.learn_alpha:
            alpha_loss = (self.log_alpha * (h - self.target_entropy)).mean()
            self.alpha_opt.zero_grad(set_to_none=True)
            alpha_loss.backward()
            self.alpha_opt.step()
        self._updates += 1
        with torch.no_grad():
            torch._foreach_lerp_(list(self.critic_target.parameters()), list(self.critic.parameters()), c.tau)
        return metrics, td.detach().abs().mean(0)

    # ------------------------------------------------------------------ start of learning
    def start_learning(self, sample: SampleFn, *, num_steps: int, num_demo_steps: int) -> None:
        """Fit the observation normaliser once on the data so far (kept fixed afterwards)."""
        if self.cfg.normalize_obs:
            b = sample(min(20_000, max(1, num_steps)), gamma=self.cfg.gamma, n_step=1, relabel=False)
            self.normalizer.fit(b.obs.float())

    # ------------------------------------------------------------------ state
    def as_policy(self) -> "DiscreteSACPolicy":
        return DiscreteSACPolicy(self)


class DiscreteSACPolicy:
    """The Policy protocol over a discrete SAC learner: raw obs [N, O] (numpy) -> action indices [N] (int64)."""

    def __init__(self, learner: DiscreteSAC) -> None:
        self.learner = learner.eval()

    def act(self, obs: np.ndarray, deterministic: bool = True) -> np.ndarray:
        return self.learner.act(np.asarray(obs, dtype=np.float32), deterministic).cpu().numpy()


def policy_from_checkpoint(state: dict[str, Any], meta: dict[str, Any], device: str = "cpu") -> DiscreteSACPolicy:
    """Rebuild the acting policy (normaliser, actor) from a checkpoint alone (act_shape = [|A|])."""
    cfg = config_from_meta(DiscreteSACConfig, meta, "sac_discrete")
    learner = DiscreteSAC(int(meta["obs_shape"][0]), int(meta["act_shape"][0]), cfg, device)
    learner.load_state_dict(state["learner"]["model"])
    return DiscreteSACPolicy(learner)

"""Soft Actor-Critic (Haarnoja et al. 2018): losses and updates, read top to bottom.

The config (:class:`roborl.learners.config.SACConfig`) lives in a torch-free module.
"""
from __future__ import annotations

# The runner owns envs, the store and files; this module sees tensors only.
import copy
import math
import contextlib
from typing import Any

import numpy as np
import torch
from torch import nn

from roborl.batch import Batch
from roborl.learners.base import SampleFn
from roborl.learners.config import SACConfig
from roborl.learners.networks import (
    CriticEnsemble,
    DeterministicPolicy,
    ObsNormalizer,
    TanhGaussianActor,
)


def soft_td_target(reward: torch.Tensor, discount: torch.Tensor, q_next: torch.Tensor, next_logp: torch.Tensor,
                   alpha: torch.Tensor | float) -> torch.Tensor:
    """y = r + discount * (Q'(s', a') - alpha * log pi(a'|s')), all [B].

    ``discount`` is gamma^k when the k-step segment ended without a terminal (a time-limit
    truncation still bootstraps: the state was not absorbing) and 0 after a terminal
    (Pardo et al. 2018 on time limits).
    """
    return reward + discount * (q_next - alpha * next_logp)


def critic_td_loss(td: torch.Tensor, kind: str) -> torch.Tensor:
    """Elementwise critic loss of TD errors ``td`` [N, B]: ``mse`` td^2/2; ``huber`` (delta 1) td^2/2 for
    |td| < 1 and |td| - 1/2 beyond, the loss LAP prioritisation pairs with (Fujimoto et al. 2020)."""
    if kind == "huber":
        return torch.nn.functional.huber_loss(td, torch.zeros_like(td), reduction="none", delta=1.0)
    return 0.5 * td.pow(2)


class SAC(nn.Module):
    """Soft Actor-Critic with an ensemble critic, optional residual mode over a frozen BC base.

    Acting: ``act(obs [N, O]) -> [N, A]`` final actions in [-1, 1].
    Learning: ``update(batch) -> (metrics, td_abs [B])``; metrics are detached 0-d tensors
    (no host sync per update; the runner aggregates them and syncs only when it logs).
    """

    def __init__(self, obs_dim: int, act_dim: int, cfg: SACConfig, device: str = "cpu") -> None:
        super().__init__()
        self.cfg = cfg
        self.obs_dim, self.act_dim = obs_dim, act_dim
        hidden = tuple(cfg.hidden)
        self.normalizer = ObsNormalizer(obs_dim)
        self.actor = TanhGaussianActor(obs_dim, act_dim, hidden)
        self.critic = CriticEnsemble(cfg.n_critics, obs_dim, act_dim, hidden, cfg.layer_norm)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        # The residual base a_base(s) (Policy Decorator, Yuan et al. 2024; ResiP, Ankile et al. 2024):
        # trained by BC on demos, then frozen; SAC learns only the residual.
        self.base = DeterministicPolicy(obs_dim, act_dim, hidden) if cfg.residual else None
        self.log_alpha = nn.Parameter(torch.tensor(math.log(cfg.init_alpha)))
        self.target_entropy = float(cfg.target_entropy if cfg.target_entropy is not None else -act_dim)
        self.register_buffer("beta", torch.tensor(float(cfg.residual_beta)))
        self._updates = 0
        self.to(device)
        self.device = torch.device(device)
        self.actor_opt = _adam(self.actor.parameters(), cfg.lr)
        self.critic_opt = _adam(self.critic.parameters(), cfg.lr)
        self.alpha_opt = _adam([self.log_alpha], cfg.alpha_lr)
        self.base_opt = _adam(self.base.parameters(), cfg.lr) if self.base is not None else None
        from roborl.runs import resolve_precision

        self.precision = resolve_precision(cfg.precision, self.device.type)
        self._bf16 = self.precision == "bf16"
        self._critic_params = list(self.critic.parameters())
        self._polyak_src = list(self.critic.parameters()) + list(self.critic.buffers())
        self._polyak_dst = list(self.critic_target.parameters()) + list(self.critic_target.buffers())

    # ------------------------------------------------------------------ policy
    @property
    def alpha(self) -> torch.Tensor:
        return self.log_alpha.exp()

    def policy(self, obs_n: torch.Tensor, deterministic: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """On normalised obs [B, O]: (final action [B, A], log pi(a_res|s) [B], SAC output [B, A])."""
        a, logp, mean = self.actor(obs_n, deterministic)
        if self.base is None:
            return a, logp, a
        with torch.no_grad():
            base = self.base(obs_n)
        # Executed action = clip(a_base + beta * a_res); the critic scores this final action.
        return (base + self.beta * a).clamp(-1.0, 1.0), logp, a

    @torch.no_grad()
    def act(self, obs: torch.Tensor | np.ndarray, deterministic: bool = False) -> torch.Tensor:
        """Raw obs [N, O] -> final action [N, A] in [-1, 1]."""
        obs_t = torch.as_tensor(obs, dtype=torch.float32, device=self.device)
        return self.policy(self.normalizer(obs_t), deterministic)[0]

    def set_progress(self, env_step: int) -> None:
        """Progressive residual schedule: beta ramps from residual_beta to residual_beta_final."""
        c = self.cfg
        if c.residual and c.residual_beta_final is not None:
            frac = min(1.0, env_step / c.residual_ramp_steps)
            self.beta.fill_(c.residual_beta + frac * (c.residual_beta_final - c.residual_beta))

    # ------------------------------------------------------------------ RL update
    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        """bf16 autocast for forward passes when ``precision: bf16`` (backward runs outside it, as torch advises)."""
        if not self._bf16:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16)

    def update(self, batch: Batch) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """One critic step (+ actor and temperature steps every ``actor_every``). Returns (metrics, |TD| [B])."""
        c = self.cfg
        # Stores keep the env's dtype (gymnasium MuJoCo envs emit float64); learn in float32.
        obs = self.normalizer(batch.obs.float())
        next_obs = self.normalizer(batch.next_obs.float())
        action = batch.action.float()
        alpha = self.alpha.detach()

        # --- critic: y = r + gamma^k (1 - terminal) * (min_{subset} Q'(s', a') - alpha log pi(a'|s'))
        with torch.no_grad(), self._autocast():
            next_a, next_logp, _ = self.policy(next_obs)
            q_next = self.critic_target(next_obs, next_a)  # [N, B]
            if c.n_critics > 2:
                # REDQ / RLPD: min over a random subset of the ensemble (Chen 2021; Ball 2023).
                idx = torch.randperm(c.n_critics, device=q_next.device)[: c.critic_subset]
                q_next = q_next.index_select(0, idx)
            target = soft_td_target(batch.reward * c.reward_scale, batch.discount, q_next.min(0).values, next_logp, alpha)
        with self._autocast():
            q = self.critic(obs, action)  # [N, B], float32 (output layer runs in float32)
        td = q - target.unsqueeze(0)
        critic_loss = (batch.weight * critic_td_loss(td, c.critic_loss)).mean(1).sum()
        self.critic_opt.zero_grad(set_to_none=True)
        critic_loss.backward()
        if c.grad_clip is not None:
            nn.utils.clip_grad_norm_(self._critic_params, c.grad_clip)
        self.critic_opt.step()

        metrics = {"critic_loss": critic_loss.detach(), "q_mean": q.detach().mean(),
                   "td_abs": td.detach().abs().mean()}
        # A Python counter (not a tensor) so the actor_every test never syncs with the device.
        self._updates += 1
        if self._updates > c.actor_delay and self._updates % c.actor_every == 0:
            metrics.update(self._actor_step(obs, action, batch.is_demo))
        self._polyak()
        metrics["alpha"] = alpha
        return metrics, td.detach().abs().mean(0)

    def _actor_step(self, obs: torch.Tensor, action: torch.Tensor, is_demo: torch.Tensor) -> dict[str, torch.Tensor]:
        c = self.cfg
        for p in self._critic_params:  # no critic grads from the actor loss (saves a backward)
            p.requires_grad_(False)
        with self._autocast():
            a, logp, _ = self.policy(obs)
            q_pi = self.critic(obs, a)
        # Twin SAC takes the min; a larger ensemble uses the mean (REDQ's actor objective).
        q_pi = q_pi.min(0).values if c.n_critics <= 2 else q_pi.mean(0)
        alpha = self.alpha.detach()
        actor_loss = (alpha * logp - q_pi).mean()
        out = {"actor_loss": actor_loss.detach(), "entropy": -logp.detach().mean()}
        if c.bc_weight > 0:
            # BC regulariser on demo samples (as in AWAC/TD3+BC-style demo-augmented actor losses);
            # normalised by |Q| so the weight is scale-free (Fujimoto & Gu 2021).
            with self._autocast():
                det, _, _ = self.policy(obs, deterministic=True)
            demo = is_demo.float()
            bc = ((det - action).pow(2).sum(-1) * demo).sum() / demo.sum().clamp_min(1.0)
            lam = c.bc_weight * q_pi.detach().abs().mean().clamp_min(1.0)
            actor_loss = actor_loss + lam * bc
            out["bc_loss"] = bc.detach()
        self.actor_opt.zero_grad(set_to_none=True)
        actor_loss.backward()
        if c.grad_clip is not None:
            nn.utils.clip_grad_norm_(self.actor.parameters(), c.grad_clip)
        self.actor_opt.step()
        for p in self._critic_params:
            p.requires_grad_(True)
        if c.learn_alpha:
            # Temperature toward the target entropy -|A| (Haarnoja et al. 2018b).
            alpha_loss = -(self.log_alpha * (logp.detach() + self.target_entropy)).mean()
            self.alpha_opt.zero_grad(set_to_none=True)
            alpha_loss.backward()
            self.alpha_opt.step()
        return out

    @torch.no_grad()
    def _polyak(self) -> None:
        torch._foreach_lerp_(self._polyak_dst, self._polyak_src, self.cfg.tau)

    # ------------------------------------------------------------------ start of learning
    def start_learning(self, sample: SampleFn, *, num_steps: int, num_demo_steps: int) -> None:
        """Fit the observation normaliser on the data so far, BC-pretrain on the demos, start the residual.

        sample: the runner's sampler (:data:`roborl.learners.base.SampleFn`); num_steps: transitions
        in the store (demo + online); num_demo_steps: demo transitions.
        """
        from roborl.errors import UsageError
        from roborl.runs import progress

        c = self.cfg
        if c.normalize_obs:
            n = min(20_000, max(1, num_steps))
            b = sample(n, gamma=c.gamma, n_step=1, relabel=False)
            self.normalizer.fit(b.obs.float())
        if c.bc_pretrain_steps > 0 and num_demo_steps > 0:
            for _ in progress(range(c.bc_pretrain_steps), total=c.bc_pretrain_steps, desc="BC pretrain"):
                # BC targets are the demonstrator's actions for the goals it was given: no HER relabelling.
                b = sample(c.batch_size, gamma=c.gamma, demo_fraction=1.0, relabel=False)
                self.bc_update(b.obs, b.action)
        elif c.residual:
            raise UsageError("sac.residual: residual mode needs demos (store.demos) and sac.bc_pretrain_steps > 0")
        if c.residual:
            self.init_residual_actor()

    # ------------------------------------------------------------------ behaviour cloning
    def bc_update(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """One BC step on demo (obs [B, O] raw, action [B, A]). Residual mode trains the base policy,
        otherwise the actor's mean action. Returns the MSE (detached)."""
        obs_n = self.normalizer(obs.float())
        action = action.float()
        if self.base is not None:
            pred, opt = self.base(obs_n), self.base_opt
        else:
            mu, _ = self.actor.dist_params(obs_n)
            pred, opt = torch.tanh(mu), self.actor_opt
        loss = (pred - action.clamp(-1.0, 1.0)).pow(2).sum(-1).mean()
        assert opt is not None
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.detach()

    def init_residual_actor(self) -> None:
        """Start the residual near zero so the first executed actions are the BC base's."""
        with torch.no_grad():
            self.actor.head.weight.mul_(0.01)
            self.actor.head.bias.zero_()

    # ------------------------------------------------------------------ state
    def full_state(self) -> dict[str, Any]:
        """Model, optimisers and temperature: everything needed for an exact resume."""
        st: dict[str, Any] = {"model": self.state_dict(), "actor_opt": self.actor_opt.state_dict(),
                              "critic_opt": self.critic_opt.state_dict(), "alpha_opt": self.alpha_opt.state_dict(),
                              "updates": self._updates}
        if self.base_opt is not None:
            st["base_opt"] = self.base_opt.state_dict()
        return st

    def load_full_state(self, st: dict[str, Any]) -> None:
        self.load_state_dict(st["model"])
        self.actor_opt.load_state_dict(st["actor_opt"])
        self.critic_opt.load_state_dict(st["critic_opt"])
        self.alpha_opt.load_state_dict(st["alpha_opt"])
        self._updates = int(st.get("updates", 0))
        if self.base_opt is not None and "base_opt" in st:
            self.base_opt.load_state_dict(st["base_opt"])

    def acting_state(self) -> dict[str, torch.Tensor]:
        """What a remote actor needs: normaliser, actor, residual base and beta (no critics, no temperature)."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith(("critic", "log_alpha"))}

    def load_acting_state(self, state: dict[str, torch.Tensor]) -> None:
        self.load_state_dict(state, strict=False)

    def as_policy(self) -> "SACPolicy":
        return SACPolicy(self)


def _adam(params: Any, lr: float) -> torch.optim.Optimizer:
    return torch.optim.Adam(params, lr=lr, fused=True)


class SACPolicy:
    """The Policy protocol over a SAC learner: raw obs [N, O] (numpy) -> actions [N, A] in [-1, 1]."""

    def __init__(self, learner: SAC) -> None:
        self.learner = learner.eval()

    def act(self, obs: np.ndarray, deterministic: bool = True) -> np.ndarray:
        return self.learner.act(np.asarray(obs, dtype=np.float32), deterministic).cpu().numpy()


def policy_from_checkpoint(state: dict[str, Any], meta: dict[str, Any], device: str = "cpu") -> SACPolicy:
    """Rebuild the acting policy (normaliser, actor, residual base) from a checkpoint alone."""
    from roborl.config import build

    import dataclasses

    # Tolerate keys a later version removed (the checkpoint's weights are what matter here).
    known = {f.name for f in dataclasses.fields(SACConfig)}
    cfg = build(SACConfig, {k: v for k, v in meta["config"]["sac"].items() if k in known}, source="checkpoint meta")
    learner = SAC(int(meta["obs_shape"][0]), int(meta["act_shape"][0]), cfg, device)
    learner.load_state_dict(state["learner"]["model"])
    return SACPolicy(learner)

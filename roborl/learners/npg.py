"""Natural policy gradient (Kakade 2001) on the runner's rollouts, and the base of TRPO.

One update, with the surrogate L(theta) = mean_b[pi_theta(u_b|s_b) / pi_old(u_b|s_b) A_b] and the
mean KL(pi_old || pi_theta) over the batch's states (closed form for the diagonal Gaussians):

1. g = grad L at theta_old over the actor's parameters (actor MLP and log-std);
2. x ~= (F + damping I)^-1 g by conjugate gradient (:func:`conjugate_gradient`) with Fisher-vector
   products F v = grad (grad KL . v) (:func:`fisher_vector_product`): the KL's Hessian at theta_old
   is the Fisher matrix, never formed;
3. the step s = sqrt(2 delta / x^T F x) x (:func:`natural_step`), whose quadratic KL model
   0.5 s^T F s is delta, applied as is (TRPO, :mod:`roborl.learners.trpo`, adds its line search here);
4. the critic is regressed on the GAE returns with Adam (``vf_epochs`` passes of ``vf_minibatch``).
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
from torch.nn.utils import parameters_to_vector, vector_to_parameters

from roborl.learners.actor_critic import GaussianPGLearner, load_policy
from roborl.learners.base import PRIVILEGED, Rollout
from roborl.learners.config import NPGConfig
from roborl.learners.ppo import PPOPolicy, gaussian_entropy, gaussian_kl, gaussian_log_prob

__all__ = ["NPG", "flat_grad", "fisher_vector_product", "conjugate_gradient", "natural_step", "policy_from_checkpoint"]


def flat_grad(y: torch.Tensor, params: Sequence[torch.Tensor], create_graph: bool = False) -> torch.Tensor:
    """dy/dparams as one flat vector [P]."""
    grads = torch.autograd.grad(y, list(params), create_graph=create_graph)
    return torch.cat([g.reshape(-1) for g in grads])


def fisher_vector_product(kl_fn: Callable[[], torch.Tensor], params: Sequence[torch.Tensor], v: torch.Tensor,
                          damping: float = 0.0) -> torch.Tensor:
    """(F + damping I) v [P], F the Hessian of the mean KL(pi_old || pi_theta) at theta = theta_old.

    ``kl_fn()`` must evaluate the KL with pi_old detached, at the current parameters (= theta_old).
    Two backward passes (Pearlmutter's trick), O(P) memory.
    """
    g = flat_grad(kl_fn(), params, create_graph=True)
    return flat_grad((g * v.detach()).sum(), params) + damping * v


def conjugate_gradient(avp: Callable[[torch.Tensor], torch.Tensor], b: torch.Tensor, iters: int = 10,
                       tol: float = 1e-10) -> torch.Tensor:
    """Solve A x = b for symmetric positive-definite A given only x -> A x: b [P] -> x [P] (Shewchuk 1994)."""
    x = torch.zeros_like(b)
    r = b.clone()
    p = b.clone()
    rr = r @ r
    for _ in range(iters):
        if rr <= tol:
            break
        ap = avp(p)
        step = rr / (p @ ap)
        x = x + step * p
        r = r - step * ap
        rr_new = r @ r
        p = r + (rr_new / rr) * p
        rr = rr_new
    return x


def natural_step(x: torch.Tensor, fx: torch.Tensor, max_kl: float) -> torch.Tensor:
    """s = sqrt(2 delta / x^T F x) x: the step along x whose quadratic KL model 0.5 s^T F s equals delta."""
    return torch.sqrt(2.0 * max_kl / (x @ fx).clamp_min(1e-12)) * x


class NPG(GaussianPGLearner):
    """NPG learner (``train.algo=npg``; config :class:`roborl.learners.config.NPGConfig`)."""

    cfg: NPGConfig

    def actor_params(self) -> list[torch.nn.Parameter]:
        """What the natural step moves: the actor encoder, actor MLP and log-std."""
        m = self.model
        return [*m.actor_encoder.parameters(), *m.actor.parameters(), m.log_std]

    def critic_params(self) -> list[torch.nn.Parameter]:
        m = self.model
        enc = [] if m.critic_encoder is m.actor_encoder else list(m.critic_encoder.parameters())
        return [*enc, *m.critic.parameters()]

    def make_optimizer(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.critic_params(), lr=self.cfg.lr, eps=1e-5)

    def policy_step(self, params: list[torch.nn.Parameter], step: torch.Tensor,
                    surrogate: Any, kl: Any) -> dict[str, float]:
        """Apply the natural step (TRPO overrides this with its line search)."""
        with torch.no_grad():
            vector_to_parameters(parameters_to_vector(params) + step, params)
        return {"accepted": 1.0}

    def update(self, r: Rollout) -> dict[str, float]:
        cfg, m = self.cfg, self.model
        x, u, logp_old, mu_old, adv, ret = self.gae_batch(r)
        B = u.shape[0]
        xa = {k: v for k, v in x.items() if k != PRIVILEGED}
        log_std_old = m.log_std.detach().clone()
        params = self.actor_params()

        def surrogate() -> torch.Tensor:
            logp = gaussian_log_prob(u, m.actor_mean(xa), m.log_std)
            return ((logp - logp_old).exp() * adv).mean()

        def kl() -> torch.Tensor:
            return gaussian_kl(mu_old, log_std_old, m.actor_mean(xa), m.log_std).mean()

        surr_before = surrogate()
        g = flat_grad(surr_before, params)
        fvp = lambda v: fisher_vector_product(kl, params, v, cfg.cg_damping)  # noqa: E731
        direction = conjugate_gradient(fvp, g, iters=cfg.cg_iters)
        step = natural_step(direction, fvp(direction), cfg.max_kl)
        out = self.policy_step(params, step, surrogate, kl)
        with torch.no_grad():
            out["kl"] = float(kl())
            out["surrogate_gain"] = float(surrogate() - surr_before)
        # Critic: minibatch Adam regression on the returns (sb3-contrib TRPO's n_critic_updates).
        mb = min(cfg.vf_minibatch, B)
        xc = {k: v.detach() for k, v in x.items()}
        v_losses = []
        for _ in range(cfg.vf_epochs):
            perm = torch.randperm(B, device=self.device)
            for i in range(0, B - mb + 1, mb):
                idx = perm[i:i + mb]
                v = m.critic(m.critic_encoder({k: t[idx] for k, t in xc.items()}))[:, 0]
                v_loss = (v - ret[idx]).pow(2).mean()
                self.optim.zero_grad(set_to_none=True)
                v_loss.backward()
                self.optim.step()
                v_losses.append(float(v_loss.detach()))
        out.update({"loss/value": sum(v_losses) / max(len(v_losses), 1), "entropy": float(gaussian_entropy(m.log_std.detach())),
                    "std": float(m.log_std.detach().exp().mean()), "lr": self.lr})
        return out


def policy_from_checkpoint(state: dict[str, Any], meta: dict[str, Any], device: str = "cpu") -> PPOPolicy:
    return load_policy(state, meta, device, "npg", NPGConfig)

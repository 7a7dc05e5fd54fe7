"""What REINFORCE, A2C, NPG and TRPO share: PPO's Gaussian actor-critic model, acting, normalisers, state.

Each of those learners (``reinforce.py``, ``a2c.py``, ``npg.py``, ``trpo.py``) subclasses
:class:`GaussianPGLearner` and writes only its ``update``: acting, bootstrap values, observation
normalisation, checkpoints and the deployable policy are the same as PPO's, on the same model
(:class:`roborl.learners.ppo.ActorCritic`, its plain, unfused modules). The on-policy runner drives
them through :class:`roborl.learners.base.OnPolicyLearner`.

Shapes: ``T`` rollout steps per env, ``N`` envs, ``B = T*N``, ``O_k`` the size of observation group k,
``A`` action dim.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from roborl.learners.base import POLICY, PRIVILEGED, Rollout
from roborl.learners.config import OnPolicyCommon
from roborl.learners.ppo import ActorCritic, PPOPolicy, checkpoint_obs_dims, compute_gae, gaussian_log_prob, obs_groups

__all__ = ["GaussianPGLearner", "load_policy", "standardize"]


def standardize(x: torch.Tensor) -> torch.Tensor:
    """(x - mean) / (std + 1e-8) over all elements."""
    return (x - x.mean()) / (x.std() + 1e-8)


class GaussianPGLearner:
    """Base of the plain policy-gradient learners (an :class:`~roborl.learners.base.OnPolicyLearner` less ``update``).

    ``obs_dims``: size of each observation group (an int = one ``"policy"`` group); the privileged
    ``"critic"`` group is kept only with ``cfg.asymmetric``. ``self.optim`` is what
    :meth:`make_optimizer` returns (the whole model for REINFORCE/A2C, the critic alone for NPG/TRPO).
    """

    def __init__(self, obs_dims: Mapping[str, int] | int, act_dim: int, cfg: OnPolicyCommon,
                 device: str = "cpu") -> None:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            from roborl.errors import UsageError

            raise UsageError(f"--nproc: {type(self).__name__} runs in one process (data parallel is PPO's)")
        self.cfg = cfg
        self.device = torch.device(device)
        dims = {POLICY: obs_dims} if isinstance(obs_dims, int) else dict(obs_dims)
        if not cfg.asymmetric:
            dims.pop(PRIVILEGED, None)
        self.model = ActorCritic(dims, act_dim, cfg).to(self.device)  # type: ignore[arg-type]  # duck-typed config
        self.lr = cfg.lr
        self.optim = self.make_optimizer()

    def make_optimizer(self) -> torch.optim.Optimizer:
        """Adam over the whole model (eps 1e-5 as SB3/CleanRL)."""
        return torch.optim.Adam(self.model.parameters(), lr=self.cfg.lr, eps=1e-5)

    @property
    def obs_dims(self) -> dict[str, int]:
        return dict(self.model.obs_dims)

    # ------------------------------------------------------------------ acting
    @torch.no_grad()
    def act(self, obs: Mapping[str, torch.Tensor] | torch.Tensor
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Raw groups {k: [N, O_k]} -> (action [N, A] in [-1, 1], u [N, A], logp [N], mu [N, A], V [N])."""
        m = self.model
        mu, v = m.plain(m.normalize(obs_groups(obs)))
        u = mu + torch.randn_like(mu) * m.log_std.exp()
        return m.squash_action(u), u, gaussian_log_prob(u, mu, m.log_std), mu, v

    @torch.no_grad()
    def value(self, obs: Mapping[str, torch.Tensor] | torch.Tensor) -> torch.Tensor:
        """V of raw groups {k: [N, O_k]} -> [N]."""
        m = self.model
        return m.plain(m.normalize(obs_groups(obs)))[1]

    def observe(self, obs: Mapping[str, torch.Tensor] | torch.Tensor) -> None:
        """Fold a rollout's raw groups {k: [T, N, O_k]} into the normalisers (after :meth:`update`)."""
        for k, v in obs_groups(obs).items():
            if k in self.model.obs_rms:
                self.model.obs_rms[k].update(v)

    def set_lr(self, lr: float) -> None:
        self.lr = lr
        for g in self.optim.param_groups:
            g["lr"] = lr

    # ------------------------------------------------------------------ update helpers
    def flat_rollout(self, r: Rollout) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor, torch.Tensor]:
        """[T, N, ...] -> (normalised groups {k: [B, O_k]}, u [B, A], logp_old [B], mu_old [B, A])."""
        B = r.rewards.numel()
        obs = obs_groups(r.obs)
        x = self.model.normalize({k: v.reshape(B, -1) for k, v in obs.items()})
        return x, r.actions.reshape(B, -1), r.logp.reshape(B), r.mu.reshape(B, -1)

    def gae_batch(self, r: Rollout) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor, torch.Tensor,
                                              torch.Tensor, torch.Tensor]:
        """:meth:`flat_rollout` plus GAE(gamma, gae_lambda) advantages and returns, flattened:
        (groups {k: [B, O_k]}, u [B, A], logp_old [B], mu_old [B, A], adv [B] (standardised when
        ``norm_adv``), ret [B])."""
        cfg = self.cfg
        adv, ret = compute_gae(r.rewards, r.values, r.next_values, r.terminated, r.dones, cfg.gamma, cfg.gae_lambda)
        x, u, logp_old, mu_old = self.flat_rollout(r)
        B = u.shape[0]
        adv, ret = adv.reshape(B), ret.reshape(B)
        if cfg.norm_adv and B > 1:
            adv = standardize(adv)
        return x, u, logp_old, mu_old, adv, ret

    def update(self, rollout: Rollout) -> dict[str, float]:  # pragma: no cover - each learner writes its own
        raise NotImplementedError

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        return {"model": {k: v.detach().clone() for k, v in self.model.state_dict().items()},
                "optim": self.optim.state_dict(), "lr": self.lr}

    def load_state_dict(self, st: dict[str, Any]) -> None:
        self.model.load_state_dict(st["model"])
        self.optim.load_state_dict(st["optim"])
        self.set_lr(float(st["lr"]))

    def policy(self) -> PPOPolicy:
        return PPOPolicy(self.model, str(self.device))


def load_policy(state: dict[str, Any], meta: dict[str, Any], device: str, section: str, cfg_cls: type) -> PPOPolicy:
    """Rebuild the deployable policy of a ``section`` learner from a checkpoint's ``(state, meta)`` alone."""
    from roborl import config as C
    from roborl.errors import UsageError

    try:
        cfg = C.build(cfg_cls, meta["config"][section], "checkpoint meta")
        dims = checkpoint_obs_dims(meta["dims"])
        if not cfg.asymmetric:
            dims.pop(PRIVILEGED, None)
        model = ActorCritic(dims, int(meta["dims"]["act"]), cfg)
        model.load_state_dict(state["learner"]["model"])
    except (KeyError, TypeError) as e:
        raise UsageError(f"checkpoint is not a {section} checkpoint: missing {e}") from None
    except RuntimeError as e:
        raise UsageError(f"checkpoint model does not match its config: {str(e).splitlines()[0]}") from None
    model.to(device).eval()
    return PPOPolicy(model, device)

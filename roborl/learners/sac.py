"""Soft Actor-Critic (Haarnoja et al. 2018): losses and updates, read top to bottom.

The config (:class:`roborl.learners.config.SACConfig`) lives in a torch-free module.
"""
from __future__ import annotations

# The runner owns envs, the store and files; this module sees tensors only.
import copy
import math
import contextlib
from typing import Any, Mapping

import numpy as np
import torch
from torch import nn

from roborl.batch import Batch
from roborl.learners.base import SampleFn
from roborl.learners.config import SACConfig
from roborl.learners.fast import adam_step, zero_grad
from roborl.learners.networks import (
    CriticEnsemble,
    DeterministicPolicy,
    ObsNormalizer,
    TanhGaussianActor,
    squashed_log_prob,
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

    Camera observations (``obs_dim`` an observation spec ``{leaf: shape}`` with image leaves,
    ``obs`` dicts ``{leaf: [N, *shape]}``): a :class:`~roborl.learners.encoders.PixelEncoder`
    (``cfg.encoder``) turns the cameras into features, concatenated with the normalised vector
    leaves (normalisation applies to those only) into ``[N, F]``, which the actor, the critic
    ensemble and the residual base read. End to end (DrQ, Kostrikov 2020): the critic loss trains
    the encoder, the actor reads detached features, a target encoder follows by Polyak
    (``encoder.tau``), every sampled batch is randomly shifted on the device. Frozen
    (``encoder.weights``): no gradient, no augmentation, embeddings cached per stored row
    (:class:`~roborl.learners.encoders.EmbeddingCache`).
    """

    def __init__(self, obs_dim: int | Mapping[str, Any], act_dim: int, cfg: SACConfig, device: str = "cpu",
                 load_encoder_weights: bool = True) -> None:
        super().__init__()
        from roborl.learners import encoders as E

        self.cfg = cfg
        self.act_dim = act_dim
        hidden = tuple(cfg.hidden)
        self.pixels = isinstance(obs_dim, Mapping) and bool(E.image_keys(obs_dim))
        self.encoder: E.PixelEncoder | None = None
        self.encoder_target: nn.Module | None = None
        self.base_encoder: nn.Module | None = None
        self.frozen = False
        if isinstance(obs_dim, Mapping):
            spec = {_leaf(k): tuple(int(d) for d in v) for k, v in obs_dim.items()}
            self.obs_spec: dict[str, tuple[int, ...]] | None = spec
            self.vec_keys = E.vector_keys(spec)
            vec_dim = int(sum(math.prod(spec[k]) for k in self.vec_keys))
        else:
            self.obs_spec, self.vec_keys, vec_dim = None, (), int(obs_dim)
        self.obs_dim = vec_dim
        feat_dim = vec_dim
        if self.pixels:
            assert self.obs_spec is not None
            ec = cfg.encoder
            if ec.arch == "keypoints" and ec.feature_dim % 2:
                from roborl.errors import UsageError

                raise UsageError(f"sac.encoder.feature_dim: a keypoint encoder has 2 features (x, y) per keypoint, "
                                 f"so an even number; got {ec.feature_dim}")
            self.encoder = E.PixelEncoder(self.obs_spec, shared=ec.shared, channels=ec.channels, layers=ec.layers,
                                          feature_dim=ec.feature_dim, pad=ec.pad, downsample=ec.downsample,
                                          arch=ec.arch)
            feat_dim += self.encoder.out_dim
            self.frozen = ec.weights is not None
            if self.frozen:
                if load_encoder_weights:
                    E.load_encoder_state(ec.weights, self.encoder)
                self.encoder.requires_grad_(False).eval()
                # A row's own frame never changes under its id: no fingerprint. Its next frame can
                # (n-step successor of a row of the open episode): verified.
                self.cache_obs = E.EmbeddingCache(ec.cache_size, self.encoder.out_dim, verify=False)
                self.cache_next = E.EmbeddingCache(ec.cache_size, self.encoder.out_dim)
            else:
                self.encoder_target = E.frozen_copy(self.encoder)
                if cfg.residual:
                    # The BC base keeps its own encoder (trained by BC, then frozen with the base): the
                    # online encoder keeps changing under the critic and would move a frozen base.
                    self.base_encoder = copy.deepcopy(self.encoder)
        self.feat_dim = feat_dim
        self.normalizer = ObsNormalizer(vec_dim)
        self.actor = TanhGaussianActor(feat_dim, act_dim, hidden)
        self.critic = CriticEnsemble(cfg.n_critics, feat_dim, act_dim, hidden, cfg.layer_norm)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        # The residual base a_base(s) (Policy Decorator, Yuan et al. 2024; ResiP, Ankile et al. 2024):
        # trained by BC on demos, then frozen; SAC learns only the residual.
        self.base = DeterministicPolicy(feat_dim, act_dim, hidden) if cfg.residual else None
        self.log_alpha = nn.Parameter(torch.tensor(math.log(cfg.init_alpha)))
        self.target_entropy = float(cfg.target_entropy if cfg.target_entropy is not None else -act_dim)
        self.register_buffer("beta", torch.tensor(float(cfg.residual_beta)))
        self._updates = 0
        self.to(device)
        self.device = torch.device(device)
        e2e = self.encoder is not None and not self.frozen
        enc_params = list(self.encoder.parameters()) if e2e and self.encoder is not None else []
        self.actor_opt = _adam(self.actor.parameters(), cfg.lr)
        # End to end, the critic's gradient is what trains the encoder (DrQ).
        self.critic_opt = _adam(list(self.critic.parameters()) + enc_params, cfg.lr)
        self.alpha_opt = _adam([self.log_alpha], cfg.alpha_lr)
        base_params = list(self.base.parameters()) if self.base is not None else []
        if self.base_encoder is not None:
            base_params += list(self.base_encoder.parameters())
        self.base_opt = _adam(base_params, cfg.lr) if self.base is not None else None
        # BC of the actor end to end also trains the encoder (a pixel policy pretrained from demos).
        self.bc_opt = _adam(list(self.actor.parameters()) + enc_params, cfg.lr) if enc_params else self.actor_opt
        from roborl.runs import resolve_precision

        self.precision = resolve_precision(cfg.precision, self.device.type)
        self._bf16 = self.precision == "bf16"
        self._critic_params = list(self.critic.parameters()) + enc_params
        self._polyak_src = list(self.critic.parameters()) + list(self.critic.buffers())
        self._polyak_dst = list(self.critic_target.parameters()) + list(self.critic_target.buffers())
        self._enc_src = enc_params
        self._enc_dst = list(self.encoder_target.parameters()) if self.encoder_target is not None else []
        # SAC with a value network (cfg.value_net; Haarnoja et al. 2018, v1): V(s) [B] regressed on
        # E_a~pi[min Q(s, a) - alpha log pi(a|s)] and a Polyak target V' for the critic targets.
        # Named critic_* so acting_state leaves them out, like the critics.
        self.critic_v: nn.Module | None = None
        if cfg.value_net:
            from roborl.learners.networks import mlp

            self.critic_v = mlp(feat_dim, hidden, 1).to(self.device)
            self.critic_v_target = copy.deepcopy(self.critic_v).requires_grad_(False)
            self.value_opt = _adam(self.critic_v.parameters(), cfg.lr)
            self._polyak_src += list(self.critic_v.parameters())
            self._polyak_dst += list(self.critic_v_target.parameters())
        # The fast path (``sac.compile``): the update's two losses compiled (flat observations, Q-function
        # targets; the value-net and Retrace targets take the plain path).
        from roborl.learners.fast import Compiled, want_compile

        self._fast: tuple[Compiled, Compiled] | None = None
        if self.obs_spec is None and not cfg.value_net and want_compile(cfg.compile, self.device, ("cuda",)):
            self._fast = (Compiled(self._critic_loss, "sac.compile", dynamic=False),
                          Compiled(self._actor_loss, "sac.compile", dynamic=False))

    # ------------------------------------------------------------------ policy
    @property
    def alpha(self) -> torch.Tensor:
        return self.log_alpha.exp()

    def policy(self, obs_n: torch.Tensor, deterministic: bool = False,
               base_in: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """On features [B, F] (normalised obs, + image features): (final action [B, A],
        log pi(a_res|s) [B], SAC output [B, A]). ``base_in``: the residual base's features when it
        has its own encoder (else ``obs_n``)."""
        a, logp, mean = self.actor(obs_n, deterministic)
        if self.base is None:
            return a, logp, a
        with torch.no_grad():
            base = self.base(obs_n if base_in is None else base_in)
        # Executed action = clip(a_base + beta * a_res); the critic scores this final action.
        return (base + self.beta * a).clamp(-1.0, 1.0), logp, a

    # ------------------------------------------------------------------ observations -> features
    def vector(self, obs: torch.Tensor | Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The raw vector part [B, O] (flat obs, or the vector leaves of a Dict concatenated in sorted order)."""
        if not isinstance(obs, Mapping):
            return obs.float()
        if not self.vec_keys:
            b = next(iter(obs.values())).shape[0]
            return torch.zeros(b, 0, device=self.device)
        return torch.cat([obs[k].reshape(obs[k].shape[0], -1).float() for k in self.vec_keys], -1)

    def features(self, obs: torch.Tensor | Mapping[str, torch.Tensor], *, augment: bool = False,
                 index: torch.Tensor | None = None, next_obs: bool = False,
                 which: tuple[str, ...] = ("online",)) -> dict[str, torch.Tensor]:
        """Raw obs -> ``{name: [B, F]}`` for ``which`` in online / target / base.

        Flat obs: every name is the normalised obs. Cameras: one augmentation shared by the
        encoders (DrQ); online features carry the encoder's gradient (end to end); frozen encoders
        read the embedding cache when ``index`` (``Batch.index``) is given.
        """
        vec = self.normalizer(self.vector(obs))
        if self.encoder is None:
            return {w: vec for w in which}
        assert isinstance(obs, Mapping)
        if self.frozen:
            if index is not None:
                cache = self.cache_next if next_obs else self.cache_obs
                imgs = {k: obs[k] for k in self.encoder.keys}
                emb = cache.lookup(index, imgs, lambda o: self.encoder(o))  # type: ignore[misc]
            else:
                with torch.no_grad():
                    emb = self.encoder(obs).float()
            f = torch.cat([emb, vec], -1)
            return {w: f for w in which}
        ims = self.encoder.prepare(obs, augment)
        out = {}
        for w in which:
            if w == "online":
                out[w] = torch.cat([self.encoder.encode(ims).float(), vec], -1)
            else:
                enc = self.encoder_target if w == "target" else (self.base_encoder or self.encoder)
                with torch.no_grad():
                    out[w] = torch.cat([enc.encode(ims).float(), vec], -1)  # type: ignore[union-attr,operator]
        return out

    def _as_tensors(self, obs: Any) -> torch.Tensor | dict[str, torch.Tensor]:
        """Flat obs -> float32 [N, O]; a (nested) Dict obs, batched ``[N, *shape]`` or one env step
        (no batch dim), -> ``{leaf: [N, *shape]}`` named as the store names them (``pixels.front``)."""
        if not isinstance(obs, Mapping):
            return torch.as_tensor(obs, dtype=torch.float32, device=self.device)
        assert self.obs_spec is not None
        out: dict[str, torch.Tensor] = {}
        for k, v in _flatten(obs).items():
            t = v if isinstance(v, torch.Tensor) else torch.as_tensor(np.asarray(v))
            if k in self.obs_spec and t.dim() == len(self.obs_spec[k]):
                t = t.unsqueeze(0)  # one env step
            out[k] = t.to(self.device)
        return out

    @torch.no_grad()
    def act(self, obs: torch.Tensor | np.ndarray | Mapping[str, Any], deterministic: bool = False) -> torch.Tensor:
        """Raw obs [N, O] (or ``{leaf: [N, *shape]}``) -> final action [N, A] in [-1, 1]."""
        obs_t = self._as_tensors(obs)
        if self.base_encoder is not None:
            f = self.features(obs_t, which=("online", "base"))
            return self.policy(f["online"], deterministic, base_in=f["base"])[0]
        return self.policy(self.features(obs_t)["online"], deterministic)[0]

    @torch.no_grad()
    def behaviour_log_prob(self, obs: np.ndarray, action: np.ndarray) -> float | None:
        """log pi(action|obs) of the acting policy for one flat obs [1, O] and its sampled action [1, A] in
        (-1, 1) (stored for Retrace); None with a residual base or camera observations."""
        from roborl.learners.networks import squashed_log_prob

        if self.base is not None or self.pixels:
            return None
        f = self.features(self._as_tensors(obs))["online"]
        mu, log_std = self.actor.dist_params(f)
        a = torch.as_tensor(action, dtype=torch.float32, device=self.device).clamp(-1 + 1e-6, 1 - 1e-6)
        return float(squashed_log_prob(torch.atanh(a), mu, log_std)[0])

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
        if self._fast is not None and getattr(batch, "trace", None) is None:
            return self._update_fast(batch)
        c = self.cfg
        # Stores keep the env's dtype (gymnasium MuJoCo envs emit float64); learn in float32.
        base_w = ("base",) if self.base_encoder is not None else ()
        index = batch.index if self.frozen else None  # row ids key the frozen encoder's embedding cache
        with self._autocast():
            # Online features carry the encoder's gradient into the critic loss (end to end).
            f_obs = self.features(batch.obs, augment=True, index=index, which=("online",) + base_w)
        with torch.no_grad(), self._autocast():
            f_next = self.features(batch.next_obs, augment=True, index=index, next_obs=True,
                                   which=("online", "target") + base_w)
        obs, next_obs = f_obs["online"], f_next["online"]
        action = batch.action.float()
        alpha = self.alpha.detach()

        # --- critic: y = r + gamma^k (1 - terminal) * (min_{subset} Q'(s', a') - alpha log pi(a'|s'))
        with torch.no_grad(), self._autocast():
            # DrQ: the actor reads the online encoder's features of s', the target critic its target encoder's.
            next_a, next_logp, _ = self.policy(next_obs, base_in=f_next.get("base"))
            # REDQ / RLPD: min over a random subset of the ensemble (Chen 2021; Ball 2023); only that subset runs.
            idx = (torch.randperm(c.n_critics, device=next_a.device)[: c.critic_subset] if c.n_critics > 2 else None)
            q_next = self.critic_target(f_next["target"], next_a, members=idx)  # [N or k, B]
            target = soft_td_target(batch.reward * c.reward_scale, batch.discount, q_next.min(0).values, next_logp, alpha)
        with self._autocast():
            q = self.critic(obs, action)  # [N, B], float32 (output layer runs in float32)
        if getattr(batch, "trace", None) is not None:  # store.sampler.nstep_correction=retrace
            target = self._retrace_target(batch.trace, alpha)
        if self.critic_v is not None:  # SAC-V: y = r + discount * V'(s') replaces the soft Q target above
            with torch.no_grad():
                target = batch.reward * c.reward_scale + batch.discount * self.critic_v_target(f_next["target"])[:, 0]
        td = q - target.unsqueeze(0)
        critic_loss = (batch.weight * critic_td_loss(td, c.critic_loss)).mean(1).sum()
        zero_grad(self.critic_opt)  # = self.critic_opt.zero_grad(set_to_none=True), without its overhead
        critic_loss.backward()
        if c.grad_clip is not None:
            nn.utils.clip_grad_norm_(self._critic_params, c.grad_clip)
        adam_step(self.critic_opt)  # = self.critic_opt.step(), bit for bit, without its Python overhead

        metrics = {"critic_loss": critic_loss.detach(), "q_mean": q.detach().mean(),
                   "td_abs": td.detach().abs().mean()}
        if self.critic_v is not None:
            metrics["value_loss"] = self._value_step(obs.detach())
        # A Python counter (not a tensor) so the actor_every test never syncs with the device.
        self._updates += 1
        if self._updates > c.actor_delay and self._updates % c.actor_every == 0:
            # The actor reads detached features: its loss never moves the encoder (DrQ).
            base_in = f_obs["base"].detach() if "base" in f_obs else None
            metrics.update(self._actor_step(obs.detach(), action, batch.is_demo, base_in))
        self._polyak()
        metrics["alpha"] = alpha
        return metrics, td.detach().abs().mean(0)

    def _actor_step(self, obs: torch.Tensor, action: torch.Tensor, is_demo: torch.Tensor,
                    base_in: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        c = self.cfg
        for p in self._critic_params:  # no critic grads from the actor loss (saves a backward)
            p.requires_grad_(False)
        with self._autocast():
            a, logp, _ = self.policy(obs, base_in=base_in)
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
                det, _, _ = self.policy(obs, deterministic=True, base_in=base_in)
            demo = is_demo.float()
            bc = ((det - action).pow(2).sum(-1) * demo).sum() / demo.sum().clamp_min(1.0)
            lam = c.bc_weight * q_pi.detach().abs().mean().clamp_min(1.0)
            actor_loss = actor_loss + lam * bc
            out["bc_loss"] = bc.detach()
        self._actor_opt_step(actor_loss, logp)
        return out

    def _actor_opt_step(self, actor_loss: torch.Tensor, logp: torch.Tensor) -> None:
        """The actor's optimiser step (critic parameters frozen by the caller, unfrozen here), then the
        temperature's toward the target entropy -|A| (Haarnoja et al. 2018b). logp: log pi [B]."""
        c = self.cfg
        zero_grad(self.actor_opt)
        actor_loss.backward()
        if c.grad_clip is not None:
            nn.utils.clip_grad_norm_(self.actor.parameters(), c.grad_clip)
        adam_step(self.actor_opt)
        for p in self._critic_params:
            p.requires_grad_(True)
        if c.learn_alpha:
            alpha_loss = -(self.log_alpha * (logp.detach() + self.target_entropy)).mean()
            zero_grad(self.alpha_opt)
            alpha_loss.backward()
            adam_step(self.alpha_opt)

    # ------------------------------------------------------------------ fast path (flat observations)
    def _sample(self, obs: torch.Tensor, eps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """:meth:`policy` with its Gaussian noise ``eps`` [B, A] given: (final action [B, A], log pi [B], mu [B, A]).
        The same draws as the plain path: ``randn_like(mu)`` there is ``randn(B, A)`` here, in the same order."""
        mu, log_std = self.actor.dist_params(obs)
        u = mu + log_std.exp() * eps
        logp = squashed_log_prob(u, mu, log_std)
        a = torch.tanh(u)
        if self.base is not None:
            with torch.no_grad():
                base = self.base(obs)
            a = (base + self.beta * a).clamp(-1.0, 1.0)
        return a, logp, mu

    def _critic_loss(self, obs: torch.Tensor, action: torch.Tensor, next_obs: torch.Tensor, reward: torch.Tensor,
                     discount: torch.Tensor, weight: torch.Tensor, alpha: torch.Tensor, eps: torch.Tensor,
                     subset: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The critic loss of :meth:`update` as a pure function (what ``sac.compile`` compiles): features [B, F],
        action [B, A], reward/discount/weight [B], alpha [], eps [B, A], subset [k] or None -> (loss, Q [N, B], TD [N, B])."""
        c = self.cfg
        with torch.no_grad(), self._autocast():
            next_a, next_logp, _ = self._sample(next_obs, eps)
            q_next = self.critic_target(next_obs, next_a, members=subset)  # [N or k, B]
            target = soft_td_target(reward * c.reward_scale, discount, q_next.min(0).values, next_logp, alpha)
        with self._autocast():
            q = self.critic(obs, action)
        td = q - target.unsqueeze(0)
        loss = (weight * critic_td_loss(td, c.critic_loss)).mean(1).sum()
        return loss, q.detach(), td.detach()

    def _actor_loss(self, obs: torch.Tensor, action: torch.Tensor, demo: torch.Tensor, alpha: torch.Tensor,
                    eps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The actor loss of :meth:`_actor_step` as a pure function (critic parameters frozen by the caller):
        obs [B, F], action [B, A], demo [B] float, alpha [], eps [B, A] -> (loss, SAC loss without the BC
        term [], log pi [B], BC loss [])."""
        c = self.cfg
        with self._autocast():
            a, logp, mu = self._sample(obs, eps)
            q_pi = self.critic(obs, a)
        q_pi = q_pi.min(0).values if c.n_critics <= 2 else q_pi.mean(0)
        loss = sac_loss = (alpha * logp - q_pi).mean()
        bc = torch.zeros((), device=obs.device)
        if c.bc_weight > 0:
            det = torch.tanh(mu)  # the deterministic policy: u = mu
            if self.base is not None:
                with torch.no_grad():
                    base = self.base(obs)
                det = (base + self.beta * det).clamp(-1.0, 1.0)
            bc = ((det - action).pow(2).sum(-1) * demo).sum() / demo.sum().clamp_min(1.0)
            loss = loss + c.bc_weight * q_pi.detach().abs().mean().clamp_min(1.0) * bc
        return loss, sac_loss.detach(), logp.detach(), bc.detach()

    def _update_fast(self, batch: Batch) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """:meth:`update` for flat observations through the (compiled) pure losses and the fused Adam kernel
        called directly (:func:`roborl.learners.fast.adam_step`); the same math and random draws."""
        c = self.cfg
        assert self._fast is not None
        critic_loss_fn, actor_loss_fn = self._fast
        obs = self.normalizer(self.vector(batch.obs))
        next_obs = self.normalizer(self.vector(batch.next_obs))
        action = batch.action.float()
        alpha = self.alpha.detach()
        shape = (action.shape[0], self.act_dim)
        eps = torch.randn(shape, device=action.device)
        subset = (torch.randperm(c.n_critics, device=action.device)[: c.critic_subset] if c.n_critics > 2 else None)
        critic_loss, q, td = critic_loss_fn(obs, action, next_obs, batch.reward, batch.discount, batch.weight,
                                            alpha, eps, subset)
        zero_grad(self.critic_opt)  # = self.critic_opt.zero_grad(set_to_none=True), without its overhead
        critic_loss.backward()
        if c.grad_clip is not None:
            nn.utils.clip_grad_norm_(self._critic_params, c.grad_clip)
        adam_step(self.critic_opt)
        metrics = {"critic_loss": critic_loss.detach(), "q_mean": q.mean(), "td_abs": td.abs().mean()}
        self._updates += 1
        if self._updates > c.actor_delay and self._updates % c.actor_every == 0:
            for p in self._critic_params:
                p.requires_grad_(False)
            actor_loss, sac_loss, logp, bc = actor_loss_fn(obs, action, batch.is_demo.float(), alpha,
                                                           torch.randn(shape, device=action.device))
            metrics.update({"actor_loss": sac_loss, "entropy": -logp.mean()})
            if c.bc_weight > 0:
                metrics["bc_loss"] = bc
            self._actor_opt_step(actor_loss, logp)
        self._polyak()
        metrics["alpha"] = alpha
        return metrics, td.abs().mean(0)

    @torch.no_grad()
    def _retrace_target(self, tr: dict[str, torch.Tensor], alpha: torch.Tensor) -> torch.Tensor:
        """Retrace target [B] from a sampled trace (:class:`roborl.store.sampler.TraceBatch`) with the target
        critics: V(s) = min Q'(s, a') - alpha log pi(a'|s), a' ~ pi; Q(s_k, a_k) = min Q'(s_k, a_k);
        c_k = lambda min(1, pi(a_k|s_k) / mu(a_k|s_k)) with pi of the stored executed action (flat obs)."""
        from roborl.learners.networks import squashed_log_prob
        from roborl.learners.retrace import retrace_return, retrace_traces

        if self.pixels or self.base is not None:
            raise ValueError("store.sampler.nstep_correction=retrace: flat observations and no residual policy only")
        B, n = tr["reward"].shape
        s1 = self.normalizer(tr["next_obs"].reshape(B * n, -1).float())  # s_{t+k+1}, [B*n, O]
        a1, logp1, _ = self.policy(s1)
        v_next = (self.critic_target(s1, a1).min(0).values - alpha * logp1).view(B, n)
        # Step k >= 1 is at state s_{t+k} = next_obs of step k-1, with the stored action a_{t+k}.
        s_k = s1.view(B, n, -1)[:, :-1].reshape(B * (n - 1), -1)
        a_k = tr["action"][:, 1:].reshape(B * (n - 1), -1).float().clamp(-1 + 1e-6, 1 - 1e-6)
        q = self.critic_target(s_k, a_k).min(0).values.view(B, n - 1)
        mu, log_std = self.actor.dist_params(s_k)
        pi_logp = squashed_log_prob(torch.atanh(a_k), mu, log_std).view(B, n - 1)
        c = retrace_traces(pi_logp, tr["behaviour_logp"][:, 1:], float(tr["lambda"]))
        pad = torch.zeros(B, 1, device=c.device)
        return retrace_return(tr["reward"] * self.cfg.reward_scale, tr["valid"], tr["terminal"],
                              torch.cat([pad, c], 1), torch.cat([pad, q], 1), v_next, self.cfg.gamma)

    @torch.no_grad()
    def soft_value_target(self, obs: torch.Tensor) -> torch.Tensor:
        """V's regression target on features [B, F]: min_i Q_i(s, a) - alpha log pi(a|s), a ~ pi(.|s) (one
        sample; its mean over a is the soft value E_a~pi[Q(s, a) - alpha log pi(a|s)]) -> [B]."""
        a, logp, _ = self.policy(obs)
        return self.critic(obs, a).min(0).values - self.alpha * logp

    def _value_step(self, obs: torch.Tensor) -> torch.Tensor:
        """One step of 0.5 (V(s) - soft_value_target(s))^2 on features [B, F]; returns the loss (detached)."""
        assert self.critic_v is not None
        loss = 0.5 * (self.critic_v(obs)[:, 0] - self.soft_value_target(obs)).pow(2).mean()
        self.value_opt.zero_grad(set_to_none=True)
        loss.backward()
        self.value_opt.step()
        return loss.detach()

    @torch.no_grad()
    def _polyak(self) -> None:
        torch._foreach_lerp_(self._polyak_dst, self._polyak_src, self.cfg.tau)
        if self._enc_dst:
            # target <- target + tau_enc (online - target): DrQ's separate, faster encoder rate.
            torch._foreach_lerp_(self._enc_dst, self._enc_src, self.cfg.encoder.tau)

    @torch.no_grad()
    def _sync_target_encoder(self) -> None:
        """Target encoder := online encoder (after BC pretraining moved the online one)."""
        for d, s in zip(self._enc_dst, self._enc_src):
            d.copy_(s)

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
            self.normalizer.fit(self.vector(b.obs))
        if c.bc_pretrain_steps > 0 and num_demo_steps > 0:
            for _ in progress(range(c.bc_pretrain_steps), total=c.bc_pretrain_steps, desc="BC pretrain"):
                # BC targets are the demonstrator's actions for the goals it was given: no HER relabelling.
                b = sample(c.batch_size, gamma=c.gamma, demo_fraction=1.0, relabel=False)
                self.bc_update(b.obs, b.action, index=b.index if self.frozen else None)
        elif c.residual:
            raise UsageError("sac.residual: residual mode needs demos (store.demos) and sac.bc_pretrain_steps > 0")
        if c.residual:
            self.init_residual_actor()
        if self.base_encoder is not None:
            self.base_encoder.requires_grad_(False)
        self._sync_target_encoder()

    # ------------------------------------------------------------------ behaviour cloning
    def bc_update(self, obs: torch.Tensor | Mapping[str, torch.Tensor], action: torch.Tensor,
                  index: torch.Tensor | None = None) -> torch.Tensor:
        """One BC step on demo (obs [B, O] raw or a Dict batch, action [B, A]). Residual mode trains the
        base policy (and its encoder), otherwise the actor's mean action (and the encoder, end to end).
        Images are randomly shifted as in RL. Returns the MSE (detached)."""
        action = action.float()
        if self.base is not None:
            which = "base" if self.base_encoder is not None else "online"
            if self.base_encoder is not None:
                ims = self.encoder.prepare(obs, augment=True)  # type: ignore[union-attr,arg-type]
                f = torch.cat([self.base_encoder.encode(ims).float(),  # type: ignore[operator]
                               self.normalizer(self.vector(obs))], -1)
            else:
                f = self.features(obs, augment=True, index=index, which=(which,))[which]
            pred, opt = self.base(f), self.base_opt
        else:
            f = self.features(obs, augment=True, index=index)["online"]
            mu, _ = self.actor.dist_params(f)
            pred, opt = torch.tanh(mu), self.bc_opt
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
        if self.bc_opt is not self.actor_opt:
            st["bc_opt"] = self.bc_opt.state_dict()
        if self.critic_v is not None:
            st["value_opt"] = self.value_opt.state_dict()
        return st

    def load_full_state(self, st: dict[str, Any]) -> None:
        self.load_state_dict(st["model"])
        self.actor_opt.load_state_dict(st["actor_opt"])
        self.critic_opt.load_state_dict(st["critic_opt"])
        self.alpha_opt.load_state_dict(st["alpha_opt"])
        self._updates = int(st.get("updates", 0))
        if self.base_opt is not None and "base_opt" in st:
            self.base_opt.load_state_dict(st["base_opt"])
        if self.bc_opt is not self.actor_opt and "bc_opt" in st:
            self.bc_opt.load_state_dict(st["bc_opt"])
        if self.critic_v is not None and "value_opt" in st:
            self.value_opt.load_state_dict(st["value_opt"])
        if self.base_encoder is not None and self._updates > 0:
            self.base_encoder.requires_grad_(False)

    def acting_state(self) -> dict[str, torch.Tensor]:
        """What a remote actor needs: normaliser, actor, residual base and beta (no critics, no temperature)."""
        return {k: v for k, v in self.state_dict().items()
                if not k.startswith(("critic", "log_alpha", "encoder_target"))}

    def load_acting_state(self, state: dict[str, torch.Tensor]) -> None:
        self.load_state_dict(state, strict=False)

    def as_policy(self) -> "SACPolicy":
        return SACPolicy(self)


def _leaf(name: str) -> str:
    """One leaf naming for Dict observations: the store's dotted keys (``spaces.leaves`` joins with ``/``)."""
    return name.replace("/", ".")


def _flatten(obs: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in obs.items():
        name = _leaf(prefix + str(k))
        if isinstance(v, Mapping):
            out.update(_flatten(v, name + "."))
        else:
            out[name] = v
    return out


def _adam(params: Any, lr: float) -> torch.optim.Optimizer:
    return torch.optim.Adam(params, lr=lr, fused=True)


class SACPolicy:
    """The Policy protocol over a SAC learner: raw obs [N, O] (numpy) -> actions [N, A] in [-1, 1]."""

    def __init__(self, learner: SAC) -> None:
        self.learner = learner.eval()

    def act(self, obs: np.ndarray | Mapping[str, np.ndarray], deterministic: bool = True) -> np.ndarray:
        """obs [N, O], or ``{leaf: [N, *shape]}`` for Dict observations (``spaces.flatten_obs`` names)."""
        if not isinstance(obs, Mapping):
            obs = np.asarray(obs, dtype=np.float32)
        return self.learner.act(obs, deterministic).cpu().numpy()


def policy_from_checkpoint(state: dict[str, Any], meta: dict[str, Any], device: str = "cpu") -> SACPolicy:
    """Rebuild the acting policy (normaliser, actor, residual base) from a checkpoint alone."""
    from roborl.config import build

    import dataclasses

    # Tolerate keys a later version removed (the checkpoint's weights are what matter here).
    known = {f.name for f in dataclasses.fields(SACConfig)}
    cfg = build(SACConfig, {k: v for k, v in meta["config"]["sac"].items() if k in known}, source="checkpoint meta")
    # Dict observations: the checkpoint's meta carries the spec {leaf: shape}; the frozen encoder's
    # weights come from the checkpoint, not from sac.encoder.weights (that file need not exist here).
    obs: int | dict[str, Any] = meta["obs_spec"] if meta.get("obs_spec") else int(meta["obs_shape"][0])
    learner = SAC(obs, int(meta["act_shape"][0]), cfg, device, load_encoder_weights=False)
    learner.load_state_dict(state["learner"]["model"])
    return SACPolicy(learner)

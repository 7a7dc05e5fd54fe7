"""Proximal Policy Optimization (Schulman et al. 2017): PPO-clip and PPO-KL with GAE, read top to bottom.

This module holds losses and updates only (no files, zarr or envs; the loop lives in
``roborl/runners/on_policy.py``). References: Schulman et al. 2017 (PPO, PPO-KL, KL early stop),
Schulman et al. 2016 (GAE), CleanRL ``ppo_continuous_action.py`` and SB3 (defaults,
initialisation), rsl_rl (target-KL adaptive learning rate; the encoder / actor / critic split),
Pinto et al. 2018 (asymmetric actor-critic).

Design decisions (why):

* **Policy**: a diagonal Gaussian with a *state-independent* log-std parameter (standard for
  PPO: SB3, CleanRL, rsl_rl). ``action_squash="clip"`` samples ``u ~ N(mu, std)`` and sends
  ``clip(u, -1, 1)`` to the env (log-probs are of ``u``, as in SB3/CleanRL);
  ``action_squash="tanh"`` sends ``tanh(u)``. In both cases the buffer stores ``u``, and the
  importance ratio ``pi'(u)/pi(u)`` is exact: the tanh Jacobian is the same for old and new
  policy and cancels. The entropy bonus uses the entropy of ``N(mu, std)`` (the squashed
  distribution has no closed form).
* **Observation normalization** lives *inside* the model (running mean/var buffers,
  :class:`RunningMeanStd`), so it is saved with every checkpoint and eval needs nothing else.
  The statistics are frozen during a rollout and its update and refreshed afterwards with
  that rollout's observations: the log-probs stored at collection time and the ones
  recomputed in the update then see identically normalized inputs, so the ratio is exactly
  1 at the first minibatch (updating per step, as rsl_rl does, breaks that).
* **Model = encoders + actor + critic** (rsl_rl's layout): observations are a dict of groups
  (``{"policy": [B, O]}`` for a flat Box env, one group per key of a Dict env). Each group has its
  own normaliser; ``actor_encoder`` and ``critic_encoder`` turn the normalised groups into feature
  vectors (:class:`~roborl.learners.networks.ConcatEncoder` by default; a CNN, or one encoder
  shared by both with ``critic_encoder=actor_encoder``); ``actor`` and ``critic`` are MLPs.
* **Asymmetric actor-critic** (Pinto et al. 2018; OpenAI 2019): the group named ``"critic"``
  (:data:`PRIVILEGED`) is privileged simulator state (DR parameters, true object poses) that
  only the critic reads. Only the actor is needed to deploy, so the real robot never has to
  provide it.
* **Fast path**: when both encoders are plain concatenations and actor and critic have the same
  hidden sizes, the two MLPs also run fused as one 2-member batched MLP (:class:`_FusedPair`),
  their parameters re-homed into that layout: half the (overhead-bound) ops per step on a CPU.
  The plain modules stay the reference and own the parameters (views of the same storage).
* **GAE** distinguishes *terminated* (no bootstrap) from *truncated* (bootstrap from
  ``V(s_T)`` of the real final observation): :func:`compute_gae` takes ``next_values``,
  the value of the state that actually followed each step.

Shapes: ``T`` rollout steps per env, ``N`` envs, ``B = T*N``, ``O_k`` the size of observation
group k, ``A`` action dim.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from roborl.learners.base import POLICY, PRIVILEGED, Rollout
from roborl.learners.config import PPOConfig
from roborl.learners.fast import adam_step
from roborl.learners.networks import ConcatEncoder, RunningMeanStd, combine_moments

__all__ = [
    "PPOConfig", "RunningMeanStd", "ActorCritic", "PPO", "PPOPolicy", "Rollout", "POLICY", "PRIVILEGED",
    "compute_gae", "gaussian_log_prob", "gaussian_entropy", "gaussian_kl", "approx_kl",
    "clipped_surrogate", "policy_from_checkpoint",
]

_LOG_2PI = math.log(2.0 * math.pi)


def obs_groups(obs: Any) -> dict[str, Any]:
    """A flat observation [N, O] -> ``{"policy": obs}``; a dict of groups is returned as is."""
    return obs if isinstance(obs, Mapping) else {POLICY: obs}


# ============================================================================= distributions

def gaussian_log_prob(u: torch.Tensor, mu: torch.Tensor, log_std: torch.Tensor) -> torch.Tensor:
    """log N(u; mu, diag(exp(log_std)^2)) summed over the action dim. u, mu: [B, A]; log_std: [A] -> [B]."""
    z = (u - mu) * torch.exp(-log_std)
    return (-0.5 * z.pow(2) - log_std).sum(-1) - 0.5 * _LOG_2PI * u.shape[-1]


def _gaussian_log_prob_inv(u: torch.Tensor, mu: torch.Tensor, log_std: torch.Tensor,
                           inv_std: torch.Tensor) -> torch.Tensor:
    """:func:`gaussian_log_prob` with ``inv_std = exp(-log_std)`` [A] given (the rollout caches it)."""
    z = (u - mu) * inv_std
    return (-0.5 * z.pow(2) - log_std).sum(-1) - 0.5 * _LOG_2PI * u.shape[-1]


def gaussian_entropy(log_std: torch.Tensor) -> torch.Tensor:
    """Entropy of a diagonal Gaussian, summed over the action dim. log_std: [..., A] -> [...]."""
    return (log_std + 0.5 * (1.0 + _LOG_2PI)).sum(-1)


def gaussian_kl(mu_p: torch.Tensor, log_std_p: torch.Tensor, mu_q: torch.Tensor, log_std_q: torch.Tensor) -> torch.Tensor:
    """Closed-form KL(p || q) of diagonal Gaussians, summed over the action dim. [B, A] (or [A]) -> [B].

    KL = sum_i log(s_q/s_p) + (s_p^2 + (mu_p - mu_q)^2) / (2 s_q^2) - 1/2.
    """
    var_p, var_q = torch.exp(2 * log_std_p), torch.exp(2 * log_std_q)
    return (log_std_q - log_std_p + (var_p + (mu_p - mu_q).pow(2)) / (2 * var_q) - 0.5).sum(-1)


def approx_kl(logp_old: torch.Tensor, logp_new: torch.Tensor) -> torch.Tensor:
    """Sample estimate of KL(old || new) from log-probs of actions drawn from *old*. [B] -> scalar.

    The unbiased, always non-negative "k3" estimator E[(r - 1) - log r], r = new/old
    (Schulman, "Approximating KL divergence", 2020; used by CleanRL and SB3).
    """
    log_ratio = logp_new - logp_old
    return ((torch.exp(log_ratio) - 1) - log_ratio).mean()


def clipped_surrogate(ratio: torch.Tensor, adv: torch.Tensor, eps: float) -> torch.Tensor:
    """PPO-clip loss to *minimise*: -mean(min(r A, clip(r, 1-eps, 1+eps) A)). ratio, adv: [B] -> scalar.

    The min makes the bound pessimistic (Schulman et al. 2017, sec. 3): outside [1-eps, 1+eps] in the direction
    that would improve the objective the clipped term is selected and its gradient is zero.
    """
    return -torch.min(ratio * adv, ratio.clamp(1.0 - eps, 1.0 + eps) * adv).mean()


# ============================================================================= GAE

def compute_gae(rewards: torch.Tensor, values: torch.Tensor, next_values: torch.Tensor, terminated: torch.Tensor,
                dones: torch.Tensor, gamma: float, lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalized advantage estimation, vectorised over envs (one loop over time).

    Args (all ``[T, N]``):
        rewards: r_t.
        values: V(s_t).
        next_values: V of the state that *actually followed* step t: V(s_{t+1}) inside an
            episode, V(final_obs) when step t ended the episode (only used if truncated).
        terminated: 1 where s_{t+1} is terminal: no bootstrap, (1 - term) zeroes the target.
        dones: 1 where the episode ended at step t (terminated or truncated): the GAE
            recursion must not carry advantages across into the next episode.
    Returns:
        advantages ``[T, N]`` and returns ``advantages + values`` (the value targets).

    delta_t = r_t + gamma (1 - term_t) V_next_t - V(s_t);  A_t = delta_t + gamma lam (1 - done_t) A_{t+1}.
    """
    not_term = 1.0 - terminated.to(rewards.dtype)
    not_done = 1.0 - dones.to(rewards.dtype)
    deltas = rewards + gamma * not_term * next_values - values
    if deltas.device.type == "cpu" and deltas.dtype == torch.float32 and not deltas.requires_grad:
        # The same recursion on numpy views: a small numpy op dispatches several times faster than a
        # torch op, and the loop runs T steps of 3 of them. Elementwise IEEE float32 ops either way (a Python float scalar is
        # cast to float32 by both), so the result is bit-identical to the torch loop below.
        d, nd = deltas.numpy(), not_done.numpy()
        out = np.empty_like(d)
        last_np = np.zeros_like(d[0])
        for t in range(d.shape[0] - 1, -1, -1):
            last_np = d[t] + gamma * lam * nd[t] * last_np
            out[t] = last_np
        adv = torch.from_numpy(out)
        return adv, adv + values
    adv = torch.zeros_like(rewards)
    last = torch.zeros_like(rewards[0])
    for t in range(rewards.shape[0] - 1, -1, -1):
        last = deltas[t] + gamma * lam * not_done[t] * last
        adv[t] = last
    return adv, adv + values


# ============================================================================= networks

_ACTS: dict[str, Any] = {"tanh": torch.tanh, "relu": torch.relu, "elu": nn.functional.elu}
_ACT_MODULES: dict[str, type[nn.Module]] = {"tanh": nn.Tanh, "relu": nn.ReLU, "elu": nn.ELU}


def mlp(inp: int, hidden: tuple[int, ...], out: int, activation: str) -> nn.Sequential:
    """``Linear, act, ..., Linear``: [B, inp] -> [B, out]."""
    layers: list[nn.Module] = []
    dims = [inp, *hidden]
    for d_in, d_out in zip(dims[:-1], dims[1:]):
        layers += [nn.Linear(d_in, d_out), _ACT_MODULES[activation]()]
    layers.append(nn.Linear(dims[-1], out))
    return nn.Sequential(*layers)


def _linears(net: nn.Module) -> list[nn.Linear]:
    return [m for m in net.modules() if isinstance(m, nn.Linear)]


@torch.no_grad()
def _orthogonal_init(actor: nn.Module, critic: nn.Module) -> None:
    """Init (SB3/CleanRL; Andrychowicz et al. 2021): orthogonal weights, gain sqrt(2) for hidden layers,
    0.01 for the actor head (the initial policy is ~N(0, std)), 1 for the critic head; zero biases.

    Layers are drawn layer by layer, actor then critic, each on its ``[in, out]`` matrix: the same
    values whether or not the fast path later re-homes them.
    """
    la, lc = _linears(actor), _linears(critic)
    for i in range(max(len(la), len(lc))):
        for layers, head_gain in ((la, 0.01), (lc, 1.0)):
            if i < len(layers):
                lin = layers[i]
                nn.init.orthogonal_(lin.weight.T, head_gain if i == len(layers) - 1 else math.sqrt(2.0))
                nn.init.zeros_(lin.bias)


class ActorCritic(nn.Module):
    """Per-group normalisers, actor/critic encoders, the actor and critic MLPs and a state-independent log-std.

    ``obs_rms[k]``: :class:`RunningMeanStd` of group k (``[B, O_k]``);
    ``actor_encoder``: normalised groups -> [B, F_a] (all groups but :data:`PRIVILEGED`);
    ``critic_encoder``: normalised groups -> [B, F_c] (all groups); the same module as
    ``actor_encoder`` when passed so (a shared trunk: one assignment);
    ``actor``: [B, F_a] -> mu [B, A]; ``critic``: [B, F_c] -> [B, 1]; ``log_std``: [A].
    """

    def __init__(self, obs_dims: Mapping[str, int] | int, act_dim: int, cfg: PPOConfig,
                 actor_encoder: nn.Module | None = None, critic_encoder: nn.Module | None = None) -> None:
        super().__init__()
        dims = {POLICY: obs_dims} if isinstance(obs_dims, int) else dict(obs_dims)
        if not dims or any(d <= 0 for d in dims.values()):
            raise ValueError(f"observation groups need positive sizes, got {dims}")
        self.obs_dims, self.act_dim = {k: int(d) for k, d in dims.items()}, act_dim
        self.squash = cfg.action_squash
        self.norm_obs = cfg.norm_obs
        self.activation = cfg.activation
        actor_keys = tuple(k for k in self.obs_dims if k != PRIVILEGED)
        if not actor_keys:
            raise ValueError(f"the actor needs an observation group other than {PRIVILEGED!r}")
        critic_keys = actor_keys + ((PRIVILEGED,) if PRIVILEGED in self.obs_dims else ())
        self.obs_rms = nn.ModuleDict({k: RunningMeanStd(d, cfg.obs_clip) for k, d in self.obs_dims.items()})
        self.actor_encoder = actor_encoder if actor_encoder is not None else ConcatEncoder(self.obs_dims, actor_keys)
        self.critic_encoder = critic_encoder if critic_encoder is not None else ConcatEncoder(self.obs_dims, critic_keys)
        self.actor = mlp(int(self.actor_encoder.out_dim), tuple(cfg.hidden), act_dim, cfg.activation)
        self.critic = mlp(int(self.critic_encoder.out_dim), tuple(cfg.critic_hidden or cfg.hidden), 1, cfg.activation)
        _orthogonal_init(self.actor, self.critic)
        self.log_std = nn.Parameter(torch.full((act_dim,), float(cfg.init_log_std)))
        self._fused: _FusedPair | None = None
        self.raw_keys = frozenset(getattr(self.actor_encoder, "raw_keys", ())) | frozenset(
            getattr(self.critic_encoder, "raw_keys", ()))

    # ---------------------------------------------------------------- plain modules (the reference)
    def normalize(self, obs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Raw groups ``{k: [B, O_k]}`` -> normalised groups (groups this model does not know are dropped)."""
        if not self.norm_obs:
            return {k: v for k, v in obs.items() if k in self.obs_dims}
        # Groups an encoder reads raw (camera images: encoders.GroupPixelEncoder.raw_keys) skip the normaliser.
        return {k: v if k in self.raw_keys else self.obs_rms[k](v) for k, v in obs.items() if k in self.obs_dims}

    def actor_mean(self, obs_n: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Normalised groups -> mu [B, A] (the actor alone: what a deployed policy runs)."""
        return self.actor(self.actor_encoder(obs_n))

    def plain(self, obs_n: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised groups -> (mu [B, A], V [B]) through the plain modules."""
        za = self.actor_encoder(obs_n)
        zc = za if self.critic_encoder is self.actor_encoder else self.critic_encoder(obs_n)
        return self.actor(za), self.critic(zc)[:, 0]

    def forward(self, obs_n: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised groups -> (mu [B, A], V [B]); fused when :meth:`flatten` enabled the fast path."""
        if self._fused is not None:
            return self._fused(self._fused.pair_input(obs_n))
        return self.plain(obs_n)

    # ---------------------------------------------------------------- update inputs
    def batch_input(self, obs_n: dict[str, torch.Tensor]) -> Any:
        """What :meth:`forward_batch` takes for a whole batch, prepared once per update: the fused pair
        input ``[2, B, D]`` on the fast path, else the normalised groups (encoders run per minibatch)."""
        return self._fused.pair_input(obs_n) if self._fused is not None else obs_n

    def forward_batch(self, x: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """A (minibatch of a) :meth:`batch_input` -> (mu [b, A], V [b])."""
        return self._fused(x) if self._fused is not None else self.plain(x)

    @staticmethod
    def take(x: Any, idx: torch.Tensor) -> Any:
        """Rows ``idx`` of a :meth:`batch_input` (its batch dim is 1 for the pair tensor, 0 for groups)."""
        return {k: v[idx] for k, v in x.items()} if isinstance(x, dict) else x[:, idx]

    @staticmethod
    def split(x: Any, size: int) -> list[Any]:
        """Consecutive minibatches of ``size`` rows of a :meth:`batch_input`."""
        if isinstance(x, dict):
            keys = list(x)
            return [dict(zip(keys, parts)) for parts in zip(*(x[k].split(size) for k in keys))]
        return list(x.split(size, 1))

    # ---------------------------------------------------------------- actions
    def squash_action(self, u: torch.Tensor) -> torch.Tensor:
        """Gaussian sample u [B, A] -> env action in [-1, 1]."""
        return torch.tanh(u) if self.squash == "tanh" else u.clamp(-1.0, 1.0)

    def deterministic(self, obs: Mapping[str, torch.Tensor] | torch.Tensor) -> torch.Tensor:
        """Raw obs (groups or [B, O]) -> mean action in [-1, 1], [B, A]."""
        return self.squash_action(self.actor_mean(self.normalize(obs_groups(obs))))

    # ---------------------------------------------------------------- parameter layout
    def fusable(self) -> bool:
        """The fast path applies: parameter-free concatenating encoders (critic input = actor input
        + privileged columns) and actor and critic MLPs of the same depth, widths and activation."""
        ea, ec = self.actor_encoder, self.critic_encoder
        if not (isinstance(ea, ConcatEncoder) and isinstance(ec, ConcatEncoder)):
            return False
        if ec.keys[:len(ea.keys)] != ea.keys:
            return False
        la, lc = _linears(self.actor), _linears(self.critic)
        return len(la) == len(lc) and all(a.out_features == c.out_features for a, c in zip(la[:-1], lc[:-1]))

    def flatten(self, fuse: bool = True) -> nn.Parameter:
        """Re-home every parameter as a view of one flat parameter (grads likewise) and return it.

        With ``fuse`` and :meth:`fusable`, the layout is the fused pair's (:class:`_FusedPair`) and
        :meth:`forward` runs fused from then on. Call after ``.to(device)`` and not again: moving the
        model afterwards would detach the views.
        """
        if fuse and self.fusable():
            self._fused = _FusedPair(self)
            return self._fused.flat
        return _flatten_parameters(self)


# ============================================================================= fast path: fused actor-critic pair

class _FusedPair:
    """The actor MLP and the critic MLP run together: one batched matmul (``baddbmm``) per layer.

    Member 0 is the actor, member 1 the critic: ``x: [2, B, D] -> (mu [B, A], V [B])``. The two
    networks share no weights; stacking them only halves the number of (overhead-bound) ops per
    step on a CPU. Layer i's weights live in one ``[2, in, out]`` block (and biases in ``[2, 1, out]``)
    of a flat buffer; the plain ``nn.Linear`` parameters of ``model.actor`` / ``model.critic`` are
    re-homed as views into their member's corner of it, so both paths read and train the same
    numbers. Where the actor is narrower (its input lacks the privileged columns; its head has A
    outputs, the critic's 1), the block is zero-padded: the actor's input is the normalised
    observation zero-padded to the critic's width, so the padding weights get exactly zero gradient
    and stay zero (Adam moves nothing with zero gradients), and no output reads the padded columns.

    Not an ``nn.Module``: the model's state_dict holds the plain modules' parameters only.
    """

    def __init__(self, model: ActorCritic) -> None:
        self.act = _ACTS[model.activation]
        self.act_dim = model.act_dim
        self.encoder_a, self.encoder_c = model.actor_encoder, model.critic_encoder
        self.same_input = self.encoder_a.keys == self.encoder_c.keys
        la, lc = _linears(model.actor), _linears(model.critic)
        ref = model.log_std
        blocks = [(2, max(a.in_features, c.in_features), max(a.out_features, c.out_features)) for a, c in zip(la, lc)]
        fused_ids = {id(p) for lin in la + lc for p in (lin.weight, lin.bias)}
        others = [p for p in model.parameters() if id(p) not in fused_ids]  # log_std (and any encoder parameters)
        n = sum(b[0] * b[1] * b[2] + b[0] * b[2] for b in blocks) + sum(p.numel() for p in others)
        data = torch.zeros(n, dtype=ref.dtype, device=ref.device)
        grad = torch.zeros_like(data)
        self.weights: list[torch.Tensor] = []
        self.biases: list[torch.Tensor] = []
        off = 0

        def take(shape: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
            nonlocal off
            k = math.prod(shape)
            d, g = data[off:off + k].view(shape), grad[off:off + k].view(shape)
            off += k
            return d, g

        def rehome(p: nn.Parameter, d: torch.Tensor, g: torch.Tensor) -> None:
            d.copy_(p.detach())
            p.data = d
            p.grad = g

        for (m2, d_in, d_out), a, c in zip(blocks, la, lc):
            w, gw = take((m2, d_in, d_out))
            b, gb = take((m2, 1, d_out))
            for m, lin in enumerate((a, c)):
                i, o = lin.in_features, lin.out_features
                rehome(lin.weight, w[m, :i, :o].T, gw[m, :i, :o].T)
                rehome(lin.bias, b[m, 0, :o], gb[m, 0, :o])
            # Leaves of their own over the same storage: autograd accumulates their gradients
            # in place into the same flat gradient buffer the plain parameters' .grad views.
            lw, lb = w.detach().requires_grad_(), b.detach().requires_grad_()
            lw.grad, lb.grad = gw, gb
            self.weights.append(lw)
            self.biases.append(lb)
        for p in others:
            d, g = take(tuple(p.shape))
            rehome(p, d, g)
        self.flat = nn.Parameter(data)
        self.flat.grad = grad

    def pair_input(self, obs_n: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Normalised groups -> [2, B, D]: the zero-padded actor input and the critic input."""
        xa = self.encoder_a(obs_n)
        if self.same_input:
            return xa.unsqueeze(0).expand(2, -1, -1)
        xc = self.encoder_c(obs_n)
        pad = xa.new_zeros(xa.shape[0], xc.shape[1] - xa.shape[1])
        return torch.stack([torch.cat([xa, pad], -1), xc])

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x [2, B, D] -> (mu [B, A], V [B])."""
        n = len(self.weights)
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            x = torch.baddbmm(b, x, w)
            if i < n - 1:
                x = self.act(x)
        return x[0, :, :self.act_dim], x[1, :, 0]


def _fused_step_fn(pair: _FusedPair, log_std: torch.Tensor, cfg: PPOConfig) -> Any:
    """The fast path's minibatch step as one pure function of the flat parameter: PPO loss, its gradient
    (``torch.func.grad``, no autograd tape) and the gradient-norm clip, which ``torch.compile`` turns into
    one graph. The same math as the plain step in :meth:`PPO.update` (forward through the fused pair,
    surrogate, value loss, entropy bonus, ``g * min(1, max_norm / (|g| + 1e-6))``).

    ``step(flat [P], x [2, b, D], u [b, A], logp_old [b], mu_old [b, A], adv [b], ret [b], v_old [b],
    log_std_old [A], beta []) -> (clipped grad [P], pg_loss [], v_loss [], log_ratio [b], kl [])``.
    """
    # Where each block lives in the flat buffer: the fused pair's leaves and log_std are views of it.
    w_at = [(w.storage_offset(), tuple(w.shape)) for w in pair.weights]
    b_at = [(b.storage_offset(), tuple(b.shape)) for b in pair.biases]
    ls_at, a_dim = log_std.storage_offset(), pair.act_dim
    act, n = pair.act, len(w_at)

    def loss_fn(flat: torch.Tensor, x: torch.Tensor, u: torch.Tensor, logp_old: torch.Tensor, mu_old: torch.Tensor,
                adv: torch.Tensor, ret: torch.Tensor, v_old: torch.Tensor, log_std_old: torch.Tensor,
                beta: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        for i, ((wo, ws), (bo, bs)) in enumerate(zip(w_at, b_at)):
            x = torch.baddbmm(flat[bo:bo + math.prod(bs)].view(bs), x, flat[wo:wo + math.prod(ws)].view(ws))
            if i < n - 1:
                x = act(x)
        mu, v = x[0, :, :a_dim], x[1, :, 0]
        ls = flat[ls_at:ls_at + a_dim]
        log_ratio = gaussian_log_prob(u, mu, ls) - logp_old
        ratio = log_ratio.exp()
        if cfg.loss == "clip":
            pg_loss = clipped_surrogate(ratio, adv, cfg.clip_eps)
        else:
            pg_loss = -(ratio * adv).mean() + beta * gaussian_kl(mu_old, log_std_old, mu, ls).mean()
        if cfg.clip_value is not None:
            v_clip = v_old + (v - v_old).clamp(-cfg.clip_value, cfg.clip_value)
            v_loss = torch.max((v - ret).pow(2), (v_clip - ret).pow(2)).mean()
        else:
            v_loss = (v - ret).pow(2).mean()
        loss = pg_loss + cfg.vf_coef * v_loss
        if cfg.ent_coef > 0:
            loss = loss - cfg.ent_coef * gaussian_entropy(ls)
        kl = ((ratio - 1) - log_ratio).mean()
        return loss, (pg_loss.detach(), v_loss.detach(), log_ratio.detach(), kl.detach())

    grad_fn = torch.func.grad(loss_fn, has_aux=True)

    def step(flat: torch.Tensor, *batch: torch.Tensor) -> tuple[torch.Tensor, ...]:
        g, aux = grad_fn(flat, *batch)
        if cfg.max_grad_norm is not None:
            g = g * (cfg.max_grad_norm / (g.norm() + 1e-6)).clamp_max(1.0)
        return (g, *aux)

    return step


def _flatten_parameters(module: nn.Module) -> nn.Parameter:
    """Re-home every parameter of ``module`` as a view of one flat parameter, grads likewise.

    Returns the flat parameter (its ``.grad`` is the flat gradient buffer). Autograd
    accumulates into an existing ``.grad`` in place, so the views stay valid as long as
    grads are zeroed with ``zero_()`` rather than set to None; ``load_state_dict`` copies
    in place and keeps them too.
    """
    params = list(module.parameters())
    n = sum(p.numel() for p in params)
    ref = params[0]
    flat = torch.zeros(n, dtype=ref.dtype, device=ref.device)
    grad = torch.zeros_like(flat)
    off = 0
    for p in params:
        k = p.numel()
        flat[off:off + k].copy_(p.detach().reshape(-1))
        p.data = flat[off:off + k].view_as(p)
        p.grad = grad[off:off + k].view_as(p)
        off += k
    flat_param = nn.Parameter(flat)
    flat_param.grad = grad
    return flat_param


def _adam_impl(device: torch.device) -> dict[str, bool]:
    """The fused Adam kernel where this torch has it for the device (CPU since torch 2.4), else foreach."""
    try:
        torch.optim.Adam([nn.Parameter(torch.zeros(1, device=device))], fused=True)
        return {"fused": True}
    except (RuntimeError, TypeError):
        return {"foreach": True}


_OLD_LAYOUT_KEYS = ("net.weights.0", "obs_rms.mean")


def _check_layout(model_state: Mapping[str, Any]) -> None:
    """One line instead of a key-mismatch traceback for checkpoints of the single pair-MLP model."""
    from roborl.errors import UsageError

    if any(k in model_state for k in _OLD_LAYOUT_KEYS):
        raise UsageError("checkpoint holds the old PPO model layout (one fused pair MLP, before the "
                         "encoder/actor/critic split); it cannot be loaded: retrain")


# ============================================================================= learner

COMPILE_MIN_STEPS = 20_000
"""``ppo.compile: auto`` compiles for runs of at least this many gradient steps: a compile costs seconds
once, a compiled step saves a fraction of a millisecond (BENCHMARKS.md, learner throughput), so shorter
runs (tests, smoke runs) would spend more time compiling than they save."""


class _NumpyAct:
    """:meth:`PPO.act` on numpy views of the fused pair's parameters (CPU, float32, tanh / relu): the
    rollout's per-step inference for a handful of envs.

    Why: at [8, 17] -> 64 -> 64 -> [8, 6] an ``act``'s ~25 torch ops cost their dispatch, not their
    arithmetic, and the same ops on numpy arrays dispatch several times faster (BENCHMARKS.md). The weights, the biases and
    log_std are numpy views of the flat parameter (they follow every optimiser step and load without
    copies); the normalisers' mean and std come from their own cache (:meth:`RunningMeanStd.affine`).
    The Gaussian noise is still drawn by ``torch.randn`` (the same draws from the same generator).
    Same math as the torch path, which stays the plain formula: the matmul kernels and the
    vectorised tanh / exp of numpy and torch round differently in the last bits, so the outputs
    agree to float32 rounding, not bit for bit (tests/learners/test_fast_paths.py).
    """

    ACTS = {"tanh": np.tanh, "relu": lambda x: np.maximum(x, 0.0, out=x)}

    def __init__(self, model: ActorCritic) -> None:
        fp = model._fused
        assert fp is not None
        self.model = model
        self.act_fn = self.ACTS[model.activation]
        self.keys_a, self.keys_c = fp.encoder_a.keys, fp.encoder_c.keys
        self.same_input = fp.same_input
        self.w = [w.detach().numpy() for w in fp.weights]  # [2, in, out] views of the flat parameter
        self.b = [b.detach().numpy() for b in fp.biases]   # [2, 1, out]
        self.log_std = model.log_std.detach().numpy()      # [A]
        self.d_in = self.w[0].shape[1]
        self.act_dim = fp.act_dim
        self.const = 0.5 * _LOG_2PI * fp.act_dim
        self.tanh = model.squash == "tanh"

    @staticmethod
    def usable(model: ActorCritic, device: torch.device) -> bool:
        fp = model._fused
        return (device.type == "cpu" and fp is not None and model.activation in _NumpyAct.ACTS
                and not model.raw_keys and model.log_std.dtype == torch.float32
                and all(w.dtype == torch.float32 for w in fp.weights))

    def __call__(self, obs: Mapping[str, torch.Tensor], std: np.ndarray, inv_std: np.ndarray
                 ) -> tuple[torch.Tensor, ...] | None:
        """(action, u, logp, mu, V) as :meth:`PPO.act`, or None when ``obs`` is not CPU float32 groups."""
        m = self.model
        groups: dict[str, np.ndarray] = {}
        for k in self.keys_c if not self.same_input else self.keys_a:
            v = obs.get(k)
            if v is None or v.dtype != torch.float32 or v.device.type != "cpu" or v.dim() != 2:
                return None
            x = v.numpy()
            if m.norm_obs:
                mean, scale, clip = m.obs_rms[k].affine(torch.float32)
                x = (x - mean.numpy()) / scale.numpy()
                if clip is not None:
                    x = np.clip(x, -clip, clip)
            groups[k] = x
        xa = groups[self.keys_a[0]] if len(self.keys_a) == 1 else np.concatenate([groups[k] for k in self.keys_a], -1)
        if self.same_input:
            x = xa  # [B, D]: broadcast against both members' weights
        else:
            xc = np.concatenate([groups[k] for k in self.keys_c], -1)
            pad = np.zeros((xa.shape[0], xc.shape[1] - xa.shape[1]), dtype=np.float32)
            x = np.stack([np.concatenate([xa, pad], -1), xc])
        n = len(self.w)
        for i, (w, b) in enumerate(zip(self.w, self.b)):
            x = np.matmul(x, w)
            x += b
            if i < n - 1:
                x = self.act_fn(x)
        mu, v = x[0, :, :self.act_dim], x[1, :, 0]
        eps = torch.randn(mu.shape).numpy()  # = randn_like(mu): same shape, dtype and generator
        u = mu + eps * std
        z = (u - mu) * inv_std
        logp = (-0.5 * np.square(z) - self.log_std).sum(-1) - np.float32(self.const)
        a = np.tanh(u) if self.tanh else np.clip(u, -1.0, 1.0)
        f = torch.from_numpy
        return f(a), f(u), f(np.asarray(logp, dtype=np.float32)), f(np.ascontiguousarray(mu)), f(np.ascontiguousarray(v))


class PPO:
    """PPO learner (a :class:`roborl.learners.base.OnPolicyLearner`): act on observation groups, update on a :class:`Rollout`.

    ``obs_dims``: the size of each observation group (an int = one ``"policy"`` group). The
    :data:`PRIVILEGED` group is used only with ``cfg.asymmetric``. ``fuse``: allow the fast path
    (:class:`_FusedPair`); ``actor_encoder`` / ``critic_encoder``: see :class:`ActorCritic`;
    ``expected_steps``: the gradient steps the run will take (``ppo.compile: auto`` compiles from
    :data:`COMPILE_MIN_STEPS` on; unknown = no).
    """

    def __init__(self, obs_dims: Mapping[str, int] | int, act_dim: int, cfg: PPOConfig, device: str = "cpu", *,
                 fuse: bool = True, actor_encoder: nn.Module | None = None,
                 critic_encoder: nn.Module | None = None, expected_steps: int | None = None) -> None:
        self.cfg = cfg
        self.device = torch.device(device)
        dims = {POLICY: obs_dims} if isinstance(obs_dims, int) else dict(obs_dims)
        if not cfg.asymmetric:
            dims.pop(PRIVILEGED, None)
        self.model = ActorCritic(dims, act_dim, cfg, actor_encoder, critic_encoder).to(self.device)
        # All parameters live in one flat buffer (and their grads in another), so Adam, the
        # gradient-norm clip and zero_grad are one fused op each instead of one per tensor:
        # with 64-unit MLPs on a CPU the per-op overhead, not the FLOPs, is the cost.
        self.flat = self.model.flatten(fuse)
        # One Adam over encoders, actor, critic and log-std (as SB3); eps=1e-5 as CleanRL/SB3.
        self.optim = torch.optim.Adam([self.flat], lr=cfg.lr, eps=1e-5, **_adam_impl(self.device))
        self.lr = cfg.lr
        self.beta = cfg.kl_beta
        # Data parallel (rsl_rl's scheme): with a process group of several ranks, every rank
        # updates on its own rollout; the gradients are averaged with one all-reduce per
        # minibatch step. ``_comm`` holds the gradient followed by one slot for the minibatch KL,
        # so the KL that early stop / adaptive lr decide on rides along in the same all-reduce
        # and every rank takes the same number of steps with the same learning rate.
        self.world = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
        self._comm = torch.zeros(self.flat.numel() + 1, dtype=self.flat.dtype, device=self.device)
        # The fast path (``ppo.compile``): the minibatch step as one compiled pure function of the flat
        # parameter (:func:`_fused_step_fn`), then the same fused Adam kernel without Optimizer.step's
        # Python overhead. Single process and the fused pair only; DDP and custom encoders run the plain step.
        from roborl.learners.fast import Compiled, want_compile

        self._fast_step: Compiled | None = None
        self._std_cache: tuple[Any, ...] | None = None  # (key, std, inv_std, and their numpy views)
        # The rollout's per-step inference on numpy views (CPU; see _NumpyAct); None = torch ops.
        self._np_act = _NumpyAct(self.model) if cfg.numpy_act and _NumpyAct.usable(self.model, self.device) else None
        fp = self.model._fused
        # auto compiles when the run's gradient steps repay the compile time (COMPILE_MIN_STEPS).
        long_run = expected_steps is not None and expected_steps >= COMPILE_MIN_STEPS
        auto_devices = ("cpu", "cuda") if long_run else ()
        if fp is not None and self.world == 1 and want_compile(cfg.compile, self.device, auto_devices):
            self._fast_step = Compiled(_fused_step_fn(fp, self.model.log_std, cfg), "ppo.compile", dynamic=False)
        if self.world > 1:  # start from rank 0's weights (the flat buffer: the parameters are strided views of it)
            dist.broadcast(self.flat.data, 0)
            for buf in self.model.buffers():
                dist.broadcast(buf.data, 0)

    @property
    def obs_dims(self) -> dict[str, int]:
        return dict(self.model.obs_dims)

    # ------------------------------------------------------------------ acting
    def act(self, obs: Mapping[str, torch.Tensor] | torch.Tensor
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Sample for a batch of envs. obs: raw groups {k: [N, O_k]} (or [N, O]) ->
        (action [N, A] in [-1, 1], u [N, A], logp [N], mu [N, A], V [N]).

        The rollout's per-step hot path. Plain formula::

            mu, v = m(m.normalize(obs)); u = mu + randn_like(mu) * exp(log_std)
            logp = gaussian_log_prob(u, mu, log_std)

        Here exp(log_std) and exp(-log_std) come from :meth:`_std` (computed once per parameter
        change, not per step), the fused pair is called without ``nn.Module.__call__``, and
        :func:`_gaussian_log_prob_inv` is gaussian_log_prob with its exp(-log_std) passed in: the same
        ops on the same values, so the outputs are bit-identical (tests/learners/test_fast_paths.py).
        """
        if self._np_act is not None and isinstance(obs, Mapping):
            self._std()
            c = self._std_cache
            out = self._np_act(obs, c[3], c[4])
            if out is not None:
                return out
        return self._act_torch(obs)

    def _act_torch(self, obs: Mapping[str, torch.Tensor] | torch.Tensor
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """:meth:`act` through torch ops (any device; the reference of the numpy path)."""
        with torch.no_grad():
            m = self.model
            fp = m._fused
            x = m.normalize(obs_groups(obs))
            mu, v = fp(fp.pair_input(x)) if fp is not None else m(x)
            std, inv_std = self._std()
            u = mu + torch.randn_like(mu) * std
            logp = _gaussian_log_prob_inv(u, mu, m.log_std, inv_std)
            return m.squash_action(u), u, logp, mu, v

    def _std(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(exp(log_std), exp(-log_std)), each [A], cached until log_std changes. :meth:`update` and
        :meth:`load_state_dict` drop the cache (the fused Adam kernel writes the flat parameter without
        bumping any version counter); an in-place edit of log_std itself bumps its version, a new
        storage changes its address."""
        ls = self.model.log_std
        key = (ls._version, ls.data_ptr())
        c = self._std_cache
        if c is None or c[0] != key:
            with torch.no_grad():
                std, inv = ls.exp(), torch.exp(-ls)
                cpu = std.device.type == "cpu"  # numpy views for the CPU rollout path (_NumpyAct) only
                c = self._std_cache = (key, std, inv, std.numpy() if cpu else None, inv.numpy() if cpu else None)
        return c[1], c[2]

    @torch.no_grad()
    def value(self, obs: Mapping[str, torch.Tensor] | torch.Tensor) -> torch.Tensor:
        """V(obs) for raw groups {k: [N, O_k]} (or [N, O]) -> [N]."""
        m = self.model
        return m(m.normalize(obs_groups(obs)))[1]

    def observe(self, obs: Mapping[str, torch.Tensor] | torch.Tensor) -> None:
        """Refresh the normalizers with a rollout's raw groups {k: [*, O_k]}; call after :meth:`update`.

        Data parallel: the rollouts of all ranks are folded in as one batch (their moments combined
        with one all-reduce of [count, sum, sum of squares]), so the statistics stay identical.
        """
        for k, v in obs_groups(obs).items():
            if k not in self.model.obs_rms or k in self.model.raw_keys:
                continue
            rms = self.model.obs_rms[k]
            if self.world == 1:
                rms.update(v)
                continue
            x = v.reshape(-1, rms.mean.shape[0]).to(rms.mean.dtype)
            s = torch.cat([x.new_tensor([x.shape[0]]), x.sum(0), x.pow(2).sum(0)])
            dist.all_reduce(s)
            n, d = float(s[0]), rms.mean.shape[0]
            if n == 0 or d == 0:
                continue
            mean = s[1:1 + d] / n
            var = (s[1 + d:] / n - mean.pow(2)).clamp_min(0.0)
            with torch.no_grad():
                if float(rms.count) == 0.0:
                    new = mean, var, rms.count.new_tensor(n)
                else:
                    new = combine_moments(rms.mean, rms.var, rms.count, mean, var, n)
                rms.mean.copy_(new[0])
                rms.var.copy_(new[1])
                rms.count.copy_(new[2])

    def set_lr(self, lr: float) -> None:
        self.lr = lr
        for g in self.optim.param_groups:
            g["lr"] = lr

    def _plain_step(self, b_x: Any, b_u: torch.Tensor, b_logp: torch.Tensor, b_mu: torch.Tensor, b_adv: torch.Tensor,
                    b_ret: torch.Tensor, b_vold: torch.Tensor, log_std_old: torch.Tensor
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
        """One minibatch gradient step through autograd (the reference the fast path is tested against);
        with DDP the gradient and the minibatch KL are averaged over ranks. Returns (pg_loss, v_loss,
        log_ratio [b], minibatch KL as a float, 0 unless target_kl)."""
        cfg, m = self.cfg, self.model
        mu, v = m.forward_batch(b_x)
        logp = gaussian_log_prob(b_u, mu, m.log_std)
        log_ratio = logp - b_logp
        ratio = log_ratio.exp()
        if cfg.loss == "clip":
            pg_loss = clipped_surrogate(ratio, b_adv, cfg.clip_eps)
        else:  # PPO-KL (Schulman et al. 2017, sec. 4): surrogate minus beta * KL(old || new), closed form
            kl_pen = gaussian_kl(b_mu, log_std_old, mu, m.log_std).mean()
            pg_loss = -(ratio * b_adv).mean() + self.beta * kl_pen
        if cfg.clip_value is not None:
            v_clip = b_vold + (v - b_vold).clamp(-cfg.clip_value, cfg.clip_value)
            v_loss = torch.max((v - b_ret).pow(2), (v_clip - b_ret).pow(2)).mean()
        else:
            v_loss = (v - b_ret).pow(2).mean()
        loss = pg_loss + cfg.vf_coef * v_loss
        if cfg.ent_coef > 0:
            loss = loss - cfg.ent_coef * gaussian_entropy(m.log_std)

        grad = self.flat.grad
        grad.zero_()  # never set_to_none: the parameters' .grad are views into this buffer
        loss.backward()
        kl_f = 0.0
        if self.world > 1:
            # ONE all-reduce per step over [flat gradient, minibatch KL] (see __init__):
            # mean over ranks of per-rank minibatch means = the mean over the union.
            comm = self._comm
            comm[:-1].copy_(grad)
            with torch.no_grad():
                comm[-1] = ((ratio - 1) - log_ratio).mean() if cfg.target_kl is not None else 0.0
            dist.all_reduce(comm)
            comm.div_(self.world)
            grad.copy_(comm[:-1])
            if cfg.target_kl is not None:
                kl_f = float(comm[-1])
        elif cfg.target_kl is not None:
            with torch.no_grad():
                kl_f = float(((ratio - 1) - log_ratio).mean())
        if cfg.max_grad_norm is not None:
            grad.mul_((cfg.max_grad_norm / (grad.norm() + 1e-6)).clamp_max(1.0))
        adam_step(self.optim)  # = self.optim.step(), bit for bit, without its Python overhead
        return pg_loss, v_loss, log_ratio, kl_f

    # ------------------------------------------------------------------ update
    def update(self, batch: Rollout) -> dict[str, float]:
        """``epochs`` passes of minibatch SGD on the PPO loss; returns scalar metrics."""
        cfg, m = self.cfg, self.model
        self._std_cache = None  # log_std changes below (see _std)
        adv, returns = compute_gae(batch.rewards, batch.values, batch.next_values, batch.terminated, batch.dones,
                                   cfg.gamma, cfg.gae_lambda)
        B = adv.numel()
        # Flatten [T, N, ...] -> [B, ...]; normalized once (stats are frozen during the update).
        obs = obs_groups(batch.obs)
        x = m.batch_input(m.normalize({k: v.reshape(B, -1) for k, v in obs.items()}))
        u, logp_old, mu_old = batch.actions.reshape(B, -1), batch.logp.reshape(B), batch.mu.reshape(B, -1)
        v_old, ret, adv = batch.values.reshape(B), returns.reshape(B), adv.reshape(B)
        if cfg.norm_adv:
            if self.world == 1:
                adv = (adv - adv.mean()) / (adv.std() + 1e-8)
            else:  # over all ranks' samples: [count, sum, sum of squares] summed in one all-reduce
                a = adv.double()
                s = torch.stack([a.new_tensor(float(B)), a.sum(), a.pow(2).sum()])
                dist.all_reduce(s)
                n = s[0]
                mean = s[1] / n
                std = ((s[2] - n * mean * mean) / (n - 1)).clamp_min(0.0).sqrt()  # unbiased, as Tensor.std
                adv = (adv - mean.to(adv.dtype)) / (std.to(adv.dtype) + 1e-8)
        log_std_old = m.log_std.detach().clone()
        beta_t = torch.tensor(self.beta, dtype=self.flat.dtype, device=self.device)  # an input, not a constant

        mb = min(cfg.minibatch_size, B)
        n_mb = B // mb  # a ragged tail (B % mb) is dropped each epoch; it is a different tail every epoch
        # Per-minibatch statistics are kept as detached tensors and reduced once after the loop:
        # on a CPU each small op costs ~5-10 us of dispatch, about as much as its arithmetic, and
        # the ~10 ops of per-step bookkeeping were ~10 % of the update.
        pg_hist: list[torch.Tensor] = []
        v_hist: list[torch.Tensor] = []
        lr_hist: list[torch.Tensor] = []
        stopped_early = False
        for _epoch in range(cfg.epochs):
            # One gather per epoch; minibatches are then contiguous views (cheaper than B/mb gathers).
            perm = torch.randperm(B, device=self.device)
            chunks = zip(m.split(m.take(x, perm), mb), u[perm].split(mb), logp_old[perm].split(mb),
                         mu_old[perm].split(mb), adv[perm].split(mb), ret[perm].split(mb), v_old[perm].split(mb))
            for _i, (b_x, b_u, b_logp, b_mu, b_adv, b_ret, b_vold) in zip(range(n_mb), chunks):
                if self._fast_step is not None:
                    g, pg_loss, v_loss, log_ratio, kl_mb = self._fast_step(
                        self.flat.detach(), b_x, b_u, b_logp, b_mu, b_adv, b_ret, b_vold, log_std_old, beta_t)
                    self.flat.grad.copy_(g)
                    adam_step(self.optim)
                    kl_f = float(kl_mb) if cfg.target_kl is not None else 0.0
                else:
                    pg_loss, v_loss, log_ratio, kl_f = self._plain_step(b_x, b_u, b_logp, b_mu, b_adv, b_ret, b_vold,
                                                                        log_std_old)
                pg_hist.append(pg_loss.detach())
                v_hist.append(v_loss.detach())
                lr_hist.append(log_ratio.detach())
                if cfg.target_kl is not None:
                    if cfg.kl_control == "early_stop" and kl_f > 1.5 * cfg.target_kl:
                        stopped_early = True
                        break
                    if cfg.kl_control == "adaptive_lr":
                        if kl_f > 2.0 * cfg.target_kl:
                            self.set_lr(max(cfg.lr_min, self.lr / 1.5))
                        elif kl_f < cfg.target_kl / 2.0:
                            self.set_lr(min(cfg.lr_max, self.lr * 1.5))
            if stopped_early:
                break

        # Whole-batch KL of the final policy against the behaviour policy (closed form).
        with torch.no_grad():
            mu_all, v_all = m.forward_batch(x)
            kl_t = gaussian_kl(mu_old, log_std_old, mu_all, m.log_std).mean()
            if self.world > 1:  # the adaptive KL penalty (loss: kl) must change beta alike on every rank
                dist.all_reduce(kl_t)
                kl_t = kl_t / self.world
            kl_batch = float(kl_t)
            explained_var = float(1.0 - (ret - v_all).var() / (ret.var() + 1e-8))
        beta_used = self.beta
        self._std_cache = None
        if cfg.loss == "kl":  # adaptive penalty (Schulman et al. 2017, sec. 4)
            if kl_batch > 1.5 * cfg.kl_target:
                self.beta *= 2.0
            elif kl_batch < cfg.kl_target / 1.5:
                self.beta /= 2.0
            self.beta = float(min(max(self.beta, 1e-4), 1e4))
        n_steps = len(pg_hist)
        with torch.no_grad():
            # Minibatches are equal-sized, so the mean over all samples is the mean of minibatch means.
            lr_all = torch.cat(lr_hist) if lr_hist else torch.zeros(1, device=self.device)
            r_all = lr_all.exp()
            pg = float(torch.stack(pg_hist).mean()) if pg_hist else 0.0
            vl = float(torch.stack(v_hist).mean()) if v_hist else 0.0
            kl_mean = float(((r_all - 1) - lr_all).mean())
            cf = float(((r_all - 1).abs() > cfg.clip_eps).float().mean())
            ent = float(gaussian_entropy(m.log_std))  # of the updated policy
        return {
            "loss/policy": pg, "loss/value": vl, "entropy": ent, "approx_kl": kl_mean, "kl": kl_batch,
            "clip_frac": cf, "explained_variance": explained_var, "grad_steps": n_steps,
            "early_stop": float(stopped_early), "lr": self.lr, "beta": beta_used,
            "std": float(m.log_std.detach().exp().mean()),
        }

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        # Contiguous copies: the parameters are (strided) views of one buffer and safetensors refuses shared storage.
        model = {k: v.detach().clone(memory_format=torch.contiguous_format) for k, v in self.model.state_dict().items()}
        return {"model": model, "optim": self.optim.state_dict(), "lr": self.lr, "beta": self.beta}

    def load_state_dict(self, st: dict[str, Any]) -> None:
        _check_layout(st["model"])
        self._std_cache = None
        self.model.load_state_dict(st["model"])
        self.optim.load_state_dict(st["optim"])
        self.set_lr(float(st["lr"]))
        self.beta = float(st["beta"])

    def policy(self) -> "PPOPolicy":
        return PPOPolicy(self.model, str(self.device))


# ============================================================================= deployable policy

class PPOPolicy:
    """The :class:`roborl.learners.Policy` of a PPO model: raw obs [N, O] (or groups {k: [N, O_k]}) ->
    actions [N, A] in [-1, 1].

    Normalization is inside the model; the critic (and any privileged group) is not needed.
    """

    def __init__(self, model: ActorCritic, device: str = "cpu") -> None:
        self.model = model
        self.device = torch.device(device)

    @torch.no_grad()
    def act(self, obs: np.ndarray | Mapping[str, np.ndarray], deterministic: bool = True) -> np.ndarray:
        groups = {k: torch.as_tensor(np.asarray(v, dtype=np.float32), device=self.device)
                  for k, v in obs_groups(obs).items()}
        squeeze = next(iter(groups.values())).ndim == 1
        if squeeze:
            groups = {k: v[None] for k, v in groups.items()}
        m = self.model
        mu = m.actor_mean(m.normalize(groups))
        u = mu if deterministic else mu + torch.randn_like(mu) * m.log_std.exp()
        a = m.squash_action(u).cpu().numpy()
        return a[0] if squeeze else a


def checkpoint_obs_dims(dims: Mapping[str, Any]) -> dict[str, int]:
    """The observation groups of a checkpoint's ``meta["dims"]``: ``groups`` when saved (Dict observations),
    else ``{"policy": obs}`` plus ``{"critic": priv}`` when ``priv > 0``."""
    if dims.get("groups"):
        return {str(k): int(v) for k, v in dims["groups"].items()}
    out = {POLICY: int(dims["obs"])}
    if int(dims.get("priv", 0)):
        out[PRIVILEGED] = int(dims["priv"])
    return out


def policy_from_checkpoint(state: dict[str, Any], meta: dict[str, Any], device: str = "cpu") -> PPOPolicy:
    """Rebuild the deployable policy from a checkpoint's ``(state, meta)`` alone (see POLICY_LOADERS).

    Checkpoints of the single pair-MLP model (before the encoder/actor/critic split) are refused
    with one line.
    """
    from roborl import config as C
    from roborl.errors import UsageError

    try:
        cfg = C.build(PPOConfig, meta["config"]["ppo"], "checkpoint meta")
        model_state = state["learner"]["model"]
        _check_layout(model_state)
        dims = checkpoint_obs_dims(meta["dims"])
        if not cfg.asymmetric:
            dims.pop(PRIVILEGED, None)
        model = ActorCritic(dims, int(meta["dims"]["act"]), cfg)
        model.load_state_dict(model_state)
    except (KeyError, TypeError) as e:
        raise UsageError(f"checkpoint is not a PPO checkpoint: missing {e}") from None
    except RuntimeError as e:
        raise UsageError(f"checkpoint model does not match its config: {str(e).splitlines()[0]}") from None
    model.to(device).eval()
    # Same parameter layout as in training: views at other offsets take other SIMD paths and
    # round differently (~1e-8), and `roborl eval` must reproduce training-time eval exactly.
    model.flatten()
    return PPOPolicy(model, device)

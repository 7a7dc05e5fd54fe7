"""Proximal Policy Optimization (Schulman et al. 2017): PPO-clip and PPO-KL with GAE, read top to bottom.

This module holds losses and updates only (no files, zarr or envs; the loop lives in
``roborl/runners/ppo.py``). References: Schulman et al. 2017 (PPO), Schulman et al. 2016
(GAE), the seeds 003 §3.4.7 (PPO-KL / PPO-clip, KL early stop) and 002 (worked GAE
example), CleanRL ``ppo_continuous_action.py`` and SB3 (defaults, initialisation), rsl_rl
(target-KL adaptive learning rate), Pinto et al. 2018 (asymmetric actor-critic).

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
* **Asymmetric actor-critic** (Pinto et al. 2018; OpenAI 2019): with ``asymmetric=True`` the
  critic's input is ``[norm(obs), norm(priv)]`` where ``priv`` is privileged simulator state
  (DR parameters, true object poses) that the actor never sees. Only the actor is needed to
  deploy, so the real robot never has to provide ``priv``.
* **GAE** distinguishes *terminated* (no bootstrap) from *truncated* (bootstrap from
  ``V(s_T)`` of the real final observation): :func:`compute_gae` takes ``next_values``,
  the value of the state that actually followed each step.

Shapes: ``T`` rollout steps per env, ``N`` envs, ``B = T*N``, ``O`` obs dim, ``P`` privileged
dim (0 when off), ``A`` action dim.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from roborl.learners.config import PPOConfig

__all__ = [
    "PPOConfig", "RunningMeanStd", "ActorCritic", "PPO", "PPOPolicy", "Rollout",
    "compute_gae", "gaussian_log_prob", "gaussian_entropy", "gaussian_kl", "approx_kl",
    "clipped_surrogate", "policy_from_checkpoint",
]

_LOG_2PI = math.log(2.0 * math.pi)


# ============================================================================= config

# ============================================================================= normalisation

class RunningMeanStd(nn.Module):
    """Running mean/variance (Chan et al. parallel algorithm) as module buffers. x: [..., D].

    ``dim == 0`` is allowed (no privileged input) and is then a no-op.
    """

    def __init__(self, dim: int, clip: float = 10.0, epsilon: float = 1e-4) -> None:
        super().__init__()
        self.clip = clip
        self.register_buffer("mean", torch.zeros(dim, dtype=torch.float64))
        self.register_buffer("var", torch.ones(dim, dtype=torch.float64))
        self.register_buffer("count", torch.tensor(epsilon, dtype=torch.float64))
        self._cache: tuple | None = None

    @torch.no_grad()
    def update(self, x: torch.Tensor) -> None:
        """Fold a batch ``x: [B, D]`` into the statistics."""
        x = x.reshape(-1, self.mean.shape[0]).to(torch.float64)
        if x.shape[0] == 0 or x.shape[1] == 0:
            return
        b_mean, b_var, b = x.mean(0), x.var(0, unbiased=False), x.shape[0]
        delta, tot = b_mean - self.mean, self.count + b
        self.mean += delta * b / tot
        m2 = self.var * self.count + b_var * b + delta.pow(2) * self.count * b / tot
        self.var.copy_(m2 / tot)
        self.count.copy_(tot)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # mean and std in x's dtype are cached until the buffers change (update / load_state_dict
        # bump their version counters; .to() makes new storage): the per-step inference path then
        # runs 3 ops instead of 7. Same arithmetic as without the cache, so results are identical.
        key = (self.mean._version, self.var._version, self.mean.data_ptr(), self.var.data_ptr(), x.dtype)
        c = self._cache
        if c is None or c[0] != key:
            c = self._cache = (key, self.mean.to(x.dtype), (self.var + 1e-8).sqrt().to(x.dtype))
        return ((x - c[1]) / c[2]).clamp(-self.clip, self.clip)


# ============================================================================= distributions

def gaussian_log_prob(u: torch.Tensor, mu: torch.Tensor, log_std: torch.Tensor) -> torch.Tensor:
    """log N(u; mu, diag(exp(log_std)^2)) summed over the action dim. u, mu: [B, A]; log_std: [A] -> [B]."""
    z = (u - mu) * torch.exp(-log_std)
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
    adv = torch.zeros_like(rewards)
    last = torch.zeros_like(rewards[0])
    for t in range(rewards.shape[0] - 1, -1, -1):
        last = deltas[t] + gamma * lam * not_done[t] * last
        adv[t] = last
    return adv, adv + values


# ============================================================================= networks

_ACTS: dict[str, Any] = {"tanh": torch.tanh, "relu": torch.relu, "elu": nn.functional.elu}


class PairMLP(nn.Module):
    """The actor MLP and the critic MLP (same hidden sizes), run together: one batched matmul per layer.

    Member 0 is the actor, member 1 the critic. ``x: [2, B, D] -> [2, B, max(A, 1)]``: the
    actor's output is ``[0, :, :A]``, the value ``[1, :, 0]``. The two networks share no
    weights; stacking them only halves the number of (overhead-bound) ops per step on a CPU.
    The actor's input is the normalized observation zero-padded to the critic's width D = O + P;
    the weights on the padding start at zero and get exactly zero gradient, so they stay
    zero and the actor never sees privileged state.

    Init (SB3/CleanRL; Andrychowicz et al. 2021): orthogonal, gain sqrt(2) for hidden layers,
    0.01 for the actor head (the initial policy is ~N(0, std)), 1 for the critic head.
    """

    def __init__(self, actor_in: int, critic_in: int, hidden: tuple[int, ...], act_dim: int, activation: str) -> None:
        super().__init__()
        self.act = _ACTS[activation]
        self.act_dim = act_dim
        dims = [critic_in, *hidden, max(act_dim, 1)]
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for i, (d_in, d_out) in enumerate(zip(dims[:-1], dims[1:])):
            w = torch.empty(2, d_in, d_out)
            last = i == len(dims) - 2
            for m, gain in enumerate((0.01, 1.0) if last else (math.sqrt(2.0), math.sqrt(2.0))):
                nn.init.orthogonal_(w[m], gain)
            if i == 0:
                w[0, actor_in:] = 0.0  # actor ignores the privileged columns
            if last:
                w[1, :, 1:] = 0.0  # critic uses one output
            self.weights.append(nn.Parameter(w))
            self.biases.append(nn.Parameter(torch.zeros(2, 1, d_out)))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x [2, B, D] -> (mu [B, A], V [B])."""
        n = len(self.weights)
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            x = torch.baddbmm(b, x, w)
            if i < n - 1:
                x = self.act(x)
        return x[0, :, :self.act_dim], x[1, :, 0]

    def member(self, x: torch.Tensor, m: int) -> torch.Tensor:
        """One network alone: x [B, D_m] (D_m may be narrower than D for the actor) -> [B, max(A, 1)]."""
        n = len(self.weights)
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            x = torch.addmm(b[m], x, w[m, :x.shape[-1]])
            if i < n - 1:
                x = self.act(x)
        return x


class ActorCritic(nn.Module):
    """Actor and critic (a :class:`PairMLP`), a state-independent log-std, and the normalizers.

    actor: norm(obs) [B, O] -> mu [B, A]; critic: [norm(obs), norm(priv)] [B, O+P] -> V [B].
    """

    def __init__(self, obs_dim: int, act_dim: int, cfg: PPOConfig, priv_dim: int = 0) -> None:
        super().__init__()
        self.obs_dim, self.act_dim, self.priv_dim = obs_dim, act_dim, priv_dim
        self.squash = cfg.action_squash
        self.norm_obs = cfg.norm_obs
        self.net = PairMLP(obs_dim, obs_dim + priv_dim, cfg.hidden, act_dim, cfg.activation)
        self.log_std = nn.Parameter(torch.full((act_dim,), float(cfg.init_log_std)))
        self.obs_rms = RunningMeanStd(obs_dim, cfg.obs_clip)
        self.priv_rms = RunningMeanStd(priv_dim, cfg.obs_clip)

    def normalize(self, obs: torch.Tensor) -> torch.Tensor:
        return self.obs_rms(obs) if self.norm_obs else obs

    def pair_input(self, obs_n: torch.Tensor, priv: torch.Tensor | None) -> torch.Tensor:
        """[B, O] normalized obs (+ [B, P] raw priv) -> [2, B, O+P]: zero-padded actor input, critic input."""
        if self.priv_dim == 0:
            return obs_n.unsqueeze(0).expand(2, -1, -1)
        assert priv is not None, "asymmetric critic needs the privileged input"
        priv_n = self.priv_rms(priv) if self.norm_obs else priv
        return torch.stack([torch.cat([obs_n, torch.zeros_like(priv_n)], -1), torch.cat([obs_n, priv_n], -1)])

    def forward(self, obs_n: torch.Tensor, priv: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalized obs [B, O] (+ raw priv [B, P]) -> (mu [B, A], V [B])."""
        return self.net(self.pair_input(obs_n, priv))

    def actor_mean(self, obs_n: torch.Tensor) -> torch.Tensor:
        """Normalized obs [B, O] -> mu [B, A] (the actor alone: what a deployed policy runs)."""
        return self.net.member(obs_n, 0)[:, :self.act_dim]

    def squash_action(self, u: torch.Tensor) -> torch.Tensor:
        """Gaussian sample u [B, A] -> env action in [-1, 1]."""
        return torch.tanh(u) if self.squash == "tanh" else u.clamp(-1.0, 1.0)

    def deterministic(self, obs: torch.Tensor) -> torch.Tensor:
        """Raw obs [B, O] -> mean action in [-1, 1], [B, A]."""
        return self.squash_action(self.actor_mean(self.normalize(obs)))


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


# ============================================================================= rollout batch

@dataclass
class Rollout:
    """One iteration's on-policy data, as collected by the runner (tensors on the learner's device).

    obs ``[T, N, O]`` raw observations; priv ``[T, N, P]`` raw privileged state (P may be 0);
    actions ``[T, N, A]`` the Gaussian samples u (pre-squash); logp ``[T, N]``; mu ``[T, N, A]``
    the old policy means; values ``[T, N]``; rewards ``[T, N]`` (already scaled if
    norm_reward); next_values / terminated / dones ``[T, N]`` as in :func:`compute_gae`.
    """

    obs: torch.Tensor
    priv: torch.Tensor
    actions: torch.Tensor
    logp: torch.Tensor
    mu: torch.Tensor
    values: torch.Tensor
    rewards: torch.Tensor
    next_values: torch.Tensor
    terminated: torch.Tensor
    dones: torch.Tensor


# ============================================================================= learner

class PPO:
    """PPO learner: act on batches of observations, update on a :class:`Rollout`."""

    def __init__(self, obs_dim: int, act_dim: int, cfg: PPOConfig, priv_dim: int = 0, device: str = "cpu") -> None:
        self.cfg = cfg
        self.device = torch.device(device)
        self.model = ActorCritic(obs_dim, act_dim, cfg, priv_dim if cfg.asymmetric else 0).to(self.device)
        # All parameters live in one flat buffer (and their grads in another), so Adam, the
        # gradient-norm clip and zero_grad are one fused op each instead of one per tensor:
        # with 64-unit MLPs on a CPU the per-op overhead, not the FLOPs, is the cost.
        self.flat = _flatten_parameters(self.model)
        # One Adam over actor, critic and log-std (as SB3); eps=1e-5 as CleanRL/SB3.
        self.optim = torch.optim.Adam([self.flat], lr=cfg.lr, eps=1e-5, **_adam_impl(self.device))
        self.lr = cfg.lr
        self.beta = cfg.kl_beta

    # ------------------------------------------------------------------ acting
    @torch.no_grad()
    def act(self, obs: torch.Tensor, priv: torch.Tensor | None = None
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Sample for a batch of envs. obs [N, O] raw, priv [N, P] -> (action [N, A] in [-1,1], u [N, A], logp [N], mu [N, A], V [N])."""
        m = self.model
        mu, v = m(m.normalize(obs), priv)
        u = mu + torch.randn_like(mu) * m.log_std.exp()
        logp = gaussian_log_prob(u, mu, m.log_std)
        return m.squash_action(u), u, logp, mu, v

    @torch.no_grad()
    def value(self, obs: torch.Tensor, priv: torch.Tensor | None = None) -> torch.Tensor:
        """V(obs) for raw obs [N, O] (+ priv [N, P]) -> [N]."""
        m = self.model
        return m(m.normalize(obs), priv)[1]

    def observe(self, obs: torch.Tensor, priv: torch.Tensor | None = None) -> None:
        """Refresh the normalizers with a rollout's raw obs [*, O] (and priv [*, P]); call after :meth:`update`."""
        self.model.obs_rms.update(obs.reshape(-1, self.model.obs_dim))
        if self.model.priv_dim and priv is not None:
            self.model.priv_rms.update(priv.reshape(-1, self.model.priv_dim))

    def set_lr(self, lr: float) -> None:
        self.lr = lr
        for g in self.optim.param_groups:
            g["lr"] = lr

    # ------------------------------------------------------------------ update
    def update(self, batch: Rollout) -> dict[str, float]:
        """``epochs`` passes of minibatch SGD on the PPO loss; returns scalar metrics."""
        cfg, m = self.cfg, self.model
        adv, returns = compute_gae(batch.rewards, batch.values, batch.next_values, batch.terminated, batch.dones,
                                   cfg.gamma, cfg.gae_lambda)
        B = adv.numel()
        # Flatten [T, N, ...] -> [B, ...].
        # [2, B, O+P]: actor and critic inputs, normalized once (stats are frozen during the update).
        x = m.pair_input(m.normalize(batch.obs.reshape(B, -1)), batch.priv.reshape(B, -1) if m.priv_dim else None)
        u, logp_old, mu_old = batch.actions.reshape(B, -1), batch.logp.reshape(B), batch.mu.reshape(B, -1)
        v_old, ret, adv = batch.values.reshape(B), returns.reshape(B), adv.reshape(B)
        if cfg.norm_adv:
            adv = (adv - adv.mean()) / (adv.std() + 1e-8)
        log_std_old = m.log_std.detach().clone()

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
            chunks = zip(x[:, perm].split(mb, 1), u[perm].split(mb), logp_old[perm].split(mb), mu_old[perm].split(mb),
                         adv[perm].split(mb), ret[perm].split(mb), v_old[perm].split(mb))
            for _i, (b_x, b_u, b_logp, b_mu, b_adv, b_ret, b_vold) in zip(range(n_mb), chunks):
                mu, v = m.net(b_x)
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
                if cfg.max_grad_norm is not None:
                    grad.mul_((cfg.max_grad_norm / (grad.norm() + 1e-6)).clamp_max(1.0))
                self.optim.step()

                pg_hist.append(pg_loss.detach())
                v_hist.append(v_loss.detach())
                lr_hist.append(log_ratio.detach())
                if cfg.target_kl is not None:
                    with torch.no_grad():
                        kl_f = float(((ratio - 1) - log_ratio).mean())
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
            mu_all, v_all = m.net(x)
            kl_batch = float(gaussian_kl(mu_old, log_std_old, mu_all, m.log_std).mean())
            explained_var = float(1.0 - (ret - v_all).var() / (ret.var() + 1e-8))
        beta_used = self.beta
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
        # clone(): the parameters are views of one buffer and safetensors refuses shared storage.
        model = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        return {"model": model, "optim": self.optim.state_dict(), "lr": self.lr, "beta": self.beta}

    def load_state_dict(self, st: dict[str, Any]) -> None:
        self.model.load_state_dict(st["model"])
        self.optim.load_state_dict(st["optim"])
        self.set_lr(float(st["lr"]))
        self.beta = float(st["beta"])

    def policy(self) -> "PPOPolicy":
        return PPOPolicy(self.model, str(self.device))


# ============================================================================= deployable policy

class PPOPolicy:
    """The :class:`roborl.learners.Policy` of a PPO model: raw obs [N, O] -> actions [N, A] in [-1, 1].

    Normalization is inside the model; the critic (and any privileged input) is not needed.
    """

    def __init__(self, model: ActorCritic, device: str = "cpu") -> None:
        self.model = model
        self.device = torch.device(device)

    @torch.no_grad()
    def act(self, obs: np.ndarray, deterministic: bool = True) -> np.ndarray:
        o = torch.as_tensor(np.asarray(obs, dtype=np.float32), device=self.device)
        squeeze = o.ndim == 1
        if squeeze:
            o = o[None]
        m = self.model
        mu = m.actor_mean(m.normalize(o))
        u = mu if deterministic else mu + torch.randn_like(mu) * m.log_std.exp()
        a = m.squash_action(u).cpu().numpy()
        return a[0] if squeeze else a


def policy_from_checkpoint(state: dict[str, Any], meta: dict[str, Any], device: str = "cpu") -> PPOPolicy:
    """Rebuild the deployable policy from a checkpoint's ``(state, meta)`` alone (see POLICY_LOADERS)."""
    from roborl import config as C
    from roborl.errors import UsageError

    try:
        cfg = C.build(PPOConfig, meta["config"]["ppo"], "checkpoint meta")
        dims = meta["dims"]
        model = ActorCritic(int(dims["obs"]), int(dims["act"]), cfg, int(dims.get("priv", 0)))
        model.load_state_dict(state["learner"]["model"])
    except (KeyError, TypeError) as e:
        raise UsageError(f"checkpoint is not a PPO checkpoint: missing {e}") from None
    except RuntimeError as e:
        raise UsageError(f"checkpoint model does not match its config: {str(e).splitlines()[0]}") from None
    model.to(device).eval()
    # Same flat-buffer parameter layout as in training: views at other offsets take other SIMD
    # paths and round differently (~1e-8), and `roborl eval` must reproduce training-time eval exactly.
    _flatten_parameters(model)
    return PPOPolicy(model, device)

"""MBPO (Janner et al. 2019, "When to Trust Your Model"): model-based policy optimisation, read top to bottom.

1. An ensemble of E probabilistic dynamics models p_i(s' - s, r, done | s, a) (Chua et al. 2018, PETS):
   each a Gaussian over (delta s, r) with a learned log-variance kept inside learned soft bounds
   [min_logvar, max_logvar], plus a terminal logit. Trained on the real transitions by Gaussian
   negative log-likelihood (+ a Bernoulli NLL for the terminal flag), each member on its own
   bootstrap batch; the ``elites`` members with the lowest held-out error are used for rollouts.
2. Every ``model_train_every`` env steps: refit the models, then branch ``rollout_batch`` rollouts
   of length k from real states (sampled from the replay store) with the current policy through a
   random elite per step; a rollout stops at the first predicted terminal. k follows a linear
   schedule in env steps (``rollout_min_length`` -> ``rollout_max_length``). The model transitions
   go to a FIFO model buffer kept in the learner (it holds ``model_retain`` rounds).
3. SAC (:class:`roborl.learners.sac.SAC`, ``mbpo.sac``) is updated ``utd`` times per env step on
   batches of ``real_ratio`` real and ``1 - real_ratio`` model transitions.

The learner never sees the store: real data comes from the runner's sampler handed to
:meth:`MBPO.start_learning` (the :data:`roborl.learners.base.SampleFn`). Shapes: ``O`` obs dim,
``A`` action dim, ``D = O + 1`` predicted (delta s, r), ``E`` ensemble size, ``B`` batch.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Callable

import torch
from torch import nn

from roborl.batch import Batch
from roborl.learners.base import SampleFn
from roborl.learners.config import MBPOConfig, SACConfig
from roborl.learners.networks import EnsembleLinear
from roborl.learners.sac import SAC, SACPolicy

__all__ = ["DynamicsEnsemble", "MBPO", "branched_rollout", "rollout_length", "gaussian_nll", "policy_from_checkpoint"]

StepFn = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]


def gaussian_nll(mean: torch.Tensor, logvar: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-element Gaussian NLL without the constant: 0.5 [(y - mean)^2 exp(-logvar) + logvar]. [..., D] -> [..., D]."""
    return 0.5 * ((y - mean).pow(2) * torch.exp(-logvar) + logvar)


def rollout_length(env_step: int, cfg: MBPOConfig) -> int:
    """k at ``env_step``: rollout_min_length before rollout_min_step, rollout_max_length after rollout_max_step,
    linear (floored) in between (MBPO's schedule)."""
    lo, hi = cfg.rollout_min_length, cfg.rollout_max_length
    if env_step <= cfg.rollout_min_step or cfg.rollout_max_step <= cfg.rollout_min_step:
        return lo if env_step <= cfg.rollout_min_step else hi
    frac = min(1.0, (env_step - cfg.rollout_min_step) / (cfg.rollout_max_step - cfg.rollout_min_step))
    return int(lo + frac * (hi - lo))


class DynamicsEnsemble(nn.Module):
    """E MLPs (SiLU) in one batched matmul per layer: [E, B, O + A] -> (mean [E, B, D], logvar [E, B, D],
    terminal logit [E, B]). Inputs are standardised with statistics fitted to the training data
    (buffers, so they are checkpointed)."""

    def __init__(self, obs_dim: int, act_dim: int, n: int, hidden: tuple[int, ...]) -> None:
        super().__init__()
        self.obs_dim, self.act_dim, self.n = obs_dim, act_dim, n
        d_in, self.d_out = obs_dim + act_dim, obs_dim + 1
        dims = [d_in, *hidden]
        self.layers = nn.ModuleList(EnsembleLinear(n, a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.head = EnsembleLinear(n, dims[-1], 2 * self.d_out + 1)
        # Learned variance bounds (PETS): soft-clamped log-variance, bounds trained with a small penalty.
        self.max_logvar = nn.Parameter(torch.full((self.d_out,), 0.5))
        self.min_logvar = nn.Parameter(torch.full((self.d_out,), -10.0))
        self.register_buffer("in_mean", torch.zeros(d_in))
        self.register_buffer("in_std", torch.ones(d_in))

    @torch.no_grad()
    def fit_input_stats(self, x: torch.Tensor) -> None:
        """x: [*, O + A] raw inputs."""
        x = x.reshape(-1, x.shape[-1])
        self.in_mean.copy_(x.mean(0))
        self.in_std.copy_(x.std(0).clamp_min(1e-6))

    def forward(self, obs: torch.Tensor, act: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """obs [E, B, O] (or [B, O], shared by all members), act likewise -> (mean, logvar [E, B, D], logit [E, B])."""
        x = torch.cat([obs, act], -1)
        x = (x - self.in_mean) / self.in_std
        if x.ndim == 2:
            x = x.unsqueeze(0).expand(self.n, -1, -1)
        for layer in self.layers:
            x = nn.functional.silu(layer(x))
        out = self.head(x)
        mean, raw, logit = out[..., :self.d_out], out[..., self.d_out:2 * self.d_out], out[..., -1]
        logvar = self.max_logvar - nn.functional.softplus(self.max_logvar - raw)
        logvar = self.min_logvar + nn.functional.softplus(logvar - self.min_logvar)
        return mean, logvar, logit

    def loss(self, obs: torch.Tensor, act: torch.Tensor, target: torch.Tensor, done: torch.Tensor) -> torch.Tensor:
        """Training loss on per-member batches obs [E, B, O], act [E, B, A], target [E, B, D] = (s' - s, r),
        done [E, B] in {0, 1}: mean Gaussian NLL + terminal BCE + 0.01 (sum max_logvar - sum min_logvar)."""
        mean, logvar, logit = self(obs, act)
        nll = gaussian_nll(mean, logvar, target).mean()
        bce = nn.functional.binary_cross_entropy_with_logits(logit, done)
        return nll + bce + 0.01 * (self.max_logvar.sum() - self.min_logvar.sum())


@torch.no_grad()
def branched_rollout(start_obs: torch.Tensor, k: int, policy: Callable[[torch.Tensor], torch.Tensor],
                     step: StepFn) -> dict[str, torch.Tensor]:
    """Rollouts of length <= k from each start state [M, O]; a rollout ends at its first terminal.

    ``policy(obs [m, O]) -> actions [m, A]``; ``step(obs, act) -> (next_obs [m, O], reward [m], done [m] bool)``.
    Returns the transitions in rollout-step order: obs, action, reward, next_obs, done, and ``start`` [T]
    (the row of ``start_obs`` each came from) and ``h`` [T] (its step within the rollout).
    """
    obs = start_obs
    alive = torch.arange(start_obs.shape[0], device=start_obs.device)
    out: dict[str, list[torch.Tensor]] = {k_: [] for k_ in ("obs", "action", "reward", "next_obs", "done", "start", "h")}
    for h in range(k):
        if alive.numel() == 0:
            break
        a = policy(obs)
        nxt, r, done = step(obs, a)
        done = done.bool()
        for key, v in (("obs", obs), ("action", a), ("reward", r), ("next_obs", nxt), ("done", done),
                       ("start", alive), ("h", torch.full_like(alive, h))):
            out[key].append(v)
        keep = ~done
        obs, alive = nxt[keep], alive[keep]
    if not out["obs"]:
        return {}
    return {key: torch.cat(v) for key, v in out.items()}


class MBPO(nn.Module):
    """MBPO learner (an :class:`~roborl.learners.base.OffPolicyLearner`; ``train.algo=mbpo``)."""

    def __init__(self, obs_dim: int | Mapping[str, Any], act_dim: int, cfg: MBPOConfig, device: str = "cpu") -> None:
        super().__init__()
        if not isinstance(obs_dim, int):
            from roborl.errors import UsageError

            raise UsageError("env.obs_mode: MBPO needs flat state observations (its models predict the next state)")
        self.cfg = cfg
        self.device = torch.device(device)
        self.obs_dim, self.act_dim = obs_dim, act_dim
        self.sac = SAC(obs_dim, act_dim, cfg.sac, device)
        self.dynamics = DynamicsEnsemble(obs_dim, act_dim, cfg.ensemble_size, tuple(cfg.model_hidden)).to(self.device)
        self.model_opt = torch.optim.Adam(self.dynamics.parameters(), lr=cfg.model_lr, weight_decay=cfg.model_weight_decay)
        self.register_buffer("elites", torch.arange(cfg.elites, device=self.device))
        cap = cfg.model_retain * cfg.rollout_batch * max(cfg.rollout_min_length, cfg.rollout_max_length)
        z = lambda *s, dt=torch.float32: torch.zeros(*s, dtype=dt, device=self.device)  # noqa: E731
        self.buf = {"obs": z(cap, obs_dim), "action": z(cap, act_dim), "reward": z(cap), "next_obs": z(cap, obs_dim),
                    "done": z(cap, dt=torch.bool)}
        self.buf_cap, self.buf_size, self.buf_ptr = cap, 0, 0
        self._sample: SampleFn | None = None
        self.env_step = 0
        self._next_model_round = 0
        self.last_model: dict[str, torch.Tensor] = {}

    # ------------------------------------------------------------------ acting (SAC's)
    def act(self, obs: Any, deterministic: bool = False) -> torch.Tensor:
        return self.sac.act(obs, deterministic)

    def set_progress(self, env_step: int) -> None:
        self.env_step = env_step
        self.sac.set_progress(env_step)

    def as_policy(self) -> SACPolicy:
        return self.sac.as_policy()

    def acting_state(self) -> dict[str, torch.Tensor]:
        return self.sac.acting_state()

    def load_acting_state(self, state: dict[str, torch.Tensor]) -> None:
        self.sac.load_acting_state(state)

    # ------------------------------------------------------------------ model
    def _real(self, n: int) -> Batch:
        assert self._sample is not None, "start_learning was not called"
        return self._sample(n, gamma=self.cfg.gamma, n_step=1, relabel=False)

    def train_model(self, steps: int | None = None) -> dict[str, torch.Tensor]:
        """``steps`` Adam steps of the ensemble on bootstrap batches of real transitions, then pick the elites
        by held-out MSE of the mean. Returns detached metrics."""
        c, E = self.cfg, self.cfg.ensemble_size
        fit = self._real(min(4096, c.model_batch * E))
        self.dynamics.fit_input_stats(torch.cat([fit.obs.float(), fit.action.float()], -1))
        loss = torch.zeros((), device=self.device)
        for _ in range(c.model_steps if steps is None else steps):
            b = self._real(c.model_batch * E)
            o, a, t, d = _model_targets(b)
            loss = self.dynamics.loss(o.view(E, -1, self.obs_dim), a.view(E, -1, self.act_dim),
                                      t.view(E, -1, self.obs_dim + 1), d.view(E, -1))
            self.model_opt.zero_grad(set_to_none=True)
            loss.backward()
            self.model_opt.step()
        with torch.no_grad():
            o, a, t, d = _model_targets(self._real(1024))
            mean, logvar, _ = self.dynamics(o, a)
            mse = (mean - t).pow(2).mean((1, 2))  # [E]
            self.elites.copy_(torch.argsort(mse)[: c.elites])
            nll = gaussian_nll(mean, logvar, t).mean()
        self.last_model = {"model/loss": loss.detach(), "model/holdout_mse": mse[self.elites].mean(),
                           "model/holdout_nll": nll}
        return self.last_model

    @torch.no_grad()
    def model_step(self, obs: torch.Tensor, act: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One sampled model transition per row through a random elite: obs [m, O], act [m, A] ->
        (next_obs [m, O], reward [m], done [m] bool)."""
        mean, logvar, logit = self.dynamics(obs, act)  # [E, m, D]
        m = obs.shape[0]
        pick = self.elites[torch.randint(len(self.elites), (m,), device=self.device)]
        rows = torch.arange(m, device=self.device)
        mu, lv = mean[pick, rows], logvar[pick, rows]
        y = mu + torch.randn_like(mu) * (0.5 * lv).exp()
        return obs + y[:, :-1], y[:, -1], torch.sigmoid(logit[pick, rows]) > 0.5

    @torch.no_grad()
    def rollout(self, k: int | None = None) -> int:
        """Branch ``rollout_batch`` rollouts from real states into the model buffer; returns transitions added."""
        c = self.cfg
        k = rollout_length(self.env_step, c) if k is None else k
        start = self._real(c.rollout_batch).obs.float()
        tr = branched_rollout(start, k, lambda o: self.sac.act(o), self.model_step)
        if not tr:
            return 0
        n = tr["obs"].shape[0]
        idx = (self.buf_ptr + torch.arange(n, device=self.device)) % self.buf_cap
        for key in self.buf:
            self.buf[key][idx] = tr[key].to(self.buf[key].dtype)
        self.buf_ptr = int((self.buf_ptr + n) % self.buf_cap)
        self.buf_size = min(self.buf_cap, self.buf_size + n)
        return n

    def model_batch(self, n: int) -> Batch:
        """n uniform transitions of the model buffer as a :class:`Batch` (discount gamma, 0 after a terminal)."""
        i = torch.randint(self.buf_size, (n,), device=self.device)
        b = {k: v[i] for k, v in self.buf.items()}
        return Batch(obs=b["obs"], action=b["action"], reward=b["reward"], next_obs=b["next_obs"],
                     discount=torch.where(b["done"], 0.0, self.cfg.gamma).float(), weight=torch.ones(n, device=self.device),
                     index=torch.full((n,), -1, dtype=torch.int64, device=self.device),
                     is_demo=torch.zeros(n, dtype=torch.bool, device=self.device))

    # ------------------------------------------------------------------ learning
    def set_sampler(self, sample: SampleFn) -> None:
        """The runner's sampler, handed over at construction (a resumed run never calls start_learning)."""
        self._sample = sample

    def start_learning(self, sample: SampleFn, *, num_steps: int, num_demo_steps: int) -> None:
        self._sample = sample
        self.sac.start_learning(sample, num_steps=num_steps, num_demo_steps=num_demo_steps)
        self._next_model_round = self.env_step  # refit and roll out at the first update

    def update(self, batch: Batch) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """One SAC step on real_ratio of ``batch`` (real) + model transitions; first a model round when due."""
        c = self.cfg
        metrics: dict[str, torch.Tensor] = {}
        if self.env_step >= self._next_model_round:
            metrics.update(self.train_model())
            self.rollout()
            self._next_model_round = self.env_step + c.model_train_every
        n = c.sac.batch_size
        n_real = n if self.buf_size == 0 else min(batch.reward.shape[0], max(1, int(round(c.real_ratio * n))))
        real = _rows(batch, n_real)
        mix = real if n_real == n else _cat(real, self.model_batch(n - n_real))
        m, td = self.sac.update(mix)
        metrics.update(m)
        metrics["model/buffer"] = torch.tensor(float(self.buf_size))
        metrics["model/rollout_length"] = torch.tensor(float(rollout_length(self.env_step, c)))
        td_real = torch.zeros(batch.reward.shape[0], device=td.device)
        td_real[:n_real] = td[:n_real]
        return metrics, td_real

    # ------------------------------------------------------------------ state
    def full_state(self) -> dict[str, Any]:
        """SAC's full state, the ensemble and its optimiser, the elites and the model-round counter. The
        model buffer is not saved: it is rebuilt by the model round that runs at the first update after a resume."""
        return {"sac": self.sac.full_state(), "dynamics": self.dynamics.state_dict(), "model_opt": self.model_opt.state_dict(),
                "elites": self.elites.clone()}

    def load_full_state(self, st: dict[str, Any]) -> None:
        self.sac.load_full_state(st["sac"])
        self.dynamics.load_state_dict(st["dynamics"])
        self.model_opt.load_state_dict(st["model_opt"])
        self.elites.copy_(st["elites"])
        self._next_model_round = 0


def _model_targets(b: Batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """A 1-step real batch -> (obs [B, O], action [B, A], target [B, O + 1] = (s' - s, r), done [B] float)."""
    o, nxt = b.obs.float(), b.next_obs.float()
    t = torch.cat([nxt - o, b.reward.float().unsqueeze(-1)], -1)
    return o, b.action.float(), t, (b.discount == 0).float()


def _rows(b: Batch, n: int) -> Batch:
    return Batch(obs=b.obs[:n].float(), action=b.action[:n].float(), reward=b.reward[:n], next_obs=b.next_obs[:n].float(),
                 discount=b.discount[:n], weight=b.weight[:n], index=b.index[:n], is_demo=b.is_demo[:n])


def _cat(a: Batch, b: Batch) -> Batch:
    return Batch(**{f: torch.cat([getattr(a, f), getattr(b, f).to(getattr(a, f).dtype)])
                    for f in ("obs", "action", "reward", "next_obs", "discount", "weight", "index", "is_demo")})


def policy_from_checkpoint(state: dict[str, Any], meta: dict[str, Any], device: str = "cpu") -> SACPolicy:
    """The SAC agent's acting policy from an MBPO checkpoint alone."""
    import dataclasses

    from roborl.config import build

    sac_cfg = meta["config"]["mbpo"].get("sac", {})
    known = {f.name for f in dataclasses.fields(SACConfig)}
    cfg = build(SACConfig, {k: v for k, v in sac_cfg.items() if k in known}, source="checkpoint meta")
    learner = SAC(int(meta["obs_shape"][0]), int(meta["act_shape"][0]), cfg, device)
    learner.load_state_dict(state["learner"]["sac"]["model"])
    return SACPolicy(learner)


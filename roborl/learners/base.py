"""What a learner offers its runner: the learner protocols (rsl_rl's algorithm/runner split).

A learner holds networks, optimisers and losses. It sees tensors only: it never opens a store,
an env, a socket or a file. The runner owns the loop (stepping envs, storing, sampling,
checkpoint files, eval, logging) and talks to a learner only through these methods, so a new
algorithm is one file in ``roborl/learners/`` plus one registry entry; no runner changes.

Two protocols, one per runner:

- :class:`OffPolicyLearner` (SAC, TD3, DDPG, discrete SAC, MBPO): the off-policy
  runner (:mod:`roborl.runners.off_policy`) samples a :class:`roborl.batch.Batch` from the
  replay store and calls ``update(batch)``, which returns metrics and the per-sample |TD error|
  used for priorities.
- :class:`OnPolicyLearner` (PPO, REINFORCE, A2C, NPG, TRPO): the on-policy runner collects
  a rollout with ``act``/``value`` and hands it to ``update``.

Both expose a :class:`Policy` for eval and robots (``policy()`` / ``as_policy()``) and exact
state for checkpoints and resume. Which class implements which protocol is the registry
:data:`roborl.learners.LEARNERS`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Protocol, runtime_checkable

import numpy as np

__all__ = ["Policy", "OffPolicyLearner", "OnPolicyLearner", "Rollout", "POLICY", "PRIVILEGED", "SampleFn"]

POLICY = "policy"  # the observation group of a flat Box observation
PRIVILEGED = "critic"  # the observation group only the critic reads (asymmetric actor-critic, Pinto et al. 2018)

SampleFn = Callable[..., Any]
"""The runner's batch sampler handed to :meth:`OffPolicyLearner.start_learning`:
``sample(batch_size, *, gamma, n_step=None, demo_fraction=None, relabel=True) -> Batch``
(:meth:`roborl.store.Sampler.sample`). The learner draws batches through it and never sees the store."""


@runtime_checkable
class Policy(Protocol):
    """What eval, robots and actors need from a trained learner."""

    def act(self, obs: np.ndarray, deterministic: bool = True) -> np.ndarray:
        """obs: [N, O] float32 raw (un-normalised) env observations -> actions [N, A] in [-1, 1]."""
        ...


@runtime_checkable
class OffPolicyLearner(Protocol):
    """An off-policy learner, driven by ``roborl.runners.off_policy``.

    Life cycle: built from ``(obs_dim, act_dim, cfg, device=device)``; the runner acts with
    random actions until ``cfg.warmup_steps``, then calls :meth:`start_learning` once, then per
    env step ``set_progress`` and ``cfg.utd`` times ``update`` on ``cfg.batch_size`` samples
    discounted with ``cfg.gamma`` (the runner reads these four fields of the learner's config).
    ``eval()``/``train()`` switch modes around evaluation (``torch.nn.Module``'s).
    """

    device: Any

    def start_learning(self, sample: SampleFn, *, num_steps: int, num_demo_steps: int) -> None:
        """Called once before the first update, with the store holding ``num_steps`` transitions
        (``num_demo_steps`` of them demos): fit normalisers, pretrain on demos, and the like."""
        ...

    def act(self, obs: Any, deterministic: bool = False) -> Any:
        """Raw obs [N, O] -> actions [N, A] in [-1, 1] (a tensor on the learner's device)."""
        ...

    def set_progress(self, env_step: int) -> None:
        """Schedules that depend on the env-step count (e.g. a residual scale ramp)."""
        ...

    def update(self, batch: Any) -> tuple[dict[str, Any], Any]:
        """One gradient step on a sampled batch -> (metrics as detached 0-d tensors, |TD error| [B]).

        Metrics stay on the device: the runner accumulates them and syncs once per log row.
        """
        ...

    def state_dict(self) -> dict[str, Any]:
        """Weights only (what eval and actors need)."""
        ...

    def full_state(self) -> dict[str, Any]:
        """Weights, optimiser states and counters: everything for an exact resume."""
        ...

    def load_full_state(self, state: dict[str, Any]) -> None:
        ...

    def acting_state(self) -> dict[str, Any]:
        """The weights a remote actor needs to act (name -> tensor), e.g. no critics."""
        ...

    def load_acting_state(self, state: dict[str, Any]) -> None:
        """Load what :meth:`acting_state` returned (on an actor)."""
        ...

    def as_policy(self) -> Policy:
        """The :class:`Policy` view (numpy in, numpy out) for eval."""
        ...

    def eval(self) -> Any:
        ...

    def train(self, mode: bool = True) -> Any:
        ...


@dataclass
class Rollout:
    """One iteration's on-policy data, as the on-policy runner collects it (tensors on the learner's device).

    obs: raw observation groups ``{k: [T, N, O_k]}`` (the privileged ``"critic"`` group included);
    actions ``[T, N, A]`` the Gaussian samples u (pre-squash); logp ``[T, N]``; mu ``[T, N, A]``
    the old policy means; values ``[T, N]``; rewards ``[T, N]`` (already scaled if norm_reward);
    next_values ``[T, N]`` V of the state that actually followed each step; terminated / dones
    ``[T, N]`` (1 where s_{t+1} is terminal / where the episode ended at step t).
    """

    obs: dict[str, Any]
    actions: Any
    logp: Any
    mu: Any
    values: Any
    rewards: Any
    next_values: Any
    terminated: Any
    dones: Any


@runtime_checkable
class OnPolicyLearner(Protocol):
    """An on-policy learner, driven by ``roborl.runners.on_policy``.

    Observations are dicts of groups ``{k: [N, O_k]}`` (raw, un-normalised). ``act`` returns what
    the rollout buffer keeps; ``update`` consumes one filled :class:`Rollout` (advantages computed
    by the learner) and returns float metrics; ``observe`` then folds the rollout's observations into
    the learner's normalisers (frozen during collection and update).
    """

    def act(self, obs: Any) -> tuple[Any, ...]:
        """obs groups -> (action [N, A] in [-1, 1], pre-squash sample [N, A], log-prob [N], mean [N, A], value [N])."""
        ...

    def value(self, obs: Any) -> Any:
        """obs groups -> V(s) [N] (bootstrap values at rollout ends and truncations)."""
        ...

    def update(self, rollout: Rollout) -> dict[str, float]:
        ...

    def observe(self, obs: Any) -> None:
        """Fold a rollout's observation groups ``{k: [T, N, O_k]}`` into the normalisers."""
        ...

    def set_lr(self, lr: float) -> None:
        """Learning-rate schedules the runner drives (``anneal_lr``)."""
        ...

    def policy(self) -> Policy:
        ...

    def state_dict(self) -> dict[str, Any]:
        ...

    def load_state_dict(self, state: dict[str, Any]) -> None:
        ...

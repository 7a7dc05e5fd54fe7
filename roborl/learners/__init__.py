"""Learners: losses and updates only. They never touch zarr, robots or files.

:data:`LEARNERS` is the one registry of algorithms (``train.algo`` -> :class:`LearnerSpec`). It is
torch-free: configs validate ``train.algo`` against it, ``roborl.runners.RUNNERS`` derives the
runner from each entry's ``kind``, eval rebuilds a policy from a checkpoint with the entry's
``policy_loader``, and tests loop over it. A new algorithm is one file here, its config dataclass
in :mod:`roborl.learners.config`, a section on :class:`roborl.runners.config.RunConfig`, and one
entry below; the runner of its kind drives it through the protocol in :mod:`roborl.learners.base`.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Literal

from roborl.learners.base import OffPolicyLearner, OnPolicyLearner, Policy

Kind = Literal["off_policy", "on_policy"]


@dataclass(frozen=True)
class LearnerSpec:
    """One algorithm: which runner drives it and where its parts live (as import strings, so the
    registry itself imports neither torch nor the learner)."""

    kind: Kind            # "off_policy" (replay store, OffPolicyLearner) | "on_policy" (rollouts, OnPolicyLearner)
    learner: str          # "module:Class", built as Class(obs_dim, act_dim, cfg, device=device)
    section: str          # the RunConfig section holding its config (cfg.<section>)
    config: str           # "module:Class" of that section's frozen config dataclass (torch-free)
    policy_loader: str    # "module:function": policy_from_checkpoint(state, meta, device) -> Policy
    actions: Literal["continuous", "discrete"] = "continuous"  # Box actions in [-1, 1] | gymnasium Discrete (act_dim = n)
    sim_only: bool = False  # refused on robot:// envs (e.g. MBPO's model rollouts assume a simulator's data volume)


LEARNERS: dict[str, LearnerSpec] = {
    "sac": LearnerSpec("off_policy", "roborl.learners.sac:SAC", "sac", "roborl.learners.config:SACConfig",
                       "roborl.learners.sac:policy_from_checkpoint"),
    "ppo": LearnerSpec("on_policy", "roborl.learners.ppo:PPO", "ppo", "roborl.learners.config:PPOConfig",
                       "roborl.learners.ppo:policy_from_checkpoint"),
    "td3": LearnerSpec("off_policy", "roborl.learners.td3:TD3", "td3", "roborl.learners.config:TD3Config",
                       "roborl.learners.td3:policy_from_checkpoint"),
    "ddpg": LearnerSpec("off_policy", "roborl.learners.ddpg:DDPG", "ddpg", "roborl.learners.config:DDPGConfig",
                        "roborl.learners.ddpg:policy_from_checkpoint"),
    "sac_discrete": LearnerSpec("off_policy", "roborl.learners.sac_discrete:DiscreteSAC", "sac_discrete",
                                "roborl.learners.config:DiscreteSACConfig",
                                "roborl.learners.sac_discrete:policy_from_checkpoint", actions="discrete"),
    "reinforce": LearnerSpec("on_policy", "roborl.learners.reinforce:Reinforce", "reinforce",
                             "roborl.learners.config:ReinforceConfig", "roborl.learners.reinforce:policy_from_checkpoint"),
    "a2c": LearnerSpec("on_policy", "roborl.learners.a2c:A2C", "a2c", "roborl.learners.config:A2CConfig",
                       "roborl.learners.a2c:policy_from_checkpoint"),
    "npg": LearnerSpec("on_policy", "roborl.learners.npg:NPG", "npg", "roborl.learners.config:NPGConfig",
                       "roborl.learners.npg:policy_from_checkpoint"),
    "trpo": LearnerSpec("on_policy", "roborl.learners.trpo:TRPO", "trpo", "roborl.learners.config:TRPOConfig",
                        "roborl.learners.trpo:policy_from_checkpoint"),
    "mbpo": LearnerSpec("off_policy", "roborl.learners.mbpo:MBPO", "mbpo", "roborl.learners.config:MBPOConfig",
                        "roborl.learners.mbpo:policy_from_checkpoint", sim_only=True),
}

# Derived view kept for callers that only need the loaders.
POLICY_LOADERS: dict[str, str] = {algo: spec.policy_loader for algo, spec in LEARNERS.items()}

__all__ = ["LEARNERS", "LearnerSpec", "POLICY_LOADERS", "Policy", "OffPolicyLearner", "OnPolicyLearner",
           "check_algo", "import_object", "learner_class", "build_learner", "load_policy"]


def check_algo(algo: Any) -> str | None:
    """A config ``check``: None when ``algo`` is registered, else the reason (naming the choices)."""
    return None if algo in LEARNERS else f"expected one of {sorted(LEARNERS)}"


def import_object(path: str) -> Any:
    """``"module:attr"`` -> the attribute."""
    mod, _, attr = path.partition(":")
    return getattr(importlib.import_module(mod), attr)


def learner_class(algo: str) -> type:
    from roborl.errors import UsageError

    if algo not in LEARNERS:
        raise UsageError(f"train.algo: {check_algo(algo)}, got {algo!r}")
    return import_object(LEARNERS[algo].learner)


def build_learner(algo: str, obs_dim: Any, act_dim: int, cfg: Any, device: str = "cpu", **hints: Any) -> Any:
    """The learner of ``algo`` with its config section ``cfg`` (``getattr(run_cfg, LEARNERS[algo].section)``).

    ``hints``: optional keyword arguments a runner knows (e.g. ``expected_steps``, the run's gradient
    steps); each is passed only to a learner whose constructor takes it.
    """
    import inspect

    cls = learner_class(algo)
    params = inspect.signature(cls).parameters
    return cls(obs_dim, act_dim, cfg, device=device, **{k: v for k, v in hints.items() if k in params})


def load_policy(state: dict[str, Any], meta: dict[str, Any], device: str = "cpu") -> Policy:
    algo = meta.get("algo") or meta.get("config", {}).get("train", {}).get("algo")
    if algo not in LEARNERS:
        from roborl.errors import UsageError

        raise UsageError(f"checkpoint meta 'algo' is {algo!r}; expected one of {sorted(LEARNERS)}")
    return import_object(LEARNERS[algo].policy_loader)(state, meta, device)

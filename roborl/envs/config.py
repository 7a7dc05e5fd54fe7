"""Environment section of a run config, and :func:`build_env`, which composes the wrapper stack.

The stack, innermost first (each layer sees what the one outside it sends)::

    make_env(id)            gymnasium id | dmc:<domain>-<task> | robot://HOST:PORT
    -> SafetyLayer          only if the env has none yet (our tasks apply their own)
    -> TerminateOnSuccess   if env.terminate_on_success (part of the task definition: innermost)
    -> RescaleAction        agent acts in [-1, 1]
    -> DomainRandomization  if env.dr.enabled (and not eval, unless env.dr.at_eval)
    -> HistoryObservation   if env.obs_last_actions / env.obs_history (commanded actions and past
                            observations, outside DR: actions without noise or delay)
    -> NormalizeObservation if env.normalize_obs (frozen when eval=True)
    -> DiscretizeActions    if env.action_bins (Discrete(bins ** D) over the [-1, 1] Box)

Why this order:

* safety is innermost so that *every* action reaching the plant has been checked,
  including the noisy and delayed actions DR produces; nothing outside it can bypass it;
* rescaling sits outside safety so learners act in [-1, 1] and ``info["executed_action"]``
  (written by the safety layer in env units) is mapped back into the agent's space;
* DR sits outside rescaling so action noise is in normalized units (comparable across
  dimensions) and inside normalization so observation noise is in physical units and the
  normalizer's statistics include the randomized dynamics;
* normalization is outermost on the observation side: the learner sees exactly what it will
  see at eval, where the statistics are frozen (load them with
  :func:`roborl.envs.wrappers.load_obs_normalizer_state`);
* discretisation is outermost on the action side, so every layer inside it (safety, rescaling,
  DR, action history) still handles a Box action.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import gymnasium as gym
from gymnasium import spaces

from roborl.config import field, non_negative, positive
from roborl.envs.dr import DomainRandomization, DRConfig
from roborl.envs.safety import SafetyConfig

__all__ = ["EnvConfig", "build_env", "apply_safety"]


def _non_empty(v: str | None) -> str | None:
    return None if v is None or (isinstance(v, str) and v.strip()) else "must be a non-empty string or null"


@dataclass(frozen=True)
class EnvConfig:
    """Which env to make and how to wrap it."""

    id: str = field("roborl/Push-v0", doc="Env id: a gymnasium id, 'dmc:<domain>-<task>', or 'robot://HOST:PORT'.")
    kwargs: dict[str, Any] = field(default_factory=dict, doc="Keyword arguments passed to the env constructor.")
    imports: tuple[str, ...] = field((), doc="Modules imported before making the env, so third-party ids resolve.")
    max_episode_steps: int | None = field(None, doc="Override the episode length (a truncating time limit); null keeps the env's own.", check=positive)
    reset_mode: Literal["auto", "manual"] = field(
        "auto", doc="auto = env.reset() resets the scene; manual = the robot holds and the operator resets the scene, "
                    "then presses START on teleop.device (roborl.teleop.reset.ManualReset; training runs only).")
    reset_timeout_s: float = field(300.0, doc="manual resets: seconds to wait for START; then the run saves its store "
                                              "and checkpoint and stops with one line (resume on the same run.dir).",
                                   check=positive)
    scale_actions: bool = field(True, doc="Rescale a bounded Box action space to [-1, 1].")
    normalize_obs: bool = field(False, doc="Normalize observations with running mean/var in the env stack (frozen at eval). "
                                           "Off by default: SAC and PPO keep their own normalizers, and replayed observations "
                                           "would otherwise go stale as the statistics move.")
    obs_clip: float | None = field(10.0, doc="Clip normalized observations to [-obs_clip, obs_clip]; null = no clip.", check=positive)
    obs_last_actions: int = field(0, doc="Append the last k commanded actions to the observation (0 = off); lets a policy "
                                          "cope with action latency (roborl.envs.wrappers.HistoryObservation).", check=non_negative)
    obs_history: int = field(0, doc="Append the previous j observations to the observation (0 = off): a short history "
                                    "lets a feed-forward policy identify randomized dynamics (HistoryObservation).",
                             check=non_negative)
    terminate_on_success: bool = field(False, doc="End an episode (terminated) on its first info['is_success'] step, as "
                                                  "HIL-SERL does on a robot (roborl.envs.wrappers.TerminateOnSuccess).")
    action_bins: int = field(0, doc="Discrete actions for discrete-action learners (train.algo=sac_discrete) on a Box "
                                    "env: each action dimension takes one of this many evenly spaced values in "
                                    "[-1, 1] (odd keeps 0), bins ** D actions in all (roborl.envs.discretize); 0 = off.",
                             check=non_negative)
    success_key: str | None = field(None, doc="info key that flags a successful step (read by "
                                              "roborl.envs.success.step_success); null tries 'is_success', then 'success'.",
                                    check=_non_empty)
    safety: SafetyConfig = field(default_factory=SafetyConfig, doc="Safety layer.")
    dr: DRConfig = field(default_factory=DRConfig, doc="Domain randomization.")


def apply_safety(env: gym.Env, cfg: SafetyConfig) -> gym.Env:
    """Wrap ``env`` in the safety layer unless it already has one (our tasks do).

    Returns ``env`` unchanged when the env cannot take one (a non-Box action space).
    """
    from roborl.envs.safety import SafetyLayer
    from roborl.envs.wrappers import find_wrapper

    if find_wrapper(env, SafetyLayer) is not None or getattr(env.unwrapped, "safety_layer", None) is not None:
        return env
    if not isinstance(env.action_space, spaces.Box):
        return env
    return SafetyLayer(env, cfg)


def _applies_own_safety(env_id: str) -> bool:
    """True for our registered tasks, whose constructors take ``safety=SafetyConfig | False``."""
    from roborl.envs.registry import TASKS

    return env_id in TASKS


def build_env(cfg: EnvConfig, seed: int | None = None, *, eval: bool = False,  # noqa: A002 - reads naturally
              render_mode: str | None = None) -> gym.Env:
    """Make the env of ``cfg`` and wrap it (order and reasons in the module docstring).

    Args:
        cfg: the ``env`` section of a run config.
        seed: seeds the DR generators and the action/observation spaces; the caller still
            calls ``env.reset(seed=seed)`` for the first episode.
        eval: an eval env: DR off (unless ``cfg.dr.at_eval``) and normalizer statistics frozen.
        render_mode: passed to the env constructor (e.g. ``"rgb_array"`` for videos);
            overrides ``cfg.kwargs["render_mode"]``.
    """
    from roborl.envs.make import make_env
    from roborl.envs.wrappers import HistoryObservation, NormalizeObservation, RescaleAction, TerminateOnSuccess

    kwargs = dict(cfg.kwargs)
    if render_mode is not None:
        kwargs["render_mode"] = render_mode
    if "safety" not in kwargs and _applies_own_safety(cfg.id):
        # Our tasks build their safety layer themselves (with their workspace box); hand them
        # this config so env.safety.* (enabled=false included) reaches it.
        kwargs["safety"] = cfg.safety
    env = make_env(cfg.id, imports=cfg.imports, max_episode_steps=cfg.max_episode_steps, **kwargs)
    try:
        if cfg.safety.enabled:
            env = apply_safety(env, cfg.safety)
        if cfg.terminate_on_success:
            env = TerminateOnSuccess(env, cfg.id, success_key=cfg.success_key)
        if cfg.scale_actions and isinstance(env.action_space, spaces.Box):
            env = RescaleAction(env)
        if cfg.dr.enabled and (not eval or cfg.dr.at_eval):
            env = DomainRandomization(env, cfg.dr, seed=seed)
        if cfg.obs_last_actions or cfg.obs_history:
            env = HistoryObservation(env, cfg.obs_last_actions, cfg.obs_history)
        if cfg.normalize_obs:
            env = NormalizeObservation(env, clip=cfg.obs_clip, frozen=eval)
        if cfg.action_bins:
            from roborl.envs.discretize import DiscretizeActions

            env = DiscretizeActions(env, cfg.action_bins)
    except BaseException:
        env.close()
        raise
    if seed is not None:
        env.action_space.seed(seed)
        env.observation_space.seed(seed)
    return env


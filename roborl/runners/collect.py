"""Record episodes of a fixed policy (scripted expert, random, or a checkpoint) into a replay store.

The library side of ``roborl collect``. Episode ``i`` of a partition always resets with seed
``seed + i`` and reaches the store only once it has ended (a buffered episode), so a crashed
or interrupted collection is resumed by running it again: ``episodes`` is the number the
partition should hold. Every step goes through :func:`roborl.envs.step.env_step`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from roborl.envs.step import EpisodeStats, env_step
from roborl.errors import UsageError

__all__ = ["ActFn", "CollectResult", "build_collect_env", "collect_policy", "record_episodes"]

ActFn = Callable[[Any, int], np.ndarray]
"""``act(obs, episode_index) -> action [A]``; a change of episode index starts a fresh, seeded episode."""


@dataclass
class CollectResult:
    already: int = 0      # episodes in the partition before this call
    episodes: int = 0     # episodes recorded by this call
    successes: int = 0    # of those, episodes where some step succeeded
    steps: int = 0


def build_collect_env(env_id: str, seed: int, max_episode_steps: int | None = None,
                      terminate_on_success: bool = False, env_overrides: dict[str, Any] | None = None) -> Any:
    """The env stack for collection: :func:`roborl.envs.config.build_env` with the default config
    for ``env_id`` (safety + action rescaling), an optional time limit and success termination.
    ``env_overrides``: the nested ``env`` section of ``env.*`` key=value overrides, as for ``roborl train``
    (e.g. ``{"kwargs": {"obs_mode": "proprio+pixels"}}``); they win over the flags."""
    from roborl.config import _merge, build
    from roborl.envs.config import EnvConfig, build_env

    base = {"id": env_id, "terminate_on_success": terminate_on_success,
            **({"max_episode_steps": max_episode_steps} if max_episode_steps else {})}
    cfg = build(EnvConfig, _merge(base, env_overrides or {}), "command line")
    return build_env(cfg, seed=seed)


def env_section(overrides: list[str], allowed: tuple[str, ...] = ("env",)) -> dict[str, dict[str, Any]]:
    """``["env.kwargs.obs_mode=pixels", ...]`` -> {"env": {"kwargs": {"obs_mode": "pixels"}}}: key=value
    overrides by section; a key outside ``allowed`` sections is a one-line UsageError naming it."""
    from roborl.config import parse_overrides

    for item in overrides:
        key = item.split("=", 1)[0]
        if "=" not in item or key.split(".", 1)[0] not in allowed or "." not in key:
            raise UsageError(f"{item}: expected {' or '.join(a + '.KEY=VALUE' for a in allowed)}")
    return parse_overrides(overrides)


def collect_policy(spec: str, env: Any, *, noise: float = 0.0, seed: int = 0, device: str = "cpu") -> ActFn:
    """``spec``: "scripted" (roborl.envs.expert, ``noise`` is its noise), "random", or a checkpoint /
    run directory (deterministic actions plus Gaussian ``noise``)."""
    if noise < 0:
        raise UsageError(f"--noise: expected >= 0, got {noise}")
    if spec == "scripted":
        from roborl.envs.expert import expert as make_expert

        state: dict[str, Any] = {"ep": None, "exp": None}

        def act(obs: Any, ep: int) -> np.ndarray:
            if state["ep"] != ep:  # a fresh, seeded expert per episode: resumed runs repeat exactly
                state["exp"] = make_expert(env, noise=noise, seed=seed + ep)
                state["exp"].reset()
                state["ep"] = ep
            return state["exp"](obs)
        return act
    if spec == "random":
        rngs: dict[int, Any] = {}

        def act(obs: Any, ep: int) -> np.ndarray:
            if ep not in rngs:
                rngs.clear()
                env.action_space.seed(seed + ep)
                rngs[ep] = True
            return env.action_space.sample()
        return act
    from roborl.checkpoint import load_checkpoint
    from roborl.learners import load_policy

    ck_state, meta, _ = load_checkpoint(spec)
    pol = load_policy(ck_state, meta, device)
    rng = np.random.default_rng(seed)
    low = getattr(env.action_space, "low", -1.0)
    high = getattr(env.action_space, "high", 1.0)

    def act(obs: Any, ep: int) -> np.ndarray:
        a = np.asarray(pol.act(np.asarray(obs, np.float32)[None], deterministic=True))[0]
        if noise > 0:
            a = np.clip(a + rng.normal(0.0, noise, a.shape), low, high)
        return a
    return act


def record_episodes(env: Any, store: Any, act: ActFn, *, episodes: int, partition: str = "demo", seed: int = 0,
                    on_episode: Callable[[], None] | None = None) -> CollectResult:
    """Record episodes ``already .. episodes-1`` of ``partition`` (episode i resets with ``seed + i``)."""
    res = CollectResult(already=int(store.total_episodes(partition)))
    stats = EpisodeStats()
    for ep in range(res.already, episodes):
        obs, _ = env.reset(seed=seed + ep)
        # Buffered: the episode reaches the store only when it ends (a crash drops it
        # whole and the rerun repeats it with the same seed).
        store.start_episode(obs, partition, buffered=True)
        stats.reset()
        while True:
            s = env_step(env, obs, act(obs, ep), sink=store, stats=stats)
            obs = s.next_obs
            if s.done:
                break
        res.episodes += 1
        res.successes += int(stats.success)
        res.steps += stats.length
        if on_episode is not None:
            on_episode()
    return res

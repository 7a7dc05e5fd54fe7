"""Shared pieces of the dataset converters: optional imports, store episodes in and out, checks.

Every mismatch raises :class:`roborl.errors.UsageError` with one line naming the field
(spaces, fps, a missing camera or feature); the CLI prints it and exits with code 2.
"""
from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from roborl.errors import UsageError

__all__ = ["require", "StoreEpisode", "iter_store_episodes", "env_fps", "check_fps", "EpisodeWriter",
           "unflatten_obs", "leaf_specs"]


def require(module: str, extra: str = "interop") -> Any:
    """Import an optional package, or UsageError naming the pip extra."""
    if importlib.util.find_spec(module) is None:
        raise UsageError(f"this needs the '{module}' package: pip install 'roborl[{extra}]'")
    return importlib.import_module(module)


@dataclass
class StoreEpisode:
    """One live episode of a store: ``rows`` = {field: [T, *shape]} as stored (exact dtypes)."""

    partition: str
    index: int
    flags: int
    rows: dict[str, np.ndarray]

    @property
    def length(self) -> int:
        return int(len(self.rows["reward"]))


def iter_store_episodes(store: Any) -> Iterator[StoreEpisode]:
    """Every live episode of both partitions (demo first), oldest first."""
    from roborl.store import PARTITIONS

    for part in PARTITIONS:
        eps = store.episodes(part)
        for i, (start, length, flags) in enumerate(eps):
            rows = store.read_rows(part, int(start), int(start + length))
            yield StoreEpisode(part, i, int(flags), rows)


def env_fps(env_id: str) -> float | None:
    """Control rate (steps per second) of a gymnasium / roborl env id, or None when it cannot be read
    without hardware (robot:// ids) or the id does not build."""
    if env_id.startswith("robot://") or not env_id:
        return None
    try:
        from roborl.envs.make import make_env
        from roborl.eval.episodes import env_control_dt

        env = make_env(env_id)
    except Exception:
        return None
    try:
        dt = env_control_dt(env)
    finally:
        env.close()
    return (1.0 / dt) if dt else None


def check_fps(have: float, want: float | None, what: str) -> None:
    if want is not None and abs(float(have) - float(want)) > 1e-6 * max(1.0, abs(float(want))):
        raise UsageError(f"fps: the dataset runs at {have:g} fps but {what} at {want:g} fps")


def leaf_specs(space: Any, prefix: str) -> dict[str, tuple[str, tuple[int, ...]]]:
    """{store field name: (dtype, shape)} of an observation/action space's leaves (the store's flattening)."""
    import gymnasium as gym

    if isinstance(space, gym.spaces.Dict):
        out: dict[str, tuple[str, tuple[int, ...]]] = {}
        for k, s in space.spaces.items():
            out.update(leaf_specs(s, f"{prefix}.{k}"))
        return out
    if isinstance(space, gym.spaces.Box):
        return {prefix: (np.dtype(space.dtype).name, tuple(int(x) for x in space.shape))}
    if isinstance(space, gym.spaces.Discrete):
        return {prefix: ("int64", ())}
    if isinstance(space, gym.spaces.MultiBinary):
        return {prefix: ("int8", tuple(int(x) for x in np.atleast_1d(space.n)))}
    raise UsageError(f"{prefix}: unsupported space type {type(space).__name__} (Box, Discrete, MultiBinary, Dict)")


def unflatten_obs(leaves: dict[str, np.ndarray], keys: list[str]) -> Any:
    """Store obs keys ([""] for a Box, dotted keys for Dict leaves) + values -> the env's observation."""
    if keys == [""]:
        return leaves[""]
    out: dict[str, Any] = {}
    for k in keys:
        d = out
        parts = k.split(".")
        for p in parts[:-1]:
            d = d.setdefault(p, {})
        d[parts[-1]] = leaves[k]
    return out


@dataclass
class EpisodeWriter:
    """Writes whole episodes into a replay store (created, or opened and checked field by field).

    ``extra_fields``: {name: (dtype, shape)} kept beyond the built-in fields (new stores only).
    """

    path: Path
    env_id: str
    observation_space: Any
    action_space: Any
    partition: str = "demo"
    extra_fields: dict[str, tuple[str, tuple[int, ...]]] = field(default_factory=dict)
    source: str = "the dataset"

    def __post_init__(self) -> None:
        from roborl.store import ReplayStore

        if self.partition not in ("demo", "online"):
            raise UsageError(f"--partition must be 'demo' or 'online', got {self.partition!r}")
        p = Path(self.path)
        wanted = {**leaf_specs(self.observation_space, "obs"), **leaf_specs(self.action_space, "action"),
                  **dict(self.extra_fields)}
        if (p / "meta.json").exists():
            # Check read-only first: a mismatch must not touch (or lock) the store.
            probe = ReplayStore.open(p, mode="r")
            have = {f.name: (f.dtype, tuple(f.shape)) for f in probe.fields}
            probe.close()
            for name, (dt, shape) in have.items():
                if name not in wanted and name.startswith(("obs", "action")):
                    what = "camera" if (np.dtype(dt) == np.uint8 and len(shape) == 3) else "feature"
                    raise UsageError(f"{self.source} has no {what} for store field {name!r} of {p}")
            for name, spec in wanted.items():
                g = have.get(name)
                if g is None:
                    if name in self.extra_fields:
                        continue  # an extra column the store does not keep: dropped
                    raise UsageError(f"store {p} has no field {name!r} that {self.source} provides")
                if (g[0], tuple(g[1])) != (spec[0], tuple(spec[1])):
                    raise UsageError(f"field {name!r}: {self.source} has {spec[0]}{list(spec[1])} but store {p} "
                                     f"has {g[0]}{list(g[1])}")
            self.keep_extras = [n for n in self.extra_fields if n in have]
            self.store = ReplayStore.open(p, mode="a")
        else:
            self.store = ReplayStore.create(p, env_id=self.env_id, observation_space=self.observation_space,
                                            action_space=self.action_space,
                                            extra_fields={k: (dt, list(s)) for k, (dt, s) in self.extra_fields.items()})
            self.keep_extras = list(self.extra_fields)
        self.obs_keys = list(self.store.obs_keys)
        self.episodes = 0
        self.steps = 0

    def _obs(self, cols: dict[str, np.ndarray], prefix: str, t: int) -> Any:
        return unflatten_obs({k: cols[prefix + ("." + k if k else "")][t] for k in self.obs_keys}, self.obs_keys)

    def write(self, cols: dict[str, np.ndarray]) -> None:
        """One episode: ``cols`` = {store field: [T, *shape]} with obs/next_obs leaves, action, reward,
        terminated, truncated, and optionally executed_action, is_success, intervention, log_prob,
        timestamp and extra fields. An episode whose last step is neither terminated nor truncated
        is kept as interrupted (as the store does for a closed-off episode)."""
        st = self.store
        T = len(cols["reward"])
        if T == 0:
            return
        st.start_episode(self._obs(cols, "obs", 0), self.partition, buffered=True)
        opt_names = [n for n in ("is_success", "intervention", "log_prob", "timestamp") if n in cols] + \
            [n for n in self.keep_extras if n in cols]
        ended = False
        for t in range(T):
            term, trunc = bool(cols["terminated"][t]), bool(cols["truncated"][t])
            if ended:
                raise UsageError(f"{self.source}: episode continues after a terminated/truncated step (row {t})")
            st.add_step(action=cols["action"][t],
                        executed_action=cols["executed_action"][t] if "executed_action" in cols else None,
                        reward=cols["reward"][t], next_obs=self._obs(cols, "next_obs", t), terminated=term,
                        truncated=trunc, **{n: cols[n][t] for n in opt_names})
            ended = term or trunc
        if not ended:
            st.end_episode()
        self.episodes += 1
        self.steps += T

    def close(self) -> None:
        self.store.close()

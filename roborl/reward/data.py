"""Labelled camera frames from replay stores, for the success classifier (numpy only).

Each stored step ``(obs, action, next_obs, is_success, ...)`` gives one frame: the step's
``next_obs`` cameras, labelled with that step's success (``is_success`` describes the state
*after* the step, i.e. ``next_obs``; the training wrapper classifies what ``env.step`` returns,
the same frame). Which steps are positive is :func:`label_steps`'s rule.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from roborl.errors import UsageError

__all__ = ["FrameSet", "image_keys", "proprio_keys", "label_steps", "load_frames"]


@dataclass
class FrameSet:
    """Frames and labels. ``N`` = frames.

    images:  camera key -> uint8 [N, H, W, 3]
    proprio: float32 [N, P] or None
    labels:  bool [N] (True = success)
    episode: int64 [N] episode number (unique over all sources), for splitting by episode
    sources: one dict per store: path, uuid, generation, episodes, steps
    proprio_names: the observation keys concatenated into ``proprio``
    """

    images: dict[str, np.ndarray]
    proprio: np.ndarray | None
    labels: np.ndarray
    episode: np.ndarray
    sources: list[dict[str, Any]] = field(default_factory=list)
    proprio_names: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def subset(self, idx: np.ndarray) -> "FrameSet":
        return FrameSet({k: v[idx] for k, v in self.images.items()},
                        None if self.proprio is None else self.proprio[idx], self.labels[idx], self.episode[idx],
                        self.sources, self.proprio_names)


def _is_image(dtype: str, shape: Sequence[int]) -> bool:
    return np.dtype(dtype) == np.uint8 and len(shape) == 3 and int(shape[-1]) == 3


def image_keys(store: Any) -> list[str]:
    """Observation keys of a store whose field is a uint8 H x W x 3 image (``obs.<key>``)."""
    return [f.name[len("obs."):] for f in store.fields if f.name.startswith("obs.") and _is_image(f.dtype, f.shape)]


def proprio_keys(store: Any) -> list[str]:
    """Non-image observation keys of a Dict-observation store."""
    return [f.name[len("obs."):] for f in store.fields if f.name.startswith("obs.") and not _is_image(f.dtype, f.shape)]


def label_steps(is_success: np.ndarray, episodes: np.ndarray, rule: str, final_k: int,
                operator: np.ndarray | None = None) -> np.ndarray:
    """Positive mask bool [N] over rows ``[episodes[0, 0], episodes[0, 0] + N)``.

    is_success: bool [N] per step; episodes: int64 [E, 3] (start row, length, flags) covering the rows;
    rule: 'step' (is_success steps), 'final' (the last ``final_k`` steps of episodes whose last step
    has is_success: teleop success decisions label the last step), 'both' (either);
    operator: int8 [N] (1 success, 0 failure, -1 none) overrides the rule where set.
    """
    y = np.asarray(is_success, dtype=bool).copy() if rule in ("step", "both") else np.zeros(len(is_success), bool)
    base = int(episodes[0, 0]) if len(episodes) else 0
    if rule in ("final", "both"):
        for s, n, _ in episodes:
            a, b = int(s) - base, int(s + n) - base
            if n > 0 and is_success[b - 1]:
                y[max(a, b - final_k):b] = True
    if operator is not None:
        op = np.asarray(operator).reshape(-1)
        y[op == 1] = True
        y[op == 0] = False
    return y


def load_frames(paths: Sequence[str | Path], cameras: Sequence[str] = (), *, proprio: bool = False,
                proprio_names: Sequence[str] = (), rule: str = "both", final_k: int = 3,
                label_field: str = "operator_label", require_both: bool = True) -> FrameSet:
    """Read every ended episode of both partitions of each store.

    ``cameras``: observation keys (empty = every image key of the first store). Missing camera,
    a store without images, or (``require_both``) no positives / no negatives -> UsageError, one line.
    """
    from roborl.store import ReplayStore

    if not paths:
        raise UsageError("reward: give at least one --store")
    imgs: dict[str, list[np.ndarray]] = {}
    props: list[np.ndarray] = []
    labels: list[np.ndarray] = []
    eps_ids: list[np.ndarray] = []
    sources: list[dict[str, Any]] = []
    cams: list[str] = list(cameras)
    pkeys: list[str] = list(proprio_names)
    shapes: dict[str, tuple[int, ...]] = {}
    n_eps = 0
    for path in paths:
        with ReplayStore.open(path, mode="r") as st:
            have = image_keys(st)
            if not have:
                raise UsageError(f"reward: store {path} has no image observation (uint8 HxWx3 field obs.<key>); "
                                 f"its fields: {', '.join(st.field_names)}")
            if not cams:
                cams = have
            missing = [c for c in cams if c not in have]
            if missing:
                raise UsageError(f"reward: camera {missing[0]!r} is not an image field of store {path} "
                                 f"(it has: {', '.join(have)})")
            if proprio:
                avail = proprio_keys(st)
                if not pkeys:
                    pkeys = avail
                    if not pkeys:
                        raise UsageError(f"reward: proprio is on but store {path} has no non-image observation field")
                bad = [k for k in pkeys if k not in avail]
                if bad:
                    raise UsageError(f"reward: proprio key {bad[0]!r} is not a non-image observation field of store "
                                     f"{path} (it has: {', '.join(avail) or 'none'})")
            for c in cams:
                shp = tuple(st.dtype["next_obs." + c].shape)
                if shapes.setdefault(c, shp) != shp:
                    raise UsageError(f"reward: camera {c!r} is {shp} in store {path} but {shapes[c]} in another store")
            fields = [f"next_obs.{c}" for c in cams] + [f"next_obs.{k}" for k in (pkeys if proprio else [])]
            fields += ["is_success"] + ([label_field] if label_field in st.field_names else [])
            steps = 0
            for part in ("demo", "online"):
                eps = st.episodes(part)  # type: ignore[arg-type]
                if len(eps) == 0:
                    continue
                start, stop = int(eps[0, 0]), int(eps[-1, 0] + eps[-1, 1])
                rows = st.read_rows(part, start, stop, fields)  # type: ignore[arg-type]
                op = rows.get(label_field)
                labels.append(label_steps(rows["is_success"], eps, rule, final_k, op))
                for c in cams:
                    imgs.setdefault(c, []).append(rows["next_obs." + c])
                if proprio:
                    props.append(np.concatenate([rows["next_obs." + k].reshape(stop - start, -1).astype(np.float32)
                                                 for k in pkeys], axis=1))
                ep_of_row = np.repeat(np.arange(len(eps)) + n_eps, eps[:, 1])
                # Rows between episodes cannot exist (episodes are contiguous), but keep the lengths honest.
                eps_ids.append(ep_of_row[: stop - start])
                n_eps += len(eps)
                steps += stop - start
            sources.append({"path": str(Path(path).resolve()), "uuid": st.meta.get("uuid"),
                            "generation": int(st.generation), "episodes": int(st.num_episodes("demo") +
                                                                              st.num_episodes("online")),
                            "steps": int(steps)})
    if not labels:
        raise UsageError(f"reward: store(s) {', '.join(map(str, paths))} hold no ended episode")
    y = np.concatenate(labels)
    if require_both:
        where = ", ".join(map(str, paths))
        if not y.any():
            raise UsageError(f"reward: no positive (success) frames in {where}: label successes (is_success, a "
                             f"teleop success decision) or change positives=")
        if y.all():
            raise UsageError(f"reward: no negative frames in {where}: every step is labelled success")
    return FrameSet({c: np.concatenate(v) for c, v in imgs.items()},
                    np.concatenate(props) if proprio else None, y, np.concatenate(eps_ids), sources,
                    pkeys if proprio else [])

"""Observation structure for any gymnasium env: named leaves, images vs vectors, privileged parts.

Pure helpers (numpy and gymnasium only) that the store, learners and robot server share, so a
(nested) ``Dict`` of images and vectors works whoever made it: our arm tasks
(``{"proprio": [P], "pixels": {"front": HxWx3, "wrist": HxWx3}}``), gym-hil / LeRobot envs
(``{"agent_pos": [P], "pixels": {"front": ...}}``), flat Dicts (``{"front": ..., "state": ...}``),
Dicts of vectors only, and a bare ``Box``.

Leaves are named by their key path joined with ``/``: ``"pixels/front"``, ``"agent_pos"``; a
bare Box (the whole observation) is the leaf ``""``; ``Tuple`` entries are named by index.
Each leaf is an **image** (uint8 ``Box`` of shape ``(H, W, C)`` or ``(C, H, W)`` with ``C`` 1
or 3; channels-last is tried first) or a **vector** (any other ``Box``, and ``Discrete`` /
``MultiBinary`` / ``MultiDiscrete`` values); other spaces are refused with one line.

    >>> ls = leaves(env.observation_space)            # [Leaf('pixels/front', image), ...]
    >>> flat = flatten_obs(obs, ls)                   # {"pixels/front": array, "proprio": array}
    >>> obs2 = unflatten_obs(flat, env.observation_space)
    >>> resolve_camera(env.observation_space, "wrist")  # -> "pixels/wrist"
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from roborl.errors import UsageError

__all__ = ["SEP", "IMAGE", "VECTOR", "Leaf", "leaves", "image_leaves", "vector_leaves", "is_image_space",
           "flatten_obs", "unflatten_obs", "vector_concat", "to_channels_last", "resolve_camera",
           "resolve_cameras", "WRAPPER_PRIVILEGED_INFO_KEYS", "privileged_keys", "strip_privileged",
           "strip_privileged_space"]

SEP = "/"
IMAGE = "image"
VECTOR = "vector"
_CHANNELS = (1, 3)


@dataclass(frozen=True)
class Leaf:
    """One named leaf of an observation space.

    ``name``: key path joined with ``/`` (``""`` for a bare Box); ``path``: the keys themselves
    (``int`` for Tuple entries); ``kind``: ``"image"`` or ``"vector"``; ``channels_first``:
    images stored ``(C, H, W)``.
    """

    name: str
    path: tuple[Any, ...]
    space: gym.Space
    kind: str
    channels_first: bool = False

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.space.shape or ())

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.space.dtype)

    @property
    def is_image(self) -> bool:
        return self.kind == IMAGE

    @property
    def hwc(self) -> tuple[int, int, int]:
        """Image shape as (H, W, C), whatever the storage order (images only)."""
        s = self.shape
        return (s[1], s[2], s[0]) if self.channels_first else (s[0], s[1], s[2])

    @property
    def size(self) -> int:
        """Number of values of one observation of this leaf."""
        return int(np.prod(self.shape)) if self.shape else 1


def is_image_space(space: gym.Space) -> tuple[bool, bool]:
    """(is an image, channels first) for one space: a uint8 Box ``(H, W, C)`` or ``(C, H, W)``, C in 1 or 3."""
    if not isinstance(space, spaces.Box) or space.dtype != np.uint8 or len(space.shape) != 3:
        return False, False
    if space.shape[-1] in _CHANNELS:
        return True, False
    if space.shape[0] in _CHANNELS:
        return True, True
    return False, False


def _leaf(space: gym.Space, path: tuple[Any, ...]) -> Leaf:
    name = SEP.join(str(p) for p in path)
    image, first = is_image_space(space)
    if image:
        return Leaf(name, path, space, IMAGE, first)
    if isinstance(space, (spaces.Box, spaces.Discrete, spaces.MultiBinary, spaces.MultiDiscrete)):
        return Leaf(name, path, space, VECTOR)
    raise UsageError(f"observation space: unsupported {type(space).__name__} at {name or '<root>'!r} "
                     f"(supported: Box, Discrete, MultiBinary, MultiDiscrete inside Dict/Tuple)")


def leaves(space: gym.Space) -> list[Leaf]:
    """Every leaf of ``space``, depth first, in the Dict's key order."""
    out: list[Leaf] = []

    def walk(s: gym.Space, path: tuple[Any, ...]) -> None:
        if isinstance(s, spaces.Dict):
            for k, sub in s.spaces.items():
                if SEP in str(k):
                    raise UsageError(f"observation space: key {k!r} contains {SEP!r}, which names nested keys")
                walk(sub, (*path, k))
        elif isinstance(s, spaces.Tuple):
            for i, sub in enumerate(s.spaces):
                walk(sub, (*path, i))
        else:
            out.append(_leaf(s, path))

    walk(space, ())
    return out


def image_leaves(space: gym.Space | Sequence[Leaf]) -> list[Leaf]:
    """The image leaves (cameras) of ``space`` (or of a list of leaves)."""
    return [lf for lf in _as_leaves(space) if lf.is_image]


def vector_leaves(space: gym.Space | Sequence[Leaf]) -> list[Leaf]:
    """The vector leaves of ``space`` (or of a list of leaves)."""
    return [lf for lf in _as_leaves(space) if not lf.is_image]


def _as_leaves(space: gym.Space | Sequence[Leaf]) -> list[Leaf]:
    return leaves(space) if isinstance(space, gym.Space) else list(space)


def _get(obs: Any, path: tuple[Any, ...], name: str) -> Any:
    x = obs
    for p in path:
        try:
            x = x[p]
        except (KeyError, IndexError, TypeError):
            raise UsageError(f"observation: no entry {name!r} (at {p!r})") from None
    return x


def flatten_obs(obs: Any, space: gym.Space | Sequence[Leaf]) -> dict[str, np.ndarray]:
    """``{leaf name: array}`` of one observation (or a batch: leading dims are kept as they are)."""
    return {lf.name: np.asarray(_get(obs, lf.path, lf.name)) for lf in _as_leaves(space)}


def unflatten_obs(flat: Mapping[str, Any], space: gym.Space) -> Any:
    """Inverse of :func:`flatten_obs`: the (nested) dict / tuple / array ``space`` describes."""
    missing = [lf.name for lf in leaves(space) if lf.name not in flat]
    if missing:
        raise UsageError(f"observation: missing entries {missing} (have {sorted(flat)})")

    def build(s: gym.Space, path: tuple[Any, ...]) -> Any:
        if isinstance(s, spaces.Dict):
            return {k: build(sub, (*path, k)) for k, sub in s.spaces.items()}
        if isinstance(s, spaces.Tuple):
            return tuple(build(sub, (*path, i)) for i, sub in enumerate(s.spaces))
        return flat[SEP.join(str(p) for p in path)]

    return build(space, ())


def vector_concat(obs: Any, space: gym.Space | Sequence[Leaf], dtype: Any = np.float32) -> np.ndarray:
    """The vector leaves of ``obs`` flattened and concatenated in leaf order: ``[..., sum(sizes)]``.

    Works on one observation (result ``[D]``) and on a batch with one leading dim (``[B, D]``).
    """
    vec = vector_leaves(space)
    if not vec:
        return np.zeros((0,), dtype=dtype)
    parts = []
    for lf in vec:
        x = np.asarray(_get(obs, lf.path, lf.name), dtype=dtype)
        lead = x.shape[:x.ndim - len(lf.shape)] if len(lf.shape) else x.shape
        parts.append(x.reshape(*lead, lf.size))
    return np.concatenate(parts, axis=-1)


def to_channels_last(image: np.ndarray, leaf: Leaf) -> np.ndarray:
    """An image (or batch ``[..., *leaf.shape]``) of ``leaf`` as ``[..., H, W, C]`` (a view when possible)."""
    if not leaf.channels_first:
        return image
    return np.moveaxis(image, -3, -1)


def _available(imgs: Sequence[Leaf]) -> str:
    return ", ".join(repr(lf.name) for lf in imgs) or "none"


def resolve_camera(space: gym.Space | Sequence[Leaf], name: str) -> str:
    """The image-leaf name for camera ``name``: an exact leaf name (``"pixels/front"``) or its last
    key (``"front"``), so nested and flat Dicts answer alike. One-line UsageError otherwise."""
    imgs = image_leaves(space)
    exact = [lf.name for lf in imgs if lf.name == name]
    if exact:
        return exact[0]
    tail = [lf.name for lf in imgs if lf.path and str(lf.path[-1]) == name]
    if len(tail) == 1:
        return tail[0]
    if len(tail) > 1:
        raise UsageError(f"camera {name!r} is ambiguous: matches {tail}; use the full name")
    raise UsageError(f"camera {name!r} is not in the env's observation (cameras: {_available(imgs)})")


def resolve_cameras(space: gym.Space | Sequence[Leaf], names: Iterable[str] | None) -> list[str]:
    """Image-leaf names for ``names`` (None = every camera, in leaf order); see :func:`resolve_camera`."""
    if names is None:
        return [lf.name for lf in image_leaves(space)]
    out = [resolve_camera(space, n) for n in names]
    if len(set(out)) != len(out):
        raise UsageError(f"cameras: {list(names)} names a camera twice")
    return out


# ----------------------------------------------------------------------------- privileged data

#: info keys that wrappers add and that a real robot cannot know (the randomized dynamics).
WRAPPER_PRIVILEGED_INFO_KEYS: tuple[str, ...] = ("dr_params",)


def privileged_keys(env: gym.Env) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(observation keys, info keys) that carry ground truth a real robot does not measure.

    Read from the unwrapped env's ``privileged_obs_keys`` / ``privileged_info_keys`` (our arm
    tasks and dm_control adapter declare them; other envs declare nothing), plus
    :data:`WRAPPER_PRIVILEGED_INFO_KEYS`.
    """
    u = env.unwrapped
    obs_keys = tuple(getattr(u, "privileged_obs_keys", ()) or ())
    info_keys = tuple(getattr(u, "privileged_info_keys", ()) or ()) + WRAPPER_PRIVILEGED_INFO_KEYS
    return obs_keys, tuple(dict.fromkeys(info_keys))


def _drop(d: Mapping[str, Any], keys: Iterable[str]) -> dict[str, Any]:
    """``d`` without the entries named by ``keys`` (top-level keys or ``/``-joined paths)."""
    out = dict(d)
    for key in keys:
        head, _, rest = str(key).partition(SEP)
        if head in out:
            if rest and isinstance(out[head], Mapping):
                out[head] = _drop(out[head], [rest])
            elif not rest:
                del out[head]
    return out


def strip_privileged(obs: Any, info: Mapping[str, Any], obs_keys: Iterable[str],
                     info_keys: Iterable[str]) -> tuple[Any, dict[str, Any]]:
    """(obs, info) without the privileged entries (new dicts; the inputs are not edited).

    A non-Dict observation is returned as is (a flat state vector cannot be split by key;
    run the env in a ``proprio`` mode instead).
    """
    if isinstance(obs, Mapping):
        obs = _drop(obs, obs_keys)
    return obs, _drop(info, info_keys)


def strip_privileged_space(space: gym.Space, obs_keys: Iterable[str]) -> gym.Space:
    """The observation space that :func:`strip_privileged` observations belong to."""
    if not isinstance(space, spaces.Dict):
        return space
    keys = list(obs_keys)

    def strip(s: spaces.Dict, prefix: str) -> spaces.Dict:
        kept: dict[str, gym.Space] = {}
        for k, sub in s.spaces.items():
            name = f"{prefix}{k}"
            if name in keys:
                continue
            kept[k] = strip(sub, name + SEP) if isinstance(sub, spaces.Dict) else sub
        return spaces.Dict(kept)

    return strip(space, "")

"""Store schema: JSON-able descriptions of gym spaces and the per-step field layout.

A store row is one transition ``(obs, action, executed_action, reward, next_obs,
terminated, truncated, is_success, intervention, log_prob, timestamp, *extra)``.
Dict observation spaces are flattened into one field per leaf, named
``obs.<key>`` / ``next_obs.<key>`` (nested dicts: ``obs.<a>.<b>``).

The row layout is a numpy structured dtype, so one row is one contiguous record: the
write-ahead log stores ``row.tobytes()`` and a flush slices columns out of a block.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np

from roborl.errors import UsageError


class StoreError(UsageError):
    """A store problem for the user: one line naming the store path and the file/field."""


class StoreCorruptError(StoreError):
    """Stored data failed a check (a missing, truncated or corrupt chunk, an index or commit that
    disagrees with the data, a WAL with a bad record before valid ones). Never read past it."""


class WalCorruptError(StoreCorruptError):
    """The WAL has a bad record followed by valid ones: writable opens refuse until ``roborl store repair``."""


# Always present after the observation/action fields; (name, dtype, default).
OPTIONAL_FIELDS: tuple[tuple[str, str, Any], ...] = (
    ("is_success", "bool", False),
    ("intervention", "bool", False),
    ("log_prob", "float32", np.nan),
    ("timestamp", "float64", np.nan),  # filled with time.time() when not given
)


# ----------------------------------------------------------------------------- spaces <-> JSON

def _bound(x: np.ndarray) -> Any:
    """A Box bound as JSON: a scalar when all entries are equal (images), else a nested list."""
    x = np.asarray(x)
    flat = x.reshape(-1)
    if flat.size and np.all(flat == flat[0]):
        v = flat[0].item()
        return {"fill": _json_num(v)}
    return {"values": [_json_num(v) for v in flat.tolist()]}


def _json_num(v: Any) -> Any:
    if isinstance(v, float) and not np.isfinite(v):
        return "inf" if v > 0 else ("-inf" if v < 0 else "nan")
    return v


def _from_bound(b: dict[str, Any], shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    if "fill" in b:
        return np.full(shape, float(b["fill"]) if isinstance(b["fill"], str) else b["fill"], dtype=dtype)
    return np.asarray([float(v) if isinstance(v, str) else v for v in b["values"]], dtype=dtype).reshape(shape)


def space_to_json(space: gym.Space) -> dict[str, Any]:
    """Serialize Box / Discrete / MultiBinary / Dict spaces (what robots and MuJoCo tasks use)."""
    if isinstance(space, gym.spaces.Box):
        return {"type": "Box", "shape": list(space.shape), "dtype": np.dtype(space.dtype).name,
                "low": _bound(space.low), "high": _bound(space.high)}
    if isinstance(space, gym.spaces.Discrete):
        return {"type": "Discrete", "n": int(space.n), "start": int(space.start)}
    if isinstance(space, gym.spaces.MultiBinary):
        return {"type": "MultiBinary", "n": list(np.atleast_1d(space.n).tolist())}
    if isinstance(space, gym.spaces.Dict):
        return {"type": "Dict", "spaces": {k: space_to_json(s) for k, s in space.spaces.items()}}
    raise StoreError(f"store: unsupported space type {type(space).__name__} (supported: Box, Discrete, MultiBinary, Dict)")


def space_from_json(d: dict[str, Any]) -> gym.Space:
    t = d["type"]
    if t == "Box":
        shape = tuple(d["shape"])
        dtype = np.dtype(d["dtype"])
        return gym.spaces.Box(_from_bound(d["low"], shape, dtype), _from_bound(d["high"], shape, dtype), shape, dtype)
    if t == "Discrete":
        return gym.spaces.Discrete(d["n"], start=d.get("start", 0))
    if t == "MultiBinary":
        n = d["n"]
        return gym.spaces.MultiBinary(n[0] if len(n) == 1 else n)
    if t == "Dict":
        return gym.spaces.Dict({k: space_from_json(v) for k, v in d["spaces"].items()})
    raise StoreError(f"store: unknown space type {t!r} in meta.json")


def compare_spaces(stored: dict[str, Any], given: gym.Space, name: str) -> str | None:
    """None when ``given`` matches the stored JSON space; else a short reason naming the field."""
    g = space_to_json(given)
    return _diff(stored, g, name)


def _diff(a: Any, b: Any, name: str) -> str | None:
    if isinstance(a, dict) and isinstance(b, dict):
        if a.get("type") != b.get("type"):
            return f"{name} is {a.get('type')} in the store but {b.get('type')} for the env"
        if a.get("type") == "Dict":
            ka, kb = set(a["spaces"]), set(b["spaces"])
            if ka != kb:
                return f"{name} keys are {sorted(ka)} in the store but {sorted(kb)} for the env"
            for k in sorted(ka):
                r = _diff(a["spaces"][k], b["spaces"][k], f"{name}[{k!r}]")
                if r:
                    return r
            return None
        for key in ("shape", "dtype", "n", "start", "low", "high"):
            if a.get(key) != b.get(key):
                what = {"low": "lower bound", "high": "upper bound"}.get(key, key)
                va, vb = a.get(key), b.get(key)
                if key in ("low", "high"):
                    return f"{name} {what} differs between the store and the env"
                return f"{name}.{what} is {va} in the store but {vb} for the env"
        return None
    return None if a == b else f"{name} differs"


# ----------------------------------------------------------------------------- fields

@dataclass(frozen=True)
class FieldSpec:
    """One stored column: ``name``, numpy ``dtype`` and per-row ``shape``."""

    name: str
    dtype: str
    shape: tuple[int, ...]

    @property
    def is_image(self) -> bool:
        return np.dtype(self.dtype) == np.uint8 and len(self.shape) == 3

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}

    @staticmethod
    def from_json(d: dict[str, Any]) -> "FieldSpec":
        return FieldSpec(d["name"], d["dtype"], tuple(d["shape"]))


def _space_leaves(space: gym.Space, prefix: str) -> list[tuple[str, str, tuple[int, ...]]]:
    """(dotted key, dtype, shape) for every leaf of an observation/action space."""
    if isinstance(space, gym.spaces.Dict):
        out = []
        for k, s in space.spaces.items():
            out.extend(_space_leaves(s, f"{prefix}.{k}"))
        return out
    if isinstance(space, gym.spaces.Box):
        return [(prefix, np.dtype(space.dtype).name, tuple(space.shape))]
    if isinstance(space, gym.spaces.Discrete):
        return [(prefix, "int64", ())]
    if isinstance(space, gym.spaces.MultiBinary):
        return [(prefix, "int8", tuple(np.atleast_1d(space.n).tolist()))]
    raise StoreError(f"store: unsupported space type {type(space).__name__} for {prefix}")


def obs_keys(space: gym.Space) -> list[str]:
    """Leaf keys of an observation space relative to ``obs``: ``[""]`` for a Box, else dotted keys."""
    return [name[len("obs"):].lstrip(".") for name, _, _ in _space_leaves(space, "obs")]


def build_fields(observation_space: gym.Space, action_space: gym.Space,
                 extra_fields: dict[str, Any] | None = None) -> list[FieldSpec]:
    """The ordered field list of a store (also the structured row dtype's order)."""
    fields: list[FieldSpec] = []
    for name, dt, shape in _space_leaves(observation_space, "obs"):
        fields.append(FieldSpec(name, dt, shape))
    for name, dt, shape in _space_leaves(action_space, "action"):
        fields.append(FieldSpec(name, dt, shape))
    for name, dt, shape in _space_leaves(action_space, "executed_action"):
        fields.append(FieldSpec(name, dt, shape))
    fields.append(FieldSpec("reward", "float32", ()))
    for name, dt, shape in _space_leaves(observation_space, "next_obs"):
        fields.append(FieldSpec(name, dt, shape))
    fields.append(FieldSpec("terminated", "bool", ()))
    fields.append(FieldSpec("truncated", "bool", ()))
    for name, dt, _ in OPTIONAL_FIELDS:
        fields.append(FieldSpec(name, dt, ()))
    for name, spec in (extra_fields or {}).items():
        if any(f.name == name for f in fields) or "." in name or "/" in name or name.startswith("_"):
            raise StoreError(f"store: extra field {name!r} clashes with a built-in field or has '.', '/' or a leading '_'")
        if isinstance(spec, (tuple, list)) and len(spec) == 2:
            dt, shape = spec
        elif isinstance(spec, dict):
            dt, shape = spec.get("dtype", "float32"), spec.get("shape", ())
        else:
            raise StoreError(f"store: extra field {name!r}: expected (dtype, shape) or {{dtype, shape}}, got {spec!r}")
        try:
            dt = np.dtype(dt).name
        except TypeError:
            raise StoreError(f"store: extra field {name!r}: unknown dtype {dt!r}") from None
        fields.append(FieldSpec(name, dt, tuple(int(s) for s in (shape if isinstance(shape, (list, tuple)) else (shape,)))))
    return fields


def row_dtype(fields: list[FieldSpec]) -> np.dtype:
    """Packed structured dtype of one row (the WAL payload layout)."""
    return np.dtype([(f.name, np.dtype(f.dtype), f.shape) for f in fields])

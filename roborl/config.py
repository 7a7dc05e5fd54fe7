"""Typed, frozen configuration: YAML fills dataclasses, the command line overrides them.

Every component declares its own frozen config dataclass next to its code, with each
field documented through :func:`field` (``doc=``) and validated through ``check=``.
This module only knows how to *build* such dataclasses from plain dicts:

    defaults (the dataclass)  <  YAML file  <  command-line overrides ``a.b=value``

Errors are raised as :class:`ConfigError` carrying one line that names the offending
key and the file; the CLI prints it and exits with code 2. A typo gets a suggestion
("did you mean 'sac.lr'?"). Configs are never mutated after they are built; use
:func:`dataclasses.replace` to derive a new one.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from pathlib import Path
from typing import Any, Callable, Literal, TypeVar, Union, get_args, get_origin

import yaml

T = TypeVar("T")

__all__ = [
    "ConfigError",
    "field",
    "build",
    "load",
    "parse_overrides",
    "to_dict",
    "dump_yaml",
    "describe",
    "positive",
    "non_negative",
    "unit_interval",
    "open_unit_interval",
]


class ConfigError(ValueError):
    """A usage error in a config: one line naming the key and the source."""


# ----------------------------------------------------------------------------- fields

def field(default: Any = dataclasses.MISSING, *, doc: str, check: Callable[[Any], str | None] | None = None,
          default_factory: Any = dataclasses.MISSING) -> Any:
    """A dataclass field with documentation and an optional validator.

    ``check(value)`` returns ``None`` when the value is fine, else a short reason
    ("must be > 0"), which becomes ``ConfigError("key: must be > 0 (in file)")``.
    """
    meta = {"doc": doc, "check": check}
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def positive(v: Any) -> str | None:
    return None if v is None or v > 0 else "must be > 0"


def non_negative(v: Any) -> str | None:
    return None if v is None or v >= 0 else "must be >= 0"


def unit_interval(v: Any) -> str | None:
    return None if v is None or 0.0 <= v <= 1.0 else "must be in [0, 1]"


def open_unit_interval(v: Any) -> str | None:
    return None if v is None or 0.0 < v < 1.0 else "must be in (0, 1)"


# ----------------------------------------------------------------------------- building

def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in get_args(tp))
    if origin in (Union, types.UnionType):
        return " | ".join(_type_name(a) for a in get_args(tp))
    if tp is type(None):
        return "null"
    if origin is not None:
        return f"{getattr(origin, '__name__', str(origin))}[{', '.join(_type_name(a) for a in get_args(tp))}]"
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, key: str, source: str) -> Any:
    """Check ``value`` against the annotation ``tp`` and convert containers to frozen forms."""

    def bad(expected: str | None = None) -> ConfigError:
        return ConfigError(
            f"config error: {key}: expected {expected or _type_name(tp)}, got {value!r} ({type(value).__name__}) in {source}")

    if tp is Any:
        return value
    origin = get_origin(tp)
    if origin is Literal:
        if value in get_args(tp):
            return value
        close = difflib.get_close_matches(str(value), [str(a) for a in get_args(tp)], n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"config error: {key}: {value!r} is not one of {_type_name(tp)}{hint} in {source}")
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, key, source)
            except ConfigError as e:
                errors.append(e)
        raise bad()
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise bad(f"a mapping for {tp.__name__}")
        return _build(tp, value, source, key + ".")
    if origin in (tuple, list, typing.Sequence) or tp in (tuple, list):
        if isinstance(value, (str, bytes, dict)) or not isinstance(value, (list, tuple)):
            raise bad()
        args = get_args(tp)
        if origin is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
            if len(args) != len(value):
                raise bad(f"{len(args)} items")
            return tuple(_coerce(v, a, f"{key}[{i}]", source) for i, (v, a) in enumerate(zip(value, args)))
        inner = args[0] if args else Any
        return tuple(_coerce(v, inner, f"{key}[{i}]", source) for i, v in enumerate(value))
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise bad()
        args = get_args(tp)
        vt = args[1] if len(args) == 2 else Any
        return {str(k): _coerce(v, vt, f"{key}.{k}", source) for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise bad()
    if tp is int:
        if isinstance(value, bool):
            raise bad()
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise bad()
    if tp is float:
        if isinstance(value, bool):
            raise bad()
        if isinstance(value, (int, float)):
            return float(value)
        raise bad()
    if tp is str:
        if isinstance(value, str):
            return value
        raise bad()
    if isinstance(tp, type) and isinstance(value, tp):
        return value
    raise bad()


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _build(cls: type[T], data: dict[str, Any], source: str, prefix: str = "") -> T:
    if not isinstance(data, dict):
        raise ConfigError(f"config error: {prefix.rstrip('.') or '<root>'}: expected a mapping in {source}")
    hints = _hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for k in data:
        if k not in names:
            close = difflib.get_close_matches(str(k), names, n=1, cutoff=0.6)
            hint = f" (did you mean '{prefix}{close[0]}'?)" if close else ""
            raise ConfigError(f"config error: unknown key '{prefix}{k}'{hint} in {source}")
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        key = prefix + f.name
        if f.name in data:
            value = _coerce(data[f.name], hints[f.name], key, source)
        elif f.default is not dataclasses.MISSING:
            value = f.default
        elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            value = f.default_factory()  # type: ignore[misc]
        elif dataclasses.is_dataclass(hints[f.name]):
            value = _build(hints[f.name], {}, source, key + ".")
        else:
            raise ConfigError(f"config error: missing required key '{key}' in {source}")
        check = f.metadata.get("check")
        if check is not None:
            reason = check(value)
            if reason:
                raise ConfigError(f"config error: {key}: {reason}, got {value!r} in {source}")
        kwargs[f.name] = value
    try:
        obj = cls(**kwargs)
    except (ValueError, TypeError) as e:  # __post_init__ cross-field checks
        where = f"{prefix.rstrip('.')}: " if prefix else ""  # root-level checks name their own keys
        raise ConfigError(f"config error: {where}{e} in {source}") from None
    return obj


def build(cls: type[T], data: dict[str, Any] | None = None, source: str = "<defaults>") -> T:
    """Build a frozen dataclass ``cls`` from a nested dict, validating every key."""
    return _build(cls, dict(data or {}), source)


# ----------------------------------------------------------------------------- overrides

def parse_overrides(items: typing.Iterable[str]) -> dict[str, Any]:
    """Turn ``["sac.lr=1e-4", "env.id=roborl/Push-v0"]`` into a nested dict.

    Values are parsed as YAML scalars/lists (``1e-4`` -> float, ``[1,2]`` -> list,
    ``null`` -> None); anything unparsable stays a string.
    """
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"config error: override {item!r} is not of the form key=value (command line)")
        key, raw = item.split("=", 1)
        key = key.strip()
        if not key or any(not p for p in key.split(".")):
            raise ConfigError(f"config error: override {item!r} has an empty key (command line)")
        try:
            value = _fix_floats(safe_load_yaml(raw, f"override {key!r}")) if raw.strip() != "" else ""
        except ConfigError as e:
            if "invalid YAML" not in str(e):
                raise
            value = raw
        node = out
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"config error: override {key!r} conflicts with another override (command line)")
        node[parts[-1]] = value
    return out


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def _fix_floats(obj: Any) -> Any:
    """YAML 1.1 reads ``1e-4`` as a string; convert such strings to floats."""
    if isinstance(obj, dict):
        return {k: _fix_floats(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_fix_floats(v) for v in obj]
    if isinstance(obj, str):
        try:
            if any(c in obj for c in "eE") and obj.lstrip("+-")[:1].isdigit():
                return float(obj)
        except ValueError:
            return obj
    return obj


# Limits on what a config may be. Real run configs are a few KB, a few levels deep and use few
# aliases; anything far past these is a mistake or an attack (the "billion laughs": a few hundred
# bytes of nested aliases that expand to gigabytes; see CVE-2003-1564 for the XML original).
MAX_YAML_BYTES = 1 << 20
MAX_DEPTH = 64
MAX_NODES = 200_000


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate mapping keys (a silent last-one-wins hides typos)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        self.flatten_mapping(node)
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)  # type: ignore[no-untyped-call]
            try:
                dup = key in seen
            except TypeError:  # an unhashable key: SafeLoader reports it below
                continue
            if dup:
                raise ConfigError(f"duplicate key {key!r} at line {key_node.start_mark.line + 1}")
            seen.add(key)
        return super().construct_mapping(node, deep)


def _check_shape(obj: Any, where: str) -> None:
    """Refuse a document nested deeper than MAX_DEPTH or expanding (aliases counted every time they
    are used) to more than MAX_NODES values. Stops at the first excess, so its cost is bounded by
    the limits, never by the expanded size."""
    budget = MAX_NODES
    stack: list[tuple[Any, int]] = [(obj, 1)]
    while stack:
        node, depth = stack.pop()
        budget -= 1
        if budget < 0:
            raise ConfigError(f"config error: {where}: more than {MAX_NODES} values once aliases are expanded "
                              f"(an alias bomb?)")
        if depth > MAX_DEPTH:
            raise ConfigError(f"config error: {where}: nested deeper than {MAX_DEPTH} levels")
        if isinstance(node, dict):
            stack.extend((v, depth + 1) for v in node.values())
        elif isinstance(node, list):
            stack.extend((v, depth + 1) for v in node)


def safe_load_yaml(text: str, where: str) -> Any:
    """Parse YAML text with the limits above; every failure is a one-line ConfigError naming ``where``."""
    if len(text) > MAX_YAML_BYTES:
        raise ConfigError(f"config error: {where}: larger than {MAX_YAML_BYTES} bytes")
    # Flow collections ([...], {...}) nest without indentation; count them before the parser
    # recurses through them (brackets inside quoted strings can only over-count).
    depth = peak = 0
    for ch in text:
        if ch in "[{":
            depth += 1
            peak = max(peak, depth)
        elif ch in "]}":
            depth -= 1
    if peak > MAX_DEPTH:
        raise ConfigError(f"config error: {where}: nested deeper than {MAX_DEPTH} levels")
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except ConfigError as e:
        raise ConfigError(f"config error: {where}: {e}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"config error: {where}{at}: invalid YAML ({getattr(e, 'problem', None) or e})") from None
    except RecursionError:
        raise ConfigError(f"config error: {where}: nested deeper than {MAX_DEPTH} levels") from None
    _check_shape(data, where)
    return data


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping, with one-line errors for a missing, unreadable, binary or malformed file."""
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"config error: file not found: {p}")
    if p.is_dir():
        raise ConfigError(f"config error: {p} is a directory, not a YAML file")
    try:
        with p.open("rb") as fh:  # bounded: a config path may name a device or a huge file
            raw = fh.read(MAX_YAML_BYTES + 1)
    except OSError as e:
        raise ConfigError(f"config error: {p}: cannot read ({e.strerror or e})") from None
    if b"\x00" in raw:
        raise ConfigError(f"config error: {p}: a binary file, not YAML")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"config error: {p}: not UTF-8 text, not YAML") from None
    data = safe_load_yaml(text, str(p))
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config error: {p}: top level must be a mapping, got {type(data).__name__}")
    return _fix_floats(data)


def load(cls: type[T], path: str | Path | None = None, overrides: typing.Iterable[str] = ()) -> T:
    """defaults < file < overrides. Errors name the key and where it came from."""
    file_data = read_yaml(path) if path is not None else {}
    src = str(path) if path is not None else "<defaults>"
    over = parse_overrides(overrides)
    # Validate the file alone first so an error in it names the file; an error that appears
    # only once the overrides are merged is then the overrides' fault.
    cfg = build(cls, file_data, src)
    if not over:
        return cfg
    try:
        return build(cls, _merge(file_data, over), src)
    except ConfigError as e:
        raise ConfigError(str(e).replace(f" in {src}", " in command-line overrides")) from None


# ----------------------------------------------------------------------------- output

def to_dict(cfg: Any) -> Any:
    """A plain nested dict/list version of a config, safe for YAML and JSON."""
    if dataclasses.is_dataclass(cfg) and not isinstance(cfg, type):
        return {f.name: to_dict(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    if isinstance(cfg, (list, tuple)):
        return [to_dict(v) for v in cfg]
    if isinstance(cfg, dict):
        return {k: to_dict(v) for k, v in cfg.items()}
    return cfg


def dump_yaml(cfg: Any) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False, default_flow_style=False)


def describe(cls: type, prefix: str = "") -> list[tuple[str, str, Any, str]]:
    """``(key, type, default, doc)`` for every leaf field, for ``--help`` and docs."""
    rows: list[tuple[str, str, Any, str]] = []
    hints = _hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            rows.extend(describe(tp, prefix + f.name + "."))
            continue
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None)  # type: ignore[misc]
        rows.append((prefix + f.name, _type_name(tp), to_dict(default), f.metadata.get("doc", "")))
    return rows

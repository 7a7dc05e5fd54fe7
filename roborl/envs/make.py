"""``make_env(id, **kwargs)``: one entry point for every env roborl can run.

Ids:

* any registered gymnasium id (``HalfCheetah-v5``, ``roborl/Push-v0``; ``import roborl``
  registers ours from the explicit table in :mod:`roborl.envs.registry`);
* a URL-like scheme from :data:`SCHEMES`: ``dmc:<domain>-<task>`` (dm_control suite,
  see :mod:`roborl.envs.dmc`) and ``robot://HOST:PORT`` (a real robot behind the
  robot server).

``imports=[...]`` (config ``env.imports``) imports modules first so that third-party
packages can register their gymnasium ids. Every bad input raises
:class:`roborl.errors.UsageError` with one line naming the id, module or kwarg.
"""
from __future__ import annotations

import difflib
import importlib
from typing import Any, Callable, Iterable

import gymnasium as gym

from roborl.errors import UsageError

__all__ = ["SCHEMES", "make_env", "import_env_modules", "known_ids"]

#: URL-like prefix -> ``"module:factory"``. The factory is called as
#: ``factory(id, **kwargs) -> gym.Env`` with the full id (prefix included).
#: An explicit table (no registration on import): add a scheme by adding a line here.
SCHEMES: dict[str, str] = {
    "dmc:": "roborl.envs.dmc:make_dmc_env",
    "robot://": "roborl.robots.client:make_robot_env",
}


def import_env_modules(imports: Iterable[str]) -> None:
    """Import each module (e.g. a third-party env package) so its gymnasium ids register."""
    for name in imports:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as e:
            missing = f" (missing module {e.name!r})" if e.name and e.name != name else ""
            raise UsageError(f"env.imports: cannot import module {name!r}{missing}") from None


def known_ids() -> list[str]:
    """All registered gymnasium ids (ours included)."""
    return sorted(gym.registry.keys())


def _resolve(target: str, scheme: str) -> Callable[..., gym.Env]:
    mod_name, _, fn_name = target.partition(":")
    try:
        mod = importlib.import_module(mod_name)
    except ModuleNotFoundError as e:
        if e.name and mod_name.startswith(e.name):
            raise UsageError(f"env.id: scheme {scheme!r} needs module {mod_name!r}, which is not available "
                             f"in this install") from None
        raise
    fn = getattr(mod, fn_name, None)
    if fn is None:
        raise UsageError(f"env.id: scheme {scheme!r}: {mod_name!r} has no factory {fn_name!r}")
    return fn


def _unknown(id: str, why: str = "") -> UsageError:  # noqa: A002
    ids = known_ids()
    close = difflib.get_close_matches(id, ids, n=3, cutoff=0.6)
    if not close:  # also match on the name alone, e.g. 'Push-v0' -> 'roborl/Push-v0'
        tails = {i.split("/")[-1]: i for i in ids}
        close = [tails[c] for c in difflib.get_close_matches(id.split("/")[-1], list(tails), n=3, cutoff=0.6)]
    hint = f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""
    extra = f": {why}" if why and not close else ""
    return UsageError(f"env.id: unknown env {id!r}{hint}{extra} "
                      f"(gymnasium ids, dmc:<domain>-<task> and robot://HOST:PORT work)")


def make_env(id: str, *, imports: Iterable[str] = (), max_episode_steps: int | None = None,  # noqa: A002
             **kwargs: Any) -> gym.Env:
    """Make the env named ``id`` (see the module docstring), passing ``kwargs`` to its constructor.

    ``max_episode_steps`` overrides the time limit (a gymnasium ``TimeLimit``, which
    truncates). Raises UsageError for an unknown id, a missing module or a bad kwarg.
    """
    if not isinstance(id, str) or not id:
        raise UsageError(f"env.id: expected a non-empty string, got {id!r}")
    import_env_modules(imports)
    for prefix, target in SCHEMES.items():
        if id.startswith(prefix):
            factory = _resolve(target, prefix)
            try:
                env = factory(id, **kwargs)
            except TypeError as e:
                if "keyword argument" in str(e):
                    raise UsageError(f"env.kwargs: {id}: {e}") from None
                raise
            if max_episode_steps is not None:
                env = gym.wrappers.TimeLimit(env, max_episode_steps=int(max_episode_steps))
            return env
    if id not in gym.registry and ":" not in id:
        raise _unknown(id)
    try:
        if max_episode_steps is not None:
            kwargs["max_episode_steps"] = int(max_episode_steps)
        return gym.make(id, **kwargs)
    except (gym.error.NameNotFound, gym.error.NamespaceNotFound, gym.error.VersionNotFound,
            gym.error.DeprecatedEnv) as e:
        raise _unknown(id, str(e)) from None
    except gym.error.Error as e:
        raise UsageError(f"env.id: {id!r}: {e}") from None
    except ModuleNotFoundError as e:
        # 'module:Env-v0' ids import their module first.
        raise UsageError(f"env.id: {id!r} needs module {e.name!r}, which is not installed") from None
    except TypeError as e:
        if "keyword argument" in str(e):
            raise UsageError(f"env.kwargs: {id}: {e}") from None
        raise

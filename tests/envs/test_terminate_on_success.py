"""env.terminate_on_success: the episode ends (terminated) at the first success, in build_env and `roborl collect`."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import roborl
from roborl.cli import main
from roborl.config import build
from roborl.envs.config import EnvConfig, build_env
from roborl.errors import UsageError
from roborl.store import ReplayStore


def _run_expert(env, seed: int) -> list[tuple[bool, bool, bool]]:
    """(terminated, truncated, is_success) per step of one scripted-expert episode."""
    expert = roborl.envs.expert(env)
    obs, _ = env.reset(seed=seed)
    expert.reset()
    out = []
    while True:
        obs, _, term, trunc, info = env.step(expert(obs))
        out.append((bool(term), bool(trunc), bool(info["is_success"])))
        if term or trunc:
            return out


def test_episode_ends_at_first_success_and_plain_env_runs_on() -> None:
    plain = build_env(build(EnvConfig, {"id": "roborl/Reach-v0"}, "test"), seed=0)
    tos = build_env(build(EnvConfig, {"id": "roborl/Reach-v0", "terminate_on_success": True}, "test"), seed=0)
    try:
        a, b = _run_expert(plain, 3), _run_expert(tos, 3)
    finally:
        plain.close()
        tos.close()
    first = next(i for i, (_, _, ok) in enumerate(a) if ok)
    assert len(a) == 50 and not any(t for t, _, _ in a)  # the plain env only truncates
    # Same physics up to the success step; then the wrapped episode is over, terminated (not truncated).
    assert len(b) == first + 1 and b[-1] == (True, False, True)
    assert not any(t for t, _, _ in b[:-1])


def test_env_without_is_success_is_a_usage_error() -> None:
    env = build_env(build(EnvConfig, {"id": "Pendulum-v1", "terminate_on_success": True}, "test"), seed=0)
    try:
        env.reset(seed=0)
        with pytest.raises(UsageError, match=r"env.terminate_on_success: Pendulum-v1 reports no info\['is_success'\]"):
            env.step(np.zeros(1, np.float32))
    finally:
        env.close()


def test_collect_terminate_on_success_stores_terminal_success_steps(tmp_path: Path) -> None:
    s = str(tmp_path / "reach")
    assert main(["collect", "--env", "roborl/Reach-v0", "--policy", "scripted", "--store", s, "--episodes", "3",
                 "--seed", "0", "--terminate-on-success", "--quiet"]) == 0
    with ReplayStore.open(s, mode="r") as st:
        for i in range(3):
            ep = st.read_episode("demo", i)
            assert len(ep["terminated"]) < 50
            assert ep["terminated"][-1] and ep["is_success"][-1]
            assert not ep["terminated"][:-1].any() and not ep["is_success"][:-1].any()

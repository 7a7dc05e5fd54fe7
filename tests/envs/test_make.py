"""make_env: gymnasium ids, dmc scheme, env.imports, and one-line errors for bad input."""
from __future__ import annotations

import subprocess
import sys
import textwrap

import gymnasium as gym
import numpy as np
import pytest

import roborl
from roborl.envs.dmc import DMCEnv
from roborl.envs.make import SCHEMES, make_env
from roborl.errors import UsageError


def test_gymnasium_id_with_kwargs_and_time_limit():
    env = make_env("Pendulum-v1", g=5.0, max_episode_steps=7)
    assert env.unwrapped.g == 5.0
    env.reset(seed=0)
    for t in range(7):
        _, _, term, trunc, _ = env.step(env.action_space.sample())
    assert trunc and not term and t == 6
    env.close()


def test_reexported_make_env_makes_mujoco_env():
    env = roborl.make_env("Hopper-v5")
    assert env.unwrapped.model.nbody > 1
    env.close()


def test_dmc_scheme_and_time_limit_override():
    env = make_env("dmc:cartpole-balance", max_episode_steps=3)
    assert isinstance(env.unwrapped, DMCEnv)
    env.reset(seed=0)
    flags = [env.step(np.zeros(1, np.float32))[3] for _ in range(3)]
    assert flags == [False, False, True]
    env.close()


def test_unknown_id_names_it_and_suggests():
    with pytest.raises(UsageError, match=r"unknown env 'HalfCheetah-v9'.*'HalfCheetah-v5'"):
        make_env("HalfCheetah-v9")
    with pytest.raises(UsageError, match="Halfcheetah"):
        make_env("Halfcheetah-v5")
    with pytest.raises(UsageError, match="dmc:cartpole-swingup"):
        make_env("dmc:cartpol-swingup")
    with pytest.raises(UsageError, match="dmc:<domain>-<task>"):
        make_env("dmc:cartpole")


def test_bad_kwarg_is_usage_error():
    with pytest.raises(UsageError, match="env.kwargs: Pendulum-v1.*bogus"):
        make_env("Pendulum-v1", bogus=1)


def test_imports_register_third_party_ids(tmp_path, monkeypatch):
    pkg = tmp_path / "thirdparty_envs_xyz.py"
    pkg.write_text(textwrap.dedent("""
        import gymnasium as gym
        gym.register("ThirdParty/Pend-v0", entry_point="gymnasium.envs.classic_control:PendulumEnv",
                     max_episode_steps=11)
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        with pytest.raises(UsageError, match="ThirdParty/Pend-v0"):
            make_env("ThirdParty/Pend-v0")  # not imported yet: unknown
        env = make_env("ThirdParty/Pend-v0", imports=["thirdparty_envs_xyz"])
        assert env.spec.max_episode_steps == 11
        env.close()
    finally:
        gym.registry.pop("ThirdParty/Pend-v0", None)
        sys.modules.pop("thirdparty_envs_xyz", None)


def test_missing_import_module_is_named():
    with pytest.raises(UsageError, match="env.imports: cannot import module 'no_such_env_pkg_123'"):
        make_env("Pendulum-v1", imports=["no_such_env_pkg_123"])


def test_scheme_with_missing_module(monkeypatch):
    monkeypatch.setitem(SCHEMES, "fake://", "roborl.no_such_module_xyz:make")
    with pytest.raises(UsageError, match="scheme 'fake://' needs module 'roborl.no_such_module_xyz'"):
        make_env("fake://host:1")
    assert SCHEMES["robot://"] == "roborl.robots.client:make_robot_env"


def test_cli_unknown_id_exits_2_with_one_line():
    p = subprocess.run([sys.executable, "-m", "roborl.cli", "envs", "check", "NoSuchEnv-v0"],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert lines == ["roborl: error: env.id: unknown env 'NoSuchEnv-v0' "
                     "(gymnasium ids, dmc:<domain>-<task> and robot://HOST:PORT work)"]


def test_cli_check_runs_through_stack():
    p = subprocess.run([sys.executable, "-m", "roborl.cli", "envs", "check", "Hopper-v5", "--steps", "20", "--json",
                        "--stack", "env.dr.enabled=true", "env.normalize_obs=true"],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    import json

    rep = json.loads(p.stdout.strip().splitlines()[-1])
    assert rep["finite"] and "DomainRandomization" in rep["env"] and "dr_params" in rep["info_keys"]

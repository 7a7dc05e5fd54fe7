"""Server-side limits for every backend: a hardware-like arm loaded by module path, fuzzed with random,
huge and NaN actions through a real client and a real ``roborl robot serve`` subprocess."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import roborl  # noqa: F401 - registers roborl/<Task>-v0
from roborl.errors import UsageError
from roborl.robots import RobotLimits, make_robot
from roborl.robots.client import make_robot_env
from roborl.robots.launch import ServerProcess, free_port
from roborl.robots.limits import LimitGuard
from roborl.robots.sim import SimRobot
from tests.robots import hwlike_arm as hw

BACKEND = "tests.robots.hwlike_arm:make"
REPO = Path(__file__).resolve().parents[2]
TOL = 0.01  # the box may be left by at most 1 cm


def _cli(*args: str, env: dict | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "roborl.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=dict(os.environ, **(env or {})))


def _outside(ee: list[float]) -> float:
    e = np.asarray(ee)
    return float(np.linalg.norm(np.maximum(np.maximum(np.array(hw.LOW) - e, e - np.array(hw.HIGH)), 0.0)))


def _fuzz_actions(env, rng: np.random.Generator, n: int) -> list[dict]:
    """Random, huge, NaN/inf and saturated actions, with pauses (the arm repeats its last command)."""
    infos = []
    env.reset(seed=int(rng.integers(1 << 30)))
    for i in range(n):
        k = int(rng.integers(0, 6))
        if k == 0:
            a = rng.uniform(-1, 1, 4)
        elif k == 1:
            a = rng.standard_normal(4) * 10.0 ** rng.integers(1, 30)
        elif k == 2:
            a = rng.choice([np.nan, np.inf, -np.inf, 0.5], size=4)
            a[int(rng.integers(0, 3))] = np.nan
        elif k == 3:
            a = np.sign(rng.standard_normal(4)) * 1e38
        elif k == 4:
            a = np.ones(4) * rng.choice([-1.0, 1.0], size=4)
        else:
            a = rng.uniform(-1, 1, 4)
            time.sleep(float(rng.uniform(0.0, 0.05)))  # late: the last command runs on meanwhile
        _, _, _, _, info = env.step(a.astype(np.float32))
        infos.append(info)
        if i % 60 == 59:
            env.reset(seed=i)
    return infos


def test_hardware_like_backend_by_module_path_never_leaves_its_box():
    with ServerProcess(BACKEND, hz=50) as srv:
        env = make_robot_env(srv.url, timeout_s=5.0)
        try:
            assert env.server_info["limits"]["max_step"] == hw.MAX_STEP
            infos = _fuzz_actions(env, np.random.default_rng(0), 300)
            stats = env.stats()
            _, last = env.observe()
        finally:
            env.close()
    assert "declares no limits" not in srv.stderr
    for info in infos:
        assert _outside(info["ee_pos"]) <= TOL, info
        ex = info["executed_action"]
        if info["safety"]["nonfinite"]:  # hold: zero motion (None: the adapter's own hold)
            assert ex is None or ex[:3] == [0.0, 0.0, 0.0], info
            continue
        assert ex is not None and np.all(np.isfinite(ex))
        assert np.linalg.norm(np.asarray(ex[:3]) * hw.EE_SCALE) <= hw.MAX_STEP + 1e-6
    # The arm's own measurements over every period (also the ones without a reply).
    assert last["worst_outside"] is not None and last["worst_outside"] <= TOL, last
    assert last["max_move"] is not None and last["max_move"] <= hw.MAX_STEP + 1e-6, last  # float32 commands
    c = stats["counts"]
    assert c["safety_workspace"] > 0 and c["safety_motion"] > 0 and c["safety_nonfinite"] > 0
    assert c["safety_clipped"] > 0 and c.get("internal_errors", 0) == 0


def test_the_same_fuzz_without_limits_leaves_the_box_and_warns():
    """The control: the same arm declaring no limits is pushed out (so the test above can fail)."""
    with ServerProcess(BACKEND + ":nolimits", hz=50) as srv:
        env = make_robot_env(srv.url, timeout_s=5.0)
        try:
            assert env.server_info["limits"] is None
            _fuzz_actions(env, np.random.default_rng(0), 120)
            _, last = env.observe()
        finally:
            env.close()
    assert last["worst_outside"] > TOL or last["max_move"] > hw.MAX_STEP
    warn = [ln for ln in srv.stderr.splitlines() if "declares no limits" in ln]
    assert len(warn) == 1 and "warning" in warn[0]


def test_require_limits_refuses_a_backend_without_limits():
    r = _cli("robot", "serve", "--backend", BACKEND + ":nolimits", "--port", str(free_port()), "--require-limits")
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "declares no limits" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize("backend, needle", [
    ("tests.robots.no_such_module:make", "no module named"),
    ("tests.robots.hwlike_arm:no_such_factory", "no factory"),
    ("tests.robots.hwlike_arm:not_a_robot", "not a Robot"),
    ("ur5:10.0.0.2", "unknown"),
])
def test_backend_spec_errors_are_one_line(backend, needle):
    r = _cli("robot", "serve", "--backend", backend, "--port", str(free_port()))
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and needle in r.stderr, r.stderr


def test_backend_from_an_entry_point(tmp_path: Path):
    """A package that declares ``[roborl.robots] hwlike = ...`` is served as ``--backend hwlike:ARG``."""
    dist = tmp_path / "roborl_test_hwlike-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: roborl-test-hwlike\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[roborl.robots]\nhwlike = tests.robots.hwlike_arm:make\n")
    pp = os.pathsep.join([str(tmp_path), str(REPO), os.environ.get("PYTHONPATH", "")])
    with ServerProcess("hwlike:default", hz=50, env={"PYTHONPATH": pp}) as srv:
        env = make_robot_env(srv.url)
        try:
            assert env.server_info["limits"]["workspace_low"] == list(hw.LOW)
            env.reset(seed=0)
            _, _, _, _, info = env.step(np.array([1, 1, 1, 0], np.float32))
            assert info["safety"]["motion"] == 1
        finally:
            env.close()


def test_limit_guard_uses_the_safety_layers_math():
    """On the sim twin the server's guard and the task's own SafetyLayer give the same command."""
    robot = SimRobot("roborl/Reach-v0")
    with robot:
        assert robot.limits is not None and robot.limits.declared
        guard = LimitGuard(robot, robot.control_hz)
        layer = robot.env  # the task's SafetyLayer (outermost wrapper of the sim task)
        while not hasattr(layer, "filter"):
            layer = layer.env
        rng = np.random.default_rng(0)
        state = robot.reset(seed=0)
        changed = 0
        for i in range(200):
            a = (rng.uniform(-1, 1, 4) * rng.choice([1.0, 3.0, 100.0])).astype(np.float32)
            if i % 17 == 0:
                a[1] = np.nan
            ours, ev = guard(a, state.info["ee_pos"])
            ref, _ = layer.filter(a)
            changed += ev["workspace"] + ev["motion"]
            if ours is None:  # NaN before the first command of an episode: the adapter's own hold
                robot.hold()
            else:
                np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-6)
                robot.send_action(ours)
            guard.executed(ours)
            state = robot.tick()
            if state.terminated or state.truncated:
                state = robot.reset(seed=i)
                guard.new_episode()
        assert changed > 20  # the workspace and step limits were exercised, not only the clip


def test_robot_limits_are_validated():
    with pytest.raises(UsageError, match="below"):
        RobotLimits(workspace_low=(0, 0, 1), workspace_high=(1, 1, 0), ee_scale=0.05)
    with pytest.raises(UsageError, match="together"):
        RobotLimits(workspace_low=(0, 0, 0), ee_scale=0.05)
    with pytest.raises(UsageError, match="ee_scale"):
        RobotLimits(max_step=0.02)
    with pytest.raises(UsageError, match="max_step"):
        RobotLimits(ee_scale=0.05, max_step=float("nan"))
    assert not RobotLimits().declared
    with pytest.raises(UsageError, match="not a Robot"):
        make_robot(BACKEND.replace(":make", ":not_a_robot"))

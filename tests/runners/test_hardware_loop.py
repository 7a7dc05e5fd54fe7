"""The hardware loop in a real training run: manual resets through the scripted device, the reset
timeout, and the checks made before the first robot step."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from roborl.store import ReplayStore

BASE = ["env.id=roborl/Reach-v0", "env.max_episode_steps=30", "sac.hidden=[32,32]", "sac.batch_size=32",
        "sac.warmup_steps=40", "train.eval_every=0", "train.eval_episodes=1"]


def _train(run_dir: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "roborl.cli", "--quiet", "train", "/dev/null", *BASE,
                           f"run.dir={run_dir}", *extra], capture_output=True, text=True, timeout=300)


def test_manual_reset_waits_for_the_scripted_device_in_a_training_run(tmp_path: Path) -> None:
    out = _train(tmp_path / "r", "env.reset_mode=manual", "teleop.device=scripted", "train.total_steps=100")
    assert out.returncode == 0, out.stderr[-2000:]
    prompts = [x for x in out.stdout.splitlines() if x.startswith("reset: the robot is holding")]
    # One wait before each of the 4 episodes started (steps 0, 30, 60, 90).
    assert len(prompts) == 4 and "episode 4" in prompts[-1] and "START" in prompts[0], out.stdout
    assert json.loads(out.stdout.strip().splitlines()[-1])["env_steps"] == 100
    s = ReplayStore.open(tmp_path / "r" / "store", mode="r")
    assert s.num_steps("online") == 100  # every step stored (the last episode closed as interrupted)
    s.close()


def test_reset_timeout_saves_and_stops_with_one_line(tmp_path: Path) -> None:
    # The scripted device answers the end of an episode with a decision first and START one poll later:
    # a timeout shorter than one device read runs out on the first manual reset after an episode.
    out = _train(tmp_path / "r", "env.reset_mode=manual", "teleop.device=scripted", "train.total_steps=100",
                 "env.reset_timeout_s=1e-9")
    assert out.returncode == 2, out.stdout + out.stderr
    err = out.stderr.strip().splitlines()
    assert len(err) == 1 and "no START" in err[0] and "step_000000030" in err[0] and "resumes" in err[0], out.stderr
    assert (tmp_path / "r" / "checkpoints" / "step_000000030").is_dir()
    s = ReplayStore.open(tmp_path / "r" / "store", mode="r")
    assert s.num_steps("online") == 30  # the episode is in the store
    s.close()


@pytest.mark.parametrize("extra, needle", [
    (["sac.residual=true"], "store.demos: sac.residual needs demos"),
    (["sac.bc_pretrain_steps=100"], "store.demos: sac.bc_pretrain_steps needs demos"),
    (["env.id=robot://127.0.0.1:1", "store.sampler.her_fraction=0.5"], "robot://127.0.0.1:1 has no goal"),
    (["env.reset_mode=manual", "teleop.device=nosuch"], "device: unknown device 'nosuch'"),
])
def test_checks_before_the_first_robot_step_are_one_line(tmp_path: Path, extra: list[str], needle: str) -> None:
    out = _train(tmp_path / "r", "train.total_steps=100", *extra)
    assert out.returncode == 2 and needle in out.stderr, out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr
    assert not (tmp_path / "r").exists()  # nothing written


@pytest.mark.parametrize("decision", ["success", "failure"])
def test_operator_label_ends_the_episode_with_that_label_in_the_store(tmp_path: Path, decision: str) -> None:
    from roborl.envs.config import EnvConfig, build_env
    from roborl.envs.step import env_step
    from roborl.teleop.config import ScriptedConfig
    from roborl.teleop.device import action_layout
    from roborl.teleop.intervention import DeviceIntervention
    from roborl.teleop.scripted import ScriptedDevice

    env = build_env(EnvConfig(id="roborl/Reach-v0", max_episode_steps=50), seed=0)
    layout = action_layout(env)
    device = ScriptedDevice(env, layout, ScriptedConfig(decisions=(decision,)))
    source = DeviceIntervention(device, layout)
    store = ReplayStore.create(tmp_path / "s", env_id="roborl/Reach-v0", observation_space=env.observation_space,
                               action_space=env.action_space)
    obs, _ = env.reset(seed=0)
    source.reset(obs)
    store.start_episode(obs)
    for i in range(5):
        if i == 3:
            device.on_episode_end(False)  # the device now reports the operator's verdict on its next read
        s = env_step(env, obs, env.action_space.sample() * 0, sink=store, source=source)
        obs = s.next_obs
        if s.done:
            break
    assert i == 3 and s.done and s.success == (decision == "success")
    assert s.terminated == (decision == "success") and s.truncated == (decision == "failure")
    assert s.info["operator_label"] == int(decision == "success")
    eps = store.episodes("online")
    store.close()
    env.close()
    from roborl.store.index import EP_SUCCESS, EP_TERMINATED, EP_TRUNCATED

    assert eps.shape[0] == 1 and int(eps[0, 1]) == 4
    flags = int(eps[0, 2])
    if decision == "success":
        assert flags & EP_SUCCESS and flags & EP_TERMINATED
    else:
        assert not flags & EP_SUCCESS and flags & EP_TRUNCATED

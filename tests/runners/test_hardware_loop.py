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


class _VerdictDevice:
    """A real Device that sends the operator's verdict: FAILURE on every ``every``-th read (an operator
    pressing the failure key mid-episode), nothing else. Passive otherwise (no takeover)."""

    name = "verdicts"

    def __init__(self, every: int) -> None:
        self.every, self.reads = every, 0

    def open(self) -> None: ...

    def close(self) -> None: ...

    def on_episode_start(self, obs) -> None: ...

    def on_episode_end(self, success: bool) -> None: ...

    def read(self, obs=None):
        import numpy as np

        from roborl.teleop.device import Command, Event

        self.reads += 1
        ev = (Event.FAILURE,) if self.reads % self.every == 0 else ()
        return Command(motion=np.zeros(6, np.float32), events=ev, active=bool(ev))


def test_finetune_every_refits_the_classifier_from_operator_labels(tmp_path: Path) -> None:
    import gymnasium as gym
    import numpy as np

    from roborl import config as C
    from roborl.reward.config import ClassifierTrainConfig
    from roborl.reward.model import read_meta
    from roborl.reward.train import train_classifier
    from roborl.runners.config import RunConfig
    from roborl.runners.off_policy import FINETUNED_CLASSIFIER, OffPolicyRunner
    from roborl.teleop.intervention import DeviceIntervention

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "reward"))
    from toy_square import SquareEnv, write_store

    model = tmp_path / "model"
    train_classifier([write_store(tmp_path / "train", 6, seed=1)], model,
                     ClassifierTrainConfig(steps=20, batch_size=16, seed=0, pad=2, positives="step"))
    before = (model / "model.safetensors").read_bytes()
    gym.register("toy/SquareCam-v0", entry_point=SquareEnv, kwargs={"horizon": 10})
    cfg = C.build(RunConfig, {"env": {"id": "toy/SquareCam-v0", "max_episode_steps": 10},
                              "sac": {"hidden": [16], "batch_size": 8, "warmup_steps": 20,
                                      "encoder": {"channels": 4, "layers": 2, "feature_dim": 8}},
                              "train": {"total_steps": 24, "eval_every": 0, "eval_episodes": 1, "threads": 1},
                              "reward": {"classifier": str(model), "finetune_every": 2, "finetune_steps": 3,
                                         "terminate": False},  # only the operator ends episodes here
                              "run": {"dir": str(tmp_path / "r")}})
    runner = OffPolicyRunner(cfg, tmp_path / "r")
    runner.intervention = DeviceIntervention(_VerdictDevice(every=4), ("x",))  # FAILURE at every 4th step
    try:
        runner.train(quiet=True)
        eps = runner.store.episodes("online")
        rows = runner.store.read_rows("online", int(eps[0, 0]), int(eps[-1, 0] + eps[-1, 1]), ["operator_label"])
    finally:
        runner.close()
    # Each episode ends at the operator's FAILURE: 4 steps, the last one labelled 0, the others -1.
    assert [int(n) for n in eps[:-1, 1]] == [4] * (len(eps) - 1) and len(eps) >= 5
    labels = rows["operator_label"].reshape(-1)
    assert (labels[3::4][:len(eps) - 1] == 0).all() and (np.delete(labels, np.s_[3::4]) == -1).all()
    # Two rounds of fine-tuning (after episodes 2 and 4) into run.dir; the given model is untouched.
    meta = read_meta(tmp_path / "r" / FINETUNED_CLASSIFIER)
    assert len(meta["finetunes"]) >= 2 and meta["finetunes"][0]["positives"] == 0
    assert (model / "model.safetensors").read_bytes() == before
    rows = [json.loads(x) for x in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert any("reward/finetune_frames" in r for r in rows)


def test_classifier_cameras_the_robot_lacks_are_refused_before_any_robot_step(tmp_path: Path) -> None:
    """A served robot with proprio only and a classifier that reads camera 'cam': one line, exit 2, and the
    server's true episode log shows that no episode was started and no step taken."""
    from roborl.reward.config import ClassifierTrainConfig
    from roborl.reward.train import train_classifier
    from roborl.robots.launch import ServerProcess

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "reward"))
    from toy_square import write_store

    model = tmp_path / "model"
    train_classifier([write_store(tmp_path / "train", 4, seed=1)], model,
                     ClassifierTrainConfig(steps=5, batch_size=8, seed=0, pad=0, positives="step", val_fraction=0))
    log = tmp_path / "server_log"
    with ServerProcess("sim:roborl/Reach-v0", hz=200, sim_clock="lockstep",
                       extra=["--log-dir", str(log), "env.kwargs.obs_mode=proprio"]) as srv:
        out = subprocess.run([sys.executable, "-m", "roborl.cli", "--quiet", "train", "/dev/null",
                              f"env.id={srv.url}", f"reward.classifier={model}", "train.total_steps=2000",
                              f"run.dir={tmp_path / 'r'}"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 2, out.stdout + out.stderr
    err = out.stderr.strip().splitlines()
    assert len(err) == 1 and "reward.classifier" in err[0] and "'cam'" in err[0] and "proprio" in err[0], out.stderr
    assert not (tmp_path / "r").exists()
    episodes = log / "episodes.jsonl"
    assert not episodes.exists() or episodes.read_text().strip() == ""  # no reset, no step reached the robot


def _bench():
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_hardware_loop",
                                                  Path(__file__).resolve().parents[2] / "tools" / "bench_hardware_loop.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_bench_success_curve_and_steps_to_90() -> None:
    b = _bench()
    eps = [{"steps": 50, "success": False}] * 10 + [{"steps": 20, "success": True}] * 20
    curve, reach = b.success_curve(eps, 250)
    assert curve[0] == {"env_steps": 250, "episodes": 5, "success": 0.0}
    assert curve[-1]["success"] == 1.0 and sum(c["episodes"] for c in curve) == 30
    # 20 trailing episodes reach 90 % at the 28th episode: 18 of the last 20 succeed.
    assert reach == 500 + 20 * 18


def test_bench_classifier_encoder_converts_to_sac_layout(tmp_path: Path) -> None:
    import torch

    from roborl.learners.encoders import PixelEncoder, load_encoder_state
    from roborl.reward.config import ClassifierTrainConfig
    from roborl.reward.model import load_model
    from roborl.reward.train import train_classifier

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "reward"))
    from toy_square import write_store

    train_classifier([write_store(tmp_path / "s", 3, seed=1)], tmp_path / "m",
                     ClassifierTrainConfig(steps=3, batch_size=8, pad=0, positives="step", val_fraction=0,
                                           downsample=1, conv_layers=3))
    out = _bench().classifier_to_sac_encoder(tmp_path / "m", tmp_path / "enc.safetensors", ["cam"])
    pe = PixelEncoder({"cam": (24, 24, 3)}, shared=True, channels=32, layers=3, feature_dim=50)
    load_encoder_state(out, pe)
    model, _ = load_model(tmp_path / "m")
    img = torch.randint(0, 256, (4, 24, 24, 3), dtype=torch.uint8)
    x = img.permute(0, 3, 1, 2).float() / 255.0
    torch.testing.assert_close(pe({"cam": img}), model.encoders[0](x), atol=1e-5, rtol=1e-5)

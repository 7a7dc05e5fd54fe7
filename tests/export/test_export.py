"""`roborl export`: tiny real SAC (residual, demos) and PPO runs on roborl/Reach-v0 through the real CLI,
exported to ONNX and TorchScript, compared with roborl eval's policy on 1,000 recorded observations."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
TOL = 1e-5


def _roborl(*args: str, timeout: float = 300, pre: str = "") -> subprocess.CompletedProcess:
    """The real CLI in a subprocess; ``pre`` is Python run before it (e.g. to hide a package)."""
    code = f"import sys\n{pre}\nfrom roborl.cli import main\nsys.exit(main(sys.argv[1:]))"
    env = dict(os.environ, ROBORL_QUIET="1")
    return subprocess.run([sys.executable, "-c", code, *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout)


COMMON = ["env.id=roborl/Reach-v0", "train.eval_every=0", "train.eval_episodes=1", "device=cpu", "train.threads=1"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("export_runs")
    cfg = root / "cfg.yaml"
    cfg.write_text("run: {name: export-test, seed: 0}\n")
    out = {}
    p = _roborl("train", str(cfg), f"run.dir={root / 'sac'}", "train.algo=sac", *COMMON, "store.demos=[demos/reach]",
                "sac.residual=true", "sac.bc_pretrain_steps=50", "sac.hidden=[32,32]", "sac.batch_size=32",
                "sac.warmup_steps=100", "train.total_steps=300", "train.checkpoint_every=300",
                "store.sampler.demo_fraction=0.5")
    assert p.returncode == 0, p.stderr[-2000:]
    out["sac"] = root / "sac"
    p = _roborl("train", str(cfg), f"run.dir={root / 'ppo'}", "train.algo=ppo", *COMMON, "ppo.hidden=[32,32]",
                "ppo.n_envs=2", "ppo.rollout_steps=128", "ppo.vector=sync", "train.total_steps=512",
                "train.checkpoint_every=512")
    assert p.returncode == 0, p.stderr[-2000:]
    out["ppo"] = root / "ppo"
    return out


@pytest.mark.parametrize("algo", ["sac", "ppo"])
@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_export_matches_eval_policy_on_1000_recorded_observations(runs: dict[str, Path], tmp_path: Path, algo: str,
                                                                   fmt: str) -> None:
    pytest.importorskip("onnxruntime") if fmt == "onnx" else None
    from roborl.export.parity import record_observations, reference_actions
    from roborl.export.writers import load_runner, read_meta

    out = tmp_path / f"{algo}.{fmt}"
    p = _roborl("export", str(runs[algo]), "--format", fmt, "--out", str(out))
    assert p.returncode == 0, p.stderr
    summary = json.loads(p.stdout)
    want_stages = {"obs_normalizer", "actor_mean", "action_rescale", "action_box_clip"}
    if algo == "sac":
        want_stages.add("residual_base")
    assert want_stages <= set(summary["stages"])

    obs = record_observations(runs[algo], n=1000)
    assert obs.shape == (1000, 13) and obs.dtype == np.float32
    assert len(np.unique(obs[:, 0])) > 100  # real, varied observations, not one repeated state
    ref = reference_actions(runs[algo], obs)
    got = load_runner(out, threads=1)(obs)
    assert got.shape == ref.shape == (1000, 4) and got.dtype == np.float32
    assert float(np.abs(got - ref).max()) <= TOL
    assert float(np.abs(ref).max()) > 1e-3  # not a trivially zero policy
    # B is dynamic: one observation and an odd batch give the same rows.
    run = load_runner(out)
    np.testing.assert_allclose(run(obs[:1]), got[:1], atol=1e-6)
    np.testing.assert_allclose(run(obs[3:10]), got[3:10], atol=1e-6)

    meta = read_meta(out)
    assert meta["algo"] == algo and meta["env_id"] == "roborl/Reach-v0"
    assert meta["observation_space"]["shape"] == [13] and meta["action_space"]["shape"] == [4]
    assert meta["control_rate_hz"] == pytest.approx(10.0)
    assert len(meta["config_hash"]) == 16 and meta["config_hash"] == summary["config_hash"]


def test_onnx_graph_and_metadata_props(runs: dict[str, Path], tmp_path: Path) -> None:
    onnx = pytest.importorskip("onnx")
    out = tmp_path / "sac.onnx"
    p = _roborl("export", str(runs["sac"]), "--format", "onnx", "--out", str(out), "--check", "200")
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["parity"]["max_abs_diff"] <= TOL
    model = onnx.load(str(out))
    props = {q.key: q.value for q in model.metadata_props}
    assert {"roborl_meta", "observation_space", "action_space", "control_rate_hz", "config_hash"} <= set(props)
    (inp,) = model.graph.input
    assert inp.name == "obs" and inp.type.tensor_type.shape.dim[0].dim_param  # symbolic batch
    assert model.graph.output[0].name == "action"


def test_torchscript_extra_files_and_call(runs: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "ppo.pt"
    assert _roborl("export", str(runs["ppo"]), "--format", "torchscript", "--out", str(out)).returncode == 0
    extra = {"roborl_meta.json": ""}
    mod = torch.jit.load(str(out), _extra_files=extra)
    meta = json.loads(extra["roborl_meta.json"])
    assert meta["format"] == "roborl.exported_policy" and meta["stages"][-1] == "action_box_clip"
    a = mod(torch.zeros(3, 13))
    assert a.shape == (3, 4) and a.dtype == torch.float32


def test_missing_onnx_is_one_line_naming_the_extra(runs: dict[str, Path], tmp_path: Path) -> None:
    p = _roborl("export", str(runs["sac"]), "--format", "onnx", "--out", str(tmp_path / "x.onnx"),
                pre="sys.modules['onnx'] = None; sys.modules['onnxruntime'] = None")
    assert p.returncode == 2
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "roborl[export]" in lines[0] and "onnx" in lines[0]
    assert not (tmp_path / "x.onnx").exists()


def test_bad_checkpoint_path_is_one_line(tmp_path: Path) -> None:
    p = _roborl("export", str(tmp_path / "nope"), "--format", "torchscript", "--out", str(tmp_path / "x.pt"))
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1 and "nope" in p.stderr


def test_rescale_and_clip_match_rescale_action_on_a_non_unit_box() -> None:
    """Pendulum's Box(-2, 2): the core's rescale + clip equals the env's RescaleAction.action."""
    import gymnasium as gym
    from torch import nn

    from roborl.envs.wrappers import RescaleAction
    from roborl.export.policy import PolicyCore, env_action_box

    env = RescaleAction(gym.make("Pendulum-v1"))
    mid, half, low, high, space = env_action_box(env)
    assert float(high[0]) == 2.0
    ident = nn.Sequential(nn.Linear(1, 1))
    ident[0].weight.data.fill_(1.0)
    ident[0].bias.data.zero_()
    core = PolicyCore(None, None, ident, "clip", None, 0.0, mid, half, low, high)
    u = np.linspace(-3, 3, 101, dtype=np.float32)[:, None]
    got = core(torch.as_tensor(u)).detach().numpy()
    want = np.stack([env.action(np.clip(x, -1, 1)) for x in u])
    np.testing.assert_allclose(got, want, atol=1e-6)
    assert got.min() == -2.0 and got.max() == 2.0
    env.close()


def test_dict_observations_concatenate_in_space_order() -> None:
    """DictInput (TorchScript) and PositionalDictInput (ONNX form) flatten leaves in key order."""
    from torch import nn

    from roborl.export.policy import DictInput, PolicyCore, PositionalDictInput

    torch.manual_seed(0)
    actor = nn.Sequential(nn.Linear(5, 2))
    core = PolicyCore(None, None, actor, "tanh", None, 0.0, np.zeros(2), np.ones(2), -np.ones(2), np.ones(2))
    obs = {"a": torch.randn(4, 2), "b": torch.randn(4, 3)}
    want = core(torch.cat([obs["a"], obs["b"]], 1))
    scripted = torch.jit.script(DictInput(core, ["a", "b"]))
    torch.testing.assert_close(scripted(obs), want)
    torch.testing.assert_close(PositionalDictInput(core, ["a", "b"])(obs["a"], obs["b"]), want)


@pytest.mark.parametrize("algo", ["td3", "ddpg"])
def test_deterministic_actor_algos_export_with_parity(tmp_path: Path, algo: str) -> None:
    """TD3 and DDPG (tanh(mu(normalise(s)))) through the real CLI, both formats, 1,000 recorded observations."""
    pytest.importorskip("onnxruntime")
    from roborl.export.parity import record_observations, reference_actions
    from roborl.export.writers import load_runner

    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("run: {name: export-test, seed: 0}\n")
    run = tmp_path / algo
    p = _roborl("train", str(cfg), f"run.dir={run}", f"train.algo={algo}", *COMMON, f"{algo}.hidden=[32,32]",
                f"{algo}.batch_size=32", f"{algo}.warmup_steps=100", "train.total_steps=250",
                "train.checkpoint_every=250")
    assert p.returncode == 0, p.stderr[-2000:]
    obs = record_observations(run, n=1000)
    ref = reference_actions(run, obs)
    assert float(ref.std(0).max()) > 1e-3
    for fmt in ("onnx", "torchscript"):
        out = tmp_path / f"{algo}.{fmt}"
        p = _roborl("export", str(run), "--format", fmt, "--out", str(out))
        assert p.returncode == 0, p.stderr
        assert json.loads(p.stdout)["stages"] == ["obs_normalizer", "actor_mean", "action_rescale", "action_box_clip"]
        assert float(np.abs(load_runner(out, threads=1)(obs) - ref).max()) <= TOL, fmt

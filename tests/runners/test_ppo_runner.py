"""On-policy runner with PPO: real MuJoCo vector envs, DR per env, truncation bootstrap, Dict observations,
learning, checkpoint resume."""
from __future__ import annotations

import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest
import torch

from roborl import config as C
from roborl.checkpoint import load_checkpoint
from roborl.runners.config import RunConfig
from roborl.envs.config import build_env
from roborl.runners.on_policy import OnPolicyTrainer, make_vec_env, run
from roborl.runs import read_metrics


def _cfg(**sections) -> RunConfig:
    base = {"device": "cpu", "train": {"algo": "ppo"}, "ppo": {"torch_threads": 1}}
    for k, v in sections.items():
        base[k] = {**base.get(k, {}), **v}
    return C.build(RunConfig, base)


def _dr_params(seed: int, n: int = 3) -> np.ndarray:
    cfg = _cfg(env={"id": "HalfCheetah-v5", "dr": {"enabled": True, "mass_scale": [0.5, 1.5]}})
    envs = make_vec_env(cfg.env, n, seed)
    try:
        _, info = envs.reset(seed=[seed + i for i in range(n)])
        masses = np.stack([e.unwrapped.model.body_mass.copy() for e in envs.envs])
        params = np.asarray(info["dr_params"])
        return params, masses
    finally:
        envs.close()


def test_vector_envs_with_dr_have_different_physics_per_env_reproducible_by_seed():
    p1, m1 = _dr_params(3)
    p2, m2 = _dr_params(3)
    p3, _ = _dr_params(4)
    assert p1.shape[0] == 3 and p1.shape[1] > 0
    assert not np.allclose(m1[0], m1[1]) and not np.allclose(m1[1], m1[2])  # physics differ across envs
    assert not np.allclose(p1[0], p1[1])
    np.testing.assert_array_equal(p1, p2)  # same seed, same physics
    np.testing.assert_array_equal(m1, m2)
    assert not np.allclose(p1, p3)


def test_truncation_bootstraps_from_real_final_observation():
    # Pendulum never terminates; a 5-step time limit truncates at t = 4 of an 8-step rollout.
    cfg = _cfg(env={"id": "Pendulum-v1", "max_episode_steps": 5}, run={"seed": 11},
               ppo={"n_envs": 2, "rollout_steps": 8, "epochs": 1, "minibatch_size": 16})
    tr = OnPolicyTrainer(cfg)
    try:
        learner = tr.learner
        # Snapshot the critic before the update changes it: recompute the targets with it later.
        critic_state = {k: v.clone() for k, v in learner.model.state_dict().items()}
        tr.iterate()
        buf = tr.buf
        np.testing.assert_array_equal(buf.dones[:, 0].numpy(), [0, 0, 0, 0, 1, 0, 0, 0])
        assert buf.terminated.sum() == 0
        learner.model.load_state_dict(critic_state)
        for i in range(2):
            # Replay the executed actions on a fresh env with the same seed to get the real final obs.
            env = build_env(cfg.env, seed=cfg.run.seed + i)
            env.reset(seed=cfg.run.seed + i)
            obs = None
            for t in range(5):
                obs, *_ = env.step(buf.actions[t, i].clamp(-1, 1).numpy())
            env.close()
            v_final = learner.value(torch.as_tensor(obs, dtype=torch.float32)[None])[0]
            assert buf.next_values[4, i].item() == pytest.approx(v_final.item(), abs=1e-5)
            assert buf.next_values[4, i].item() != pytest.approx(buf.values[5, i].item(), abs=1e-4)  # not the reset obs
            torch.testing.assert_close(buf.next_values[:4, i], buf.values[1:5, i])  # inside an episode
    finally:
        tr.close()


def test_asymmetric_critic_gets_dr_params_per_env():
    cfg = _cfg(env={"id": "HalfCheetah-v5", "dr": {"enabled": True}},
               ppo={"n_envs": 2, "rollout_steps": 16, "epochs": 1, "minibatch_size": 16, "asymmetric": True})
    tr = OnPolicyTrainer(cfg)
    try:
        m = tr.iterate()
        assert tr.priv_dim > 0 and np.isfinite(m["loss/value"])
        assert not torch.allclose(tr.buf.obs["critic"][0, 0], tr.buf.obs["critic"][0, 1])
        assert tr.learner.model.critic_encoder.keys == ("policy", "critic")
    finally:
        tr.close()


def test_asymmetric_without_privileged_info_is_a_usage_error():
    from roborl.errors import UsageError

    cfg = _cfg(env={"id": "Pendulum-v1"}, ppo={"asymmetric": True, "n_envs": 1})
    with pytest.raises(UsageError, match="ppo.asymmetric"):
        OnPolicyTrainer(cfg)


def test_short_training_run_clearly_improves(tmp_path):
    # InvertedPendulum-v5: random-ish policies balance ~5 steps; PPO gets to tens within 10k steps.
    cfg = _cfg(env={"id": "InvertedPendulum-v5"}, run={"dir": str(tmp_path), "seed": 0},
               train={"total_steps": 10240, "eval_every": 0, "eval_episodes": 5, "checkpoint_every": 100_000,
                      "log_every": 1024},
               ppo={"n_envs": 4, "rollout_steps": 256, "minibatch_size": 128, "epochs": 5, "lr": 1e-3})
    assert run(cfg, tmp_path, "local", None) == 0
    rows = read_metrics(tmp_path)
    train = [r["train/return"] for r in rows if "train/return" in r]
    final_eval = [r["eval/return"] for r in rows if "eval/return" in r][-1]
    for key in ("train/return", "train/success", "fps", "approx_kl", "clip_frac", "loss/policy", "loss/value"):
        assert any(key in r for r in rows), key
    assert final_eval > 30 and final_eval > 4 * train[0], (train, final_eval)


def test_checkpoint_resume_continues_from_saved_step(tmp_path):
    cfg = _cfg(env={"id": "Pendulum-v1"}, run={"dir": str(tmp_path), "seed": 1},
               train={"total_steps": 512, "eval_every": 0, "eval_episodes": 1, "checkpoint_every": 256,
                      "log_every": 256},
               ppo={"n_envs": 2, "rollout_steps": 128, "epochs": 2, "minibatch_size": 64, "norm_reward": True})
    assert run(cfg, tmp_path, "local", None) == 0
    state1, meta1, step1 = load_checkpoint(tmp_path)
    assert step1 == 512 and meta1["algo"] == "ppo" and meta1["dims"] == {"obs": 3, "act": 1, "priv": 0}
    assert float(state1["learner"]["model"]["obs_rms.policy.count"]) > 500  # normalizer saved with the checkpoint
    assert float(state1["reward_rms"]["count"]) > 500 and float(state1["reward_rms"]["var"][0]) != 1.0  # reward scale too
    # Resume in a fresh process through the CLI with a larger budget.
    (tmp_path / "cfg.yaml").write_text(C.dump_yaml(cfg))
    out = subprocess.run([sys.executable, "-m", "roborl.cli", "train", str(tmp_path / "cfg.yaml"),
                          "train.total_steps=1024"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "resumed from step 512" in out.stdout
    state2, meta2, step2 = load_checkpoint(tmp_path)
    assert step2 == 1024 and meta2["iteration"] == 4
    steps = [r["step"] for r in read_metrics(tmp_path) if "fps" in r]
    assert steps == [256, 512, 768, 1024]
    # The resumed learner started from the saved one: its Adam step count continued.
    assert float(state2["learner"]["optim"]["state"][0]["step"]) == 2 * float(state1["learner"]["optim"]["state"][0]["step"])


def test_role_actor_is_rejected(tmp_path):
    from roborl.errors import UsageError

    with pytest.raises(UsageError, match="local"):
        run(_cfg(), tmp_path, "actor", "localhost:1")


def test_last_action_observation_trains_and_evaluates_on_the_perturbation_grid(tmp_path):
    # env.obs_last_actions reaches the policy in training, in its checkpoint and in `roborl eval --perturb`
    # (which rebuilds the env stack from the checkpoint's env config).
    from roborl.eval.load import load_for_eval
    from roborl.eval.perturb import evaluate_grid

    cfg = _cfg(env={"id": "InvertedPendulum-v5", "obs_last_actions": 1, "max_episode_steps": 50,
                    "dr": {"enabled": True, "latency_steps": [0, 1]}},
               run={"dir": str(tmp_path), "seed": 0},
               train={"total_steps": 256, "eval_every": 0, "eval_episodes": 1, "checkpoint_every": 256, "log_every": 256},
               ppo={"n_envs": 2, "rollout_steps": 128, "epochs": 1, "minibatch_size": 128})
    assert run(cfg, tmp_path, "local", None) == 0
    _, meta, _ = load_checkpoint(tmp_path)
    assert meta["dims"]["obs"] == 4 + 1
    policy, env_cfg, *_ = load_for_eval(str(tmp_path), "cpu")
    assert env_cfg.obs_last_actions == 1
    out = evaluate_grid(policy, env_cfg, {"points": [{}, {"latency_ms": 40}]}, episodes=1, seed=5)
    assert [e["latency_steps"] for e in out] == [0, 1] and all(e["return_mean"] > 0 for e in out)


class _DictPendulum(gym.ObservationWrapper):
    """Pendulum with a Dict observation of two vector groups: {"angle": [cos, sin], "velocity": [thdot]}."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self.observation_space = gym.spaces.Dict({"angle": gym.spaces.Box(-1.0, 1.0, (2,), np.float32),
                                                  "velocity": gym.spaces.Box(-8.0, 8.0, (1,), np.float32)})

    def observation(self, obs: np.ndarray) -> dict[str, np.ndarray]:
        return {"angle": obs[:2], "velocity": obs[2:]}


def test_dict_observation_env_trains_bootstraps_and_acts():
    cfg = _cfg(env={"id": "Pendulum-v1", "max_episode_steps": 5}, run={"seed": 3},
               ppo={"n_envs": 2, "rollout_steps": 8, "epochs": 2, "minibatch_size": 8})
    fns = [lambda i=i: _DictPendulum(build_env(cfg.env, seed=cfg.run.seed + i)) for i in range(2)]
    envs = gym.vector.SyncVectorEnv(fns, autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    tr = OnPolicyTrainer(cfg, envs=envs)
    try:
        assert tr.obs_dims == {"angle": 2, "velocity": 1} and tr.obs_dim == 3
        m0 = tr.iterate()
        # Truncated at t = 4: the bootstrap value is V(real final dict observation), not of the reset one.
        assert tr.buf.dones[4].all() and tr.buf.next_values[4, 0] != tr.buf.values[5, 0]
        for _ in range(2):
            m = tr.iterate()
        assert np.isfinite(m["loss/value"]) and np.isfinite(m0["loss/policy"])
        assert float(tr.learner.model.obs_rms["velocity"].count) > 40
        obs = {"angle": np.array([[1.0, 0.0], [0.0, 1.0]], np.float32), "velocity": np.array([[0.5], [-2.0]], np.float32)}
        a = tr.learner.policy().act(obs)
        assert a.shape == (2, 1) and np.all(np.abs(a) <= 1)
    finally:
        tr.close()


def test_rollout_buffers_hold_what_the_vector_env_returned():
    """The staged per-step buffers (rewards, terminated, dones) and the actions the envs received match
    the vector env's own outputs step by step, through terminations and truncations."""
    import functools

    from roborl.envs.vector import FastSyncVectorEnv
    from roborl.runners.on_policy import _env_fn

    class Recording(FastSyncVectorEnv):
        def __init__(self, *a, **k) -> None:
            super().__init__(*a, **k)
            self.seen: list[tuple[np.ndarray, ...]] = []

        def step(self, actions):
            out = super().step(actions)
            self.seen.append((np.array(actions), out[1].copy(), out[2].copy(), out[3].copy()))
            return out

    cfg = _cfg(env={"id": "Hopper-v5", "max_episode_steps": 30}, run={"seed": 2},
               ppo={"n_envs": 3, "rollout_steps": 80, "epochs": 1, "minibatch_size": 240, "norm_reward": False})
    envs = Recording([functools.partial(_env_fn, cfg.env, 2 + i, None) for i in range(3)],
                     autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    tr = OnPolicyTrainer(cfg, envs=envs)
    try:
        tr.iterate()
        seen = envs.seen
        assert len(seen) == 80
        acts, rew, term, trunc = (np.stack([s[i] for s in seen]) for i in range(4))
        buf = tr.buf
        assert torch.equal(buf.rewards, torch.as_tensor(rew, dtype=torch.float32))
        assert torch.equal(buf.terminated, torch.as_tensor(term, dtype=torch.float32))
        assert torch.equal(buf.dones, torch.as_tensor(term | trunc, dtype=torch.float32))
        assert term.any() and trunc.any()  # both kinds of episode end happened
        np.testing.assert_array_equal(acts, tr.learner.model.squash_action(buf.actions).numpy())
        assert len(tr.episodes.lengths) == int((term | trunc).sum())
    finally:
        tr.close()


def test_rollout_with_lean_env_stack_equals_reference_stack():
    """make_vec_env's default (wrappers skip the info entries the runner drops) against skip_unread=False:
    one PPO iteration gives identical rollout buffers, episode stats and parameters; with the safety layer
    clipping (bounds narrower than [-1, 1]) and terminations / truncations."""
    cfg = _cfg(env={"id": "Hopper-v5", "max_episode_steps": 30,
                    "safety": {"action_low": [-0.6] * 3, "action_high": [0.5] * 3}}, run={"seed": 4},
               ppo={"n_envs": 3, "rollout_steps": 64, "epochs": 1, "minibatch_size": 96})
    out = []
    for skip in (False, True):
        torch.manual_seed(0)
        envs = make_vec_env(cfg.env, 3, 4, info_keys=("is_success", "success"), skip_unread=skip)
        assert all(bool(e.skipped) is skip for e in envs.envs)
        tr = OnPolicyTrainer(cfg, envs=envs)
        try:
            tr.iterate()
            b = tr.buf
            obs = next(iter(b.obs.values()))
            out.append(([t.clone() for t in (b.actions, b.logp, b.mu, b.rewards, b.terminated, b.dones, b.values,
                                              b.next_values, obs)],
                        [p.detach().clone() for p in tr.learner.model.parameters()],
                        (list(tr.episodes.lengths), list(tr.episodes.returns))))
        finally:
            tr.close()
    (ref_b, ref_p, ref_e), (lean_b, lean_p, lean_e) = out
    for x, y in zip(ref_b + ref_p, lean_b + lean_p):
        assert torch.equal(x, y)
    assert ref_e == lean_e and len(ref_e[0]) > 0

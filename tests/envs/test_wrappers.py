"""RescaleAction, RunningMeanStd, NormalizeObservation (Box and Dict obs), find_wrapper."""
from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces
from hypothesis import given, settings
from hypothesis import strategies as st

from roborl.checkpoint import load_checkpoint, save_checkpoint
from roborl.envs.make import make_env
from roborl.envs.wrappers import (NormalizeObservation, RescaleAction, RunningMeanStd, find_wrapper,
                                  load_obs_normalizer_state, obs_normalizer_state)
from roborl.errors import UsageError


class HalveExecuted(gym.Wrapper):
    """Acts like a safety layer that shrinks every action by half and reports it in env units."""

    def step(self, action):
        a = np.asarray(action) * 0.5
        obs, r, te, tr, info = self.env.step(a)
        info["executed_action"] = a
        return obs, r, te, tr, info


def test_rescale_maps_unit_box_onto_env_bounds():
    env = RescaleAction(make_env("Pendulum-v1"))  # torque bounds [-2, 2]
    assert env.action_space == spaces.Box(-1.0, 1.0, (1,), np.float32)
    env.reset(seed=0)
    for a, torque in ((1.0, 2.0), (-1.0, -2.0), (0.25, 0.5), (3.0, 2.0)):
        _, _, _, _, info = env.step(np.array([a], np.float32))
        assert env.unwrapped.last_u == pytest.approx(torque)
        # No executed_action from inside: the clipped agent action is reported.
        np.testing.assert_allclose(info["executed_action"], [min(a, 1.0)])
        assert info["executed_action"].dtype == np.float32


def test_rescale_maps_executed_action_back():
    env = RescaleAction(HalveExecuted(make_env("Pendulum-v1")))
    env.reset(seed=0)
    _, _, _, _, info = env.step(np.array([0.8], np.float32))  # 1.6 N m commanded, 0.8 executed
    assert env.unwrapped.last_u == pytest.approx(0.8)
    np.testing.assert_allclose(info["executed_action"], [0.4], rtol=1e-6)


def test_rescale_asymmetric_bounds_roundtrip():
    env = RescaleAction(make_env("Hopper-v5"))
    w = env
    w._low, w._high = np.array([0.0, -3.0, 1.0]), np.array([2.0, 1.0, 5.0])
    w._half, w._mid, w._identity = (w._high - w._low) / 2, (w._high + w._low) / 2, False
    x = np.array([-1.0, 0.0, 0.5])
    np.testing.assert_allclose(w.action(x), [0.0, -1.0, 4.0])
    np.testing.assert_allclose(w.reverse_action(w.action(x)), x, atol=1e-6)
    env.close()


def test_rescale_rejects_unbounded():
    class Unbounded(gym.Wrapper):
        def __init__(self, env):
            super().__init__(env)
            self.action_space = spaces.Box(-np.inf, np.inf, (1,), np.float32)

    with pytest.raises(UsageError, match="infinite bounds"):
        RescaleAction(Unbounded(make_env("Pendulum-v1")))


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(1, 20), min_size=1, max_size=6), st.integers(0, 2**31 - 1))
def test_running_mean_std_equals_batch_statistics(sizes, seed):
    rng = np.random.default_rng(seed)
    batches = [rng.normal(3.0, 2.0, size=(n, 3)) * rng.uniform(0.1, 10) for n in sizes]
    rms = RunningMeanStd((3,), epsilon=1e-12)
    for b in batches:
        rms.update(b)
    allx = np.concatenate(batches)
    np.testing.assert_allclose(rms.mean, allx.mean(0), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(rms.var, allx.var(0), rtol=1e-6, atol=1e-6)
    assert rms.count == pytest.approx(len(allx))


def test_normalize_learns_statistics_freezes_and_clips():
    env = NormalizeObservation(make_env("Hopper-v5"), clip=5.0)
    env.reset(seed=0)
    env.action_space.seed(0)
    raw = []
    for _ in range(300):
        obs, _, te, tr, _ = env.step(env.action_space.sample())
        raw.append(env.unwrapped._get_obs())
        assert np.all(np.abs(obs) <= 5.0) and obs.dtype == np.float32
        if te or tr:
            env.reset()
    rms = env.rms[""]
    assert rms.count > 300
    before = rms.state_dict()
    env.freeze()
    obs, *_ = env.step(env.action_space.sample())
    np.testing.assert_array_equal(rms.mean, before["mean"])  # frozen: no update
    np.testing.assert_allclose(obs, np.clip((env.unwrapped._get_obs() - rms.mean) / np.sqrt(rms.var + 1e-8), -5, 5),
                               rtol=1e-5, atol=1e-5)
    env.unfreeze()
    env.step(env.action_space.sample())
    assert not np.array_equal(rms.mean, before["mean"])
    env.close()


def test_state_roundtrips_through_checkpoint(tmp_path):
    train = NormalizeObservation(make_env("Hopper-v5"))
    train.reset(seed=0)
    for _ in range(50):
        train.step(train.action_space.sample())
    save_checkpoint(tmp_path, 50, {"obs_norm": obs_normalizer_state(train)}, {"note": "test"})
    state, _, step = load_checkpoint(tmp_path)
    assert step == 50
    ev = NormalizeObservation(make_env("Hopper-v5"), frozen=True)
    load_obs_normalizer_state(ev, state["obs_norm"])
    for k in ("mean", "var"):
        np.testing.assert_array_equal(ev.rms[""].state_dict()[k], train.rms[""].state_dict()[k])
    x = train.unwrapped._get_obs()
    np.testing.assert_array_equal(ev.normalize(x), train.normalize(x))
    with pytest.raises(UsageError, match="no statistics"):
        load_obs_normalizer_state(ev, None)
    with pytest.raises(UsageError, match="shape"):
        ev.load_state_dict({"": {"mean": np.zeros(3), "var": np.ones(3), "count": 1.0}})
    train.close(), ev.close()


class DictObs(gym.ObservationWrapper):
    """A real env's state plus an image and an integer counter, as a Dict observation."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self.observation_space = spaces.Dict({
            "state": env.observation_space,
            "image": spaces.Box(0, 255, (4, 4, 3), np.uint8),
            "count": spaces.Box(0, 10**6, (1,), np.int64)})
        self.n = 0

    def observation(self, obs: Any) -> dict:
        self.n += 1
        return {"state": obs, "image": np.full((4, 4, 3), self.n % 256, np.uint8), "count": np.array([self.n])}


def test_dict_obs_normalizes_only_float_fields():
    env = NormalizeObservation(DictObs(make_env("Hopper-v5")), clip=10.0)
    assert set(env.rms) == {"state"}
    assert env.observation_space["image"].dtype == np.uint8
    obs, _ = env.reset(seed=0)
    for _ in range(20):
        obs, *_ = env.step(env.action_space.sample())
    assert obs["image"].dtype == np.uint8 and obs["image"][0, 0, 0] == 21
    assert obs["count"][0] == 21
    assert obs["state"].dtype == np.float32 and env.observation_space.contains(obs)
    sd = env.state_dict()
    assert set(sd) == {"state"}
    env.close()


def test_find_wrapper():
    inner = RescaleAction(make_env("Pendulum-v1"))
    env = NormalizeObservation(inner)
    assert find_wrapper(env, RescaleAction) is inner
    assert find_wrapper(env, NormalizeObservation) is env
    assert find_wrapper(inner, NormalizeObservation) is None
    assert obs_normalizer_state(inner) is None
    load_obs_normalizer_state(inner, None)  # neither side normalizes: fine


class Record(gym.Wrapper):
    """Records every observation the inner env returns."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self.seen: list[np.ndarray] = []

    def reset(self, **kw):
        obs, info = self.env.reset(**kw)
        self.seen.append(np.array(obs))
        return obs, info

    def step(self, a):
        out = self.env.step(a)
        self.seen.append(np.array(out[0]))
        return out


def test_per_step_statistics_equal_batch_statistics():
    rec = Record(make_env("Hopper-v5"))
    env = NormalizeObservation(rec, clip=None)
    env.reset(seed=1)
    env.action_space.seed(1)
    for _ in range(120):
        obs, _, te, tr, _ = env.step(env.action_space.sample())
        if te or tr:
            env.reset()
    ref = RunningMeanStd(env.observation_space.shape)  # same epsilon prior, one Chan batch update
    ref.update(np.stack(rec.seen))
    np.testing.assert_allclose(env.rms[""].mean, ref.mean, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(env.rms[""].var, ref.var, rtol=1e-9, atol=1e-12)
    last = rec.seen[-1]
    np.testing.assert_allclose(obs, ((last - ref.mean) / np.sqrt(ref.var + 1e-8)).astype(np.float32), rtol=1e-5)

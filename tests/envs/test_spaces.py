"""roborl.envs.spaces on envs that are not ours (gym-hil / LeRobot-style nested Dicts, flat Dicts,
vector-only Dicts), and env.success_key through build_env."""
from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces
from gymnasium.utils.env_checker import check_env

from roborl.config import build
from roborl.envs.config import EnvConfig, build_env
from roborl.envs.spaces import (IMAGE, VECTOR, image_leaves, leaves, resolve_camera, resolve_cameras, flatten_obs,
                                to_channels_last, unflatten_obs, vector_concat, vector_leaves)
from roborl.envs.success import step_success
from roborl.errors import UsageError

H, W = 12, 16


class NestedDictEnv(gym.Env):
    """gym-hil / LeRobot style: ``{"agent_pos": [4], "pixels": {"front": HxWx3, "side": 3xHxW}}``; success
    in ``info[success_key]`` once the position passes 1 (flat=True: ``{"agent_pos", "front", "side"}``)."""

    metadata = {"render_modes": []}

    def __init__(self, flat: bool = False, success_key: str = "success") -> None:
        front = spaces.Box(0, 255, (H, W, 3), np.uint8)
        side = spaces.Box(0, 255, (3, H, W), np.uint8)  # channels first, as some envs store them
        pos = spaces.Box(-10, 10, (4,), np.float32)
        self.flat, self.success_key = flat, success_key
        self.observation_space = spaces.Dict(
            {"agent_pos": pos, "front": front, "side": side} if flat
            else {"agent_pos": pos, "pixels": spaces.Dict({"front": front, "side": side})})
        self.action_space = spaces.Box(-2.0, 2.0, (4,), np.float32)
        self._pos = np.zeros(4, np.float32)

    def _obs(self) -> dict[str, Any]:
        v = int(np.clip(self._pos[0] * 50 + 100, 0, 255))
        front, side = np.full((H, W, 3), v, np.uint8), np.full((3, H, W), 255 - v, np.uint8)
        if self.flat:
            return {"agent_pos": self._pos.copy(), "front": front, "side": side}
        return {"agent_pos": self._pos.copy(), "pixels": {"front": front, "side": side}}

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self._pos = self.np_random.uniform(-0.1, 0.1, 4).astype(np.float32)
        return self._obs(), {}

    def step(self, action):
        self._pos = np.clip(self._pos + 0.1 * np.asarray(action, np.float32), -10, 10).astype(np.float32)
        done = bool(self._pos[0] > 1.0)
        return self._obs(), float(self._pos[0]), False, False, {self.success_key: done}


ID = "roborl_test/NestedDict-v0"
if ID not in gym.registry:
    gym.register(id=ID, entry_point=NestedDictEnv, max_episode_steps=200, disable_env_checker=True)


def test_generic_nested_dict_env_passes_the_checker():
    check_env(NestedDictEnv(), skip_render_check=True)
    check_env(NestedDictEnv(flat=True), skip_render_check=True)


def test_leaves_and_classification_nested_and_flat():
    nested = leaves(NestedDictEnv().observation_space)
    assert [(lf.name, lf.kind) for lf in nested] == [("agent_pos", VECTOR), ("pixels/front", IMAGE), ("pixels/side", IMAGE)]
    side = nested[2]
    assert side.channels_first and side.hwc == (H, W, 3) and not nested[1].channels_first
    flat = leaves(NestedDictEnv(flat=True).observation_space)
    assert [lf.name for lf in image_leaves(flat)] == ["front", "side"]
    assert [lf.name for lf in vector_leaves(flat)] == ["agent_pos"]
    # a bare Box and a Dict of vectors only
    box = leaves(spaces.Box(-1, 1, (5,), np.float32))
    assert [(lf.name, lf.kind, lf.shape) for lf in box] == [("", VECTOR, (5,))]
    vec = spaces.Dict({"a": spaces.Box(-1, 1, (2,)), "b": spaces.Dict({"c": spaces.Discrete(3)}),
                       "t": spaces.Tuple((spaces.Box(0, 1, (1,)), spaces.MultiBinary(2)))})
    assert [lf.name for lf in leaves(vec)] == ["a", "b/c", "t/0", "t/1"] and not image_leaves(vec)
    # uint8 non-image Boxes are vectors (e.g. a (4, 4) bitmap or an HxWx5 stack)
    assert leaves(spaces.Box(0, 255, (4, 4), np.uint8))[0].kind == VECTOR
    assert leaves(spaces.Box(0, 255, (8, 8, 5), np.uint8))[0].kind == VECTOR


def test_unsupported_and_ambiguous_spaces_are_one_line_errors():
    for sp in (spaces.Dict({"text": spaces.Text(5)}), spaces.Dict({"a/b": spaces.Box(0, 1, (1,))})):
        with pytest.raises(UsageError) as e:
            leaves(sp)
        assert "\n" not in str(e.value)
    img = spaces.Box(0, 255, (8, 8, 3), np.uint8)
    two = spaces.Dict({"pixels": spaces.Dict({"front": img}), "aux": spaces.Dict({"front": img})})
    with pytest.raises(UsageError, match="ambiguous"):
        resolve_camera(two, "front")
    assert resolve_camera(two, "aux/front") == "aux/front"


@pytest.mark.parametrize("flat", [False, True])
def test_flatten_unflatten_round_trip_and_vector_concat(flat):
    env = NestedDictEnv(flat=flat)
    obs, _ = env.reset(seed=0)
    obs, *_ = env.step(np.ones(4, np.float32))
    f = flatten_obs(obs, env.observation_space)
    prefix = "" if flat else "pixels/"
    assert set(f) == {"agent_pos", f"{prefix}front", f"{prefix}side"}
    back = unflatten_obs(f, env.observation_space)
    assert env.observation_space.contains(back)
    np.testing.assert_array_equal(back["agent_pos"], obs["agent_pos"])
    np.testing.assert_array_equal(flatten_obs(back, env.observation_space)[f"{prefix}side"], f[f"{prefix}side"])
    np.testing.assert_array_equal(vector_concat(obs, env.observation_space), obs["agent_pos"])
    # batches keep their leading dim
    batch = {k: np.stack([v, v]) for k, v in f.items()}
    assert vector_concat(unflatten_obs(batch, env.observation_space), env.observation_space).shape == (2, 4)
    side = leaves(env.observation_space)[2]
    assert to_channels_last(batch[side.name], side).shape == (2, H, W, 3)
    with pytest.raises(UsageError, match="missing"):
        unflatten_obs({"agent_pos": f["agent_pos"]}, env.observation_space)


@pytest.mark.parametrize("flat", [False, True])
def test_camera_names_resolve_in_both_conventions(flat):
    sp = NestedDictEnv(flat=flat).observation_space
    prefix = "" if flat else "pixels/"
    assert resolve_camera(sp, "side") == f"{prefix}side"
    assert resolve_cameras(sp, None) == [f"{prefix}front", f"{prefix}side"]
    assert resolve_cameras(sp, ["side", "front"]) == [f"{prefix}side", f"{prefix}front"]
    with pytest.raises(UsageError) as e:
        resolve_camera(sp, "wrist")
    msg = str(e.value)
    assert "\n" not in msg and "'wrist'" in msg and f"'{prefix}front'" in msg and f"'{prefix}side'" in msg
    with pytest.raises(UsageError, match="twice"):
        resolve_cameras(sp, ["front", "front"])
    with pytest.raises(UsageError, match="cameras: none"):
        resolve_camera(spaces.Dict({"agent_pos": spaces.Box(0, 1, (2,))}), "front")


def test_generic_nested_env_through_the_wrapper_stack():
    cfg = build(EnvConfig, {"id": ID, "normalize_obs": True, "terminate_on_success": True,
                            "success_key": "success"}, "test")
    env = build_env(cfg, seed=0)
    obs, _ = env.reset(seed=0)
    assert env.observation_space.contains(obs)
    assert obs["pixels"]["front"].dtype == np.uint8  # images pass through the normalizer
    steps, terminated = 0, False
    while not terminated:
        obs, _, terminated, truncated, info = env.step(np.ones(4, np.float32))
        steps += 1
        assert not truncated and steps < 100
    assert info["success"] and steps >= 5
    env.close()


def test_success_key_names_the_envs_own_key():
    def run(success_key):
        cfg = build(EnvConfig, {"id": ID, "kwargs": {"success_key": "done_ok"}, "terminate_on_success": True,
                                "success_key": success_key}, "test")
        env = build_env(cfg, seed=0)
        env.reset(seed=0)
        try:
            for _ in range(30):
                *_, terminated, _, info = env.step(np.ones(4, np.float32))
                if terminated:
                    return info
            return None
        finally:
            env.close()

    assert run("done_ok")["done_ok"]
    with pytest.raises(UsageError) as e:  # neither is_success nor success: the message says what to set
        run(None)
    assert "\n" not in str(e.value) and "env.success_key" in str(e.value)
    assert step_success({"done_ok": True, "is_success": False}, "done_ok")
    assert not step_success({"done_ok": True, "is_success": False})
    with pytest.raises(Exception, match="success_key"):
        build(EnvConfig, {"success_key": " "}, "test")

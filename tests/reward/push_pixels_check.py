"""Run by test_reward_wrapper.test_on_push_pixels in a fresh interpreter: Push frames (obs_mode
state+pixels) into a real store, a classifier trained on them, ClassifierReward on the real env.
Exit 3 with a reason when no GL backend renders here (the test then skips)."""
from __future__ import annotations

import sys
from pathlib import Path

import gymnasium as gym
import mujoco

try:
    mujoco.Renderer(mujoco.MjModel.from_xml_string("<mujoco/>"), 8, 8).close()
except Exception as e:  # noqa: BLE001 - any GL failure means: cannot render here
    print(f"no OpenGL backend for rendering (libosmesa6 + MUJOCO_GL=osmesa): {e}")
    sys.exit(3)

import roborl.envs  # noqa: E402,F401 - registers roborl/Push-v0
from roborl.envs.expert import expert  # noqa: E402
from roborl.errors import UsageError  # noqa: E402
from roborl.reward.config import ClassifierTrainConfig  # noqa: E402
from roborl.reward.train import train_classifier  # noqa: E402
from roborl.reward.wrapper import ClassifierReward  # noqa: E402
from roborl.store import ReplayStore  # noqa: E402

root = Path(sys.argv[1])
env = gym.make("roborl/Push-v0", obs_mode="state+pixels", image_size=32, max_episode_steps=30)
st = ReplayStore.create(root / "push", env_id="roborl/Push-v0", observation_space=env.observation_space,
                        action_space=env.action_space)
for ep in range(3):
    obs, _ = env.reset(seed=ep)
    pol = expert(env, noise=0.0, seed=ep)
    st.start_episode(obs, "demo")
    done = False
    while not done:
        a = pol(obs)
        obs, r, term, trunc, info = env.step(a)
        st.add_step(action=a, reward=r, next_obs=obs, terminated=term, truncated=trunc, is_success=info["is_success"])
        done = term or trunc
st.close()
# 'final' labels the end of each episode that finishes in success, so positives exist whenever one did.
try:
    train_classifier([root / "push"], root / "m", ClassifierTrainConfig(steps=10, batch_size=8, val_fraction=0,
                                                                         positives="both", final_k=5))
except UsageError as e:
    print(f"the expert reached no success: {e}")
    sys.exit(3)
wrapped = ClassifierReward(env, root / "m", confirm_steps=1)
wrapped.reset(seed=0)
_, r, _, _, info = wrapped.step(wrapped.action_space.sample())
assert r in (0.0, 1.0) and 0.0 <= info["classifier_prob"] <= 1.0 and "is_success" in info, info
try:
    ClassifierReward(gym.make("roborl/Push-v0"), root / "m")
    raise SystemExit("a state-only env was accepted")
except UsageError as e:
    assert "'pixels.front'" in str(e), e
wrapped.close()
print("OK")

"""Frames once (store format 2): each observation is stored once, next_obs is rebuilt exactly,
format-1 stores (the repo's demos) stay readable and sample the same batches."""
from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
import yaml

import roborl
from roborl.config import build
from roborl.errors import UsageError
from roborl.store import ReplayStore, Sampler, SamplerConfig
from roborl.store.verify import verify_store

ROOT = Path(__file__).parents[2]
CAM = gym.spaces.Box(0, 255, (64, 64, 3), np.uint8)
OBS = gym.spaces.Dict({"state": gym.spaces.Box(-np.inf, np.inf, (3,), np.float32),
                       "pixels": gym.spaces.Dict({"front": CAM, "wrist": CAM})})
ACT = gym.spaces.Box(-1, 1, (2,), np.float32)
_NOISE = np.random.default_rng(0).integers(0, 256, (2, 64, 64, 3), np.uint8)


def _obs(i: int) -> dict:
    """Observation number ``i`` (unique per call site): noise images shifted by i, like real frames."""
    return {"state": np.full(3, i, np.float32),
            "pixels": {"front": _NOISE[0] + np.uint8(i % 256), "wrist": _NOISE[1] + np.uint8((3 * i) % 256)}}


def _flat(o: dict) -> dict[str, np.ndarray]:
    return {"state": o["state"], "pixels.front": o["pixels"]["front"], "pixels.wrist": o["pixels"]["wrist"]}


def _write(st: ReplayStore) -> list[dict[str, np.ndarray]]:
    """Episodes ending every way: terminated, truncated, interrupted (start_episode / end_episode),
    buffered, in both partitions, then an open episode. Returns the next_obs given for each row
    (logical order per partition: demo rows first in the list, then online)."""
    nxt: dict[str, list[dict[str, np.ndarray]]] = {"demo": [], "online": []}
    i = 0
    plan = [("online", 5, "term", False), ("online", 3, "trunc", False), ("demo", 4, "trunc", False),
            ("online", 1, "term", False), ("online", 6, "interrupt", False), ("online", 2, "end", False),
            ("demo", 3, "term", True), ("online", 70, "trunc", False), ("online", 4, "open", False)]
    for part, n, how, buffered in plan:
        i += 1000
        st.start_episode(_obs(i), part, buffered=buffered)
        for t in range(n):
            last = t == n - 1
            o = _obs(i + t + 1)
            st.add_step(action=[0.1, t], reward=float(t), next_obs=o, terminated=last and how == "term",
                        truncated=last and how == "trunc")
            nxt[part].append(_flat(o))
        if how == "end":
            st.end_episode()
    return nxt["demo"] + nxt["online"]


def test_next_obs_exact_at_every_episode_end(tmp_path: Path) -> None:
    st = ReplayStore.create(tmp_path / "s", env_id="img", observation_space=OBS, action_space=ACT, chunk_rows=16)
    want = _write(st)
    assert st.frames_once and not any(f.name.startswith("next_obs") for f in st.stored_fields)

    def check(s: ReplayStore, with_open: bool) -> None:
        for part, rows_want in (("demo", want[:7]), ("online", want[7:])):
            a = s.head_row(part)  # type: ignore[arg-type]
            b = s.end_row(part) if with_open else s.index(part).live_rows()[1]  # type: ignore[arg-type]
            rows = s.read_rows(part, a, b)  # type: ignore[arg-type]
            for j in range(b - a):
                for k in ("state", "pixels.front", "pixels.wrist"):
                    assert np.array_equal(rows["next_obs." + k][j], rows_want[j][k]), (part, j, k)
            if b > a + 1:  # the chain: next_obs[t] == obs[t + 1] inside an episode
                ends = set((s.episodes(part)[:, 0] + s.episodes(part)[:, 1] - 1 - a).tolist())
                for j in range(b - a - 1):
                    if j not in ends:
                        assert np.array_equal(rows["next_obs.pixels.front"][j], rows["obs.pixels.front"][j + 1])

    check(st, with_open=True)  # the writer also knows the open episode's last next_obs
    st.commit()
    with ReplayStore.open(tmp_path / "s", mode="r") as ro:  # a reader sees ended episodes only
        check(ro, with_open=False)
        with pytest.raises(roborl.store.StoreError, match="still open"):
            ro.read_rows("online", ro.head_row("online"), ro.end_row("online"), ["next_obs.state"])
    st.close()  # the open episode is kept as interrupted
    with ReplayStore.open(tmp_path / "s", mode="r") as ro:
        check(ro, with_open=True)
        assert verify_store(tmp_path / "s")["ok"]
        # The sampler's mirror rebuilds the same next_obs (fast path == plain formula).
        s = Sampler(ro, SamplerConfig(), seed=0)
        for part in ("demo", "online"):
            a, b = ro.head_row(part), ro.end_row(part)  # type: ignore[arg-type]
            plain = ro.read_rows(part, a, b)  # type: ignore[arg-type]
            fast = s.next_obs(part, np.arange(a, b))
            for k in ("state", "pixels.front", "pixels.wrist"):
                assert torch.equal(fast[k], torch.as_tensor(plain["next_obs." + k])), (part, k)
            m = s.mirrors[part]
            assert m.data["obs.pixels.front"].dtype == torch.uint8 and not any(n.startswith("next") for n in m.data)


def test_crash_keeps_last_next_obs_of_open_episode(tmp_path: Path) -> None:
    """The open episode's rows are all flushed (chunk boundary) when the writer dies: the new WAL's
    restated last row still gives its next observation."""
    p = tmp_path / "s"
    st = ReplayStore.create(p, env_id="img", observation_space=OBS, action_space=ACT, chunk_rows=16)
    st.start_episode(_obs(0), "online")
    for t in range(16):
        st.add_step(action=[0, 0], reward=0.0, next_obs=_obs(t + 1), terminated=False, truncated=False)
    assert st.committed_rows("online") == 16
    st._release_lock()  # what kill -9 does to the lock; nothing else is written
    with ReplayStore.open(p, mode="a") as st2:
        assert st2.recovered["interrupted_episodes"] == ["online"]
        r = st2.read_rows("online", 0, 16)
        assert np.array_equal(r["next_obs.pixels.wrist"][-1], _obs(16)["pixels"]["wrist"])
        assert np.array_equal(r["next_obs.state"][:, 0], np.arange(1, 17, dtype=np.float32))


def _same_images(v: int, p: Path, steps: int = 256) -> ReplayStore:
    st = ReplayStore.create(p, env_id="img", observation_space=OBS, action_space=ACT, chunk_rows=32,
                            format_version=v, fsync="never")
    for e in range(steps // 64):
        st.start_episode(_obs(e * 100), "online")
        for t in range(64):
            st.add_step(action=[0, 0], reward=0.0, next_obs=_obs(e * 100 + t + 1), terminated=t == 63, truncated=False)
    st.close()
    return ReplayStore.open(p, mode="r")


def _data_bytes(p: Path) -> int:
    return sum(f.stat().st_size for f in (p / "data.zarr").rglob("*") if f.is_file())


def test_frames_stored_once_halves_image_bytes(tmp_path: Path) -> None:
    old, new = _same_images(1, tmp_path / "v1"), _same_images(2, tmp_path / "v2")
    ratio = _data_bytes(tmp_path / "v2") / _data_bytes(tmp_path / "v1")
    assert ratio < 0.56, ratio  # 2 frames per step -> 1 (+ 1 final frame per 64-step episode)
    a, b = old.read_rows("online", 0, 256), new.read_rows("online", 0, 256)
    assert list(a) == list(b) and all(np.array_equal(a[k], b[k]) for k in a if k not in ("timestamp", "log_prob"))
    # Merging converts either way: format 2 into format 1 and back reads the same.
    c = ReplayStore.create(tmp_path / "c", env_id="img", observation_space=OBS, action_space=ACT, format_version=1)
    assert c.merge_from(tmp_path / "v2", "demo") == 4
    d = c.read_rows("demo", 0, 256)
    assert all(np.array_equal(a[k], d[k]) for k in a if k not in ("timestamp", "log_prob"))
    old.close(), new.close(), c.close()


def _push_run_store(p: Path, version: int) -> ReplayStore:
    """What the main job builds: demos/push merged into the demo partition, then online Push episodes."""
    env = gym.make("roborl/Push-v0")
    st = ReplayStore.create(p, env_id="roborl/Push-v0", observation_space=env.observation_space,
                            action_space=env.action_space, online_capacity=150, format_version=version)
    st.merge_from(ROOT / "demos" / "push", partition="demo")
    for ep in range(4):  # Push truncates at its time limit; a short limit on two episodes ends them earlier
        ex = roborl.envs.expert(env, noise=0.5, seed=ep)
        obs, _ = env.reset(seed=ep)
        ex.reset()
        st.start_episode(obs, "online")
        for t in range(60 if ep % 2 else 500):
            act = ex(obs)
            obs, r, term, trunc, info = env.step(act)
            st.add_step(action=act, reward=r, next_obs=obs, terminated=term, truncated=trunc,
                        is_success=info["is_success"])
            if term or trunc:
                break
        else:
            st.end_episode()
    env.close()
    return st


def test_old_and_new_format_sample_identical_batches(tmp_path: Path) -> None:
    """configs/default.yaml's sampler (uniform, 50 % demos, n-step 3, HER 0.5) on demos/push (format 1)
    and on the same data in format 2: bit-identical batches; and both equal the stored next_obs."""
    demo = ReplayStore.open(ROOT / "demos" / "push", mode="r")
    assert demo.format_version == 1 and verify_store(ROOT / "demos" / "push")["ok"]
    cfg_doc = yaml.safe_load((ROOT / "configs" / "default.yaml").read_text())
    cfg = build(SamplerConfig, cfg_doc["store"]["sampler"])
    gamma = float(cfg_doc.get("sac", {}).get("gamma", 0.99))
    old, new = _push_run_store(tmp_path / "v1", 1), _push_run_store(tmp_path / "v2", 2)
    assert old.index("online").head_ep > 0  # eviction happened (capacity 150)
    rl = gym.make("roborl/Push-v0").unwrapped.goal_relabeler()
    s_old, s_new = Sampler(old, cfg, seed=7, relabeler=rl), Sampler(new, cfg, seed=7, relabeler=rl)
    for i in range(30):
        kw = {"demo_fraction": 1.0, "relabel": False} if i % 5 == 4 else {}
        a = s_old.sample(256, gamma=gamma, step=i * 1000, **kw)
        b = s_new.sample(256, gamma=gamma, step=i * 1000, **kw)
        for f in ("obs", "action", "reward", "next_obs", "discount", "weight", "index", "is_demo"):
            assert torch.equal(getattr(a, f), getattr(b, f)), (i, f)
    # The rebuilt next_obs is the stored one (format 1 keeps it in every row).
    for part in ("demo", "online"):
        a0, b0 = old.head_row(part), old.end_row(part)  # type: ignore[arg-type]
        stored = old.read_rows(part, a0, b0, ["next_obs"])["next_obs"]  # type: ignore[arg-type]
        assert torch.equal(s_old.next_obs(part, np.arange(a0, b0)), torch.as_tensor(stored))
        assert torch.equal(s_new.next_obs(part, np.arange(a0, b0)), torch.as_tensor(stored))
    old.close(), new.close(), demo.close()


def test_ram_budget_refuses_in_one_line(tmp_path: Path) -> None:
    st = ReplayStore.create(tmp_path / "s", env_id="img", observation_space=OBS, action_space=ACT,
                            online_capacity=100_000)
    per_row = 2 * 64 * 64 * 3 + 3 * 4 + 2 * 4
    with pytest.raises(UsageError, match="store.ram_budget_gb") as e:
        Sampler(st, SamplerConfig(), ram_budget_gb=100_000 * per_row / 1e9)  # frames + bookkeeping do not fit
    assert "\n" not in str(e.value) and "store.online_capacity" in str(e.value)
    s = Sampler(st, SamplerConfig(), ram_budget_gb=100_000 * per_row * 1.2 / 1e9)
    assert s.mirror_bytes_bound() <= 100_000 * per_row * 1.2
    st.close()

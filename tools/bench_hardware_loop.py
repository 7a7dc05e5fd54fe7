"""The whole hardware loop on the blind sim twin of Push, over robot:// on loopback. Prints JSON.

    MUJOCO_GL=osmesa nice -n 10 python tools/bench_hardware_loop.py --dir /tmp/hwl --rl-steps 3000

Every robot interaction goes through ``roborl robot serve --backend sim:roborl/Push-v0 --blind`` in a
subprocess (lockstep clock, ``env.kwargs.obs_mode=proprio+pixels``): the client sees proprio and
camera frames only, reward 0, no success flag. The server keeps the truth in its episode log
(``--log-dir``), read back with ``roborl robot stats LOGDIR --json``: every success figure here is
the server's, which the learner never saw.

1. **Demos through the server, teleop path.** :class:`roborl.teleop.collect.DemoCollector` (what
   ``roborl teleop`` runs) on the ``robot://`` env, driven by a scripted operator. The operator
   stands in for a person who *watches the scene*: it keeps a local shadow copy of the sim (same
   seed, stepped with the same commands; lockstep keeps both in step) and drives it with the task's
   scripted expert. It presses SUCCESS once the cube has sat at the goal for ``--hold`` steps (so
   the last ``--hold`` frames of a demo are success frames, HIL-SERL's recorded success frames),
   FAILURE when an episode runs out. ``--failures`` more episodes push the cube to a wrong spot
   4-8 cm off the goal (near misses: the hard negatives of a success detector), labelled FAILURE;
   one whose cube crossed the success zone anyway is DISCARDED and redone, as an operator who saw it
   would (kept, its success frames would be negatives: label noise where the detector is most tested).
2. **Reward classifier** (``roborl reward train``) on those stores only (``positives=final``,
   ``final_k=--hold``: the operator's labels; the threshold is calibrated on held-out *training*
   episodes with ``--target-fpr``). Its metrics come from ``roborl reward eval --json`` on a
   separate store of frames rendered by the same env with *per-step true* success labels
   (``positives=step``): noisy expert episodes that rest at the goal and near misses.
3. **SAC, residual over a BC base, from pixels** (``roborl train --config`` (default the shipped
   configs/pixels_push.yaml) with ``env.id=robot://...``, ``store.demos`` = the demos, ``reward.classifier``
   = the model, a frozen image encoder ``sac.encoder.weights``: by default the recipe's own encoder,
   pretrained per seed on the blind demos' frames and actions (contrastive, then BC: what the config
   does at startup, here on the full-length demos); ``--encoder PATH`` brings one). The same recipe
   against a non-blind twin with the sim's true reward (``--compare-true-reward``) gives the price of
   the learned reward. Each run gets its own server and episode log; the success curve is the
   server's per-episode success against env steps.
4. **Held-out evaluation** (``--final-eval N``, default 200): each run's final checkpoint, deterministic,
   on N episodes with reset seeds 20000.. through a fresh blind server; the server's log scores them.
   ``--eval-only`` re-evaluates finished runs without training them again.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ENV_ID = "roborl/Push-v0"
HELD_OUT_SEED = 20_000  # held-out episodes reset with seeds 20000.. (as tools/bench_sac.py)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def env_overrides(args: argparse.Namespace) -> list[str]:
    return ["env.kwargs.obs_mode=proprio+pixels", f"env.kwargs.image_size={args.image_size}",
            f"env.kwargs.cameras=[{','.join(args.cameras)}]", f"env.max_episode_steps={args.episode_steps}"]


def env_kwargs(args: argparse.Namespace, obs_mode: str = "proprio+pixels") -> dict[str, Any]:
    kw: dict[str, Any] = {"obs_mode": obs_mode, "max_episode_steps": args.episode_steps}
    if obs_mode != "state":
        kw.update(image_size=args.image_size, cameras=list(args.cameras))
    return kw


class Server:
    """``roborl robot serve`` in a subprocess: the blind (or seeing) lockstep twin with an episode log."""

    def __init__(self, args: argparse.Namespace, log_dir: Path, blind: bool = True) -> None:
        self.port = free_port()
        self.log_dir = log_dir
        cmd = [sys.executable, "-m", "roborl.cli", "robot", "serve", "--backend", f"sim:{ENV_ID}", "--port",
               str(self.port), "--sim-clock", "lockstep", "--hz", str(args.server_hz), "--log-dir", str(log_dir),
               *env_overrides(args)] + (["--blind"] if blind else [])
        self.err = open(log_dir.parent / f"{log_dir.name}.server.log", "w")
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=self.err, text=True)
        deadline = time.time() + 120
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"robot server exited ({self.proc.returncode}); see {self.err.name}")
            if "serving" in Path(self.err.name).read_text():
                break
            time.sleep(0.2)
        else:
            raise RuntimeError("robot server did not come up")
        self.url = f"robot://127.0.0.1:{self.port}"

    def stats(self) -> dict[str, Any]:
        out = subprocess.run([sys.executable, "-m", "roborl.cli", "robot", "stats", str(self.log_dir), "--json"],
                             capture_output=True, text=True, timeout=120, check=True)
        return json.loads(out.stdout)

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.err.close()


class _GoalOffset:
    """``env.unwrapped`` as the expert sees it, with the goal moved by ``offset`` (a near miss)."""

    def __init__(self, u: Any, offset: np.ndarray) -> None:
        self._u, self.offset = u, offset

    def task_state(self) -> dict[str, Any]:
        s = dict(self._u.task_state())
        s["goal"] = np.asarray(s["goal"]) + self.offset
        return s

    def __getattr__(self, name: str) -> Any:
        return getattr(self._u, name)


def near_miss_offset(state: dict[str, Any], rng: np.random.Generator) -> np.ndarray:
    """A wrong target 5-8 cm from the goal, sideways to the cube's path (so the push does not cross the
    3 cm success zone on its way): [3] metres."""
    d = np.asarray(state["goal"], np.float64)[:2] - np.asarray(state["object"], np.float64)[:2]
    n = np.array([-d[1], d[0]]) / max(float(np.linalg.norm(d)), 1e-6)
    side = rng.choice([-1.0, 1.0]) * rng.uniform(0.05, 0.08)
    return np.array([n[0] * side, n[1] * side, 0.0])


def make_operator(args: argparse.Namespace, layout: tuple[str, ...], seed0: int, near_miss: bool) -> Any:
    """The scripted operator device (see the module docstring)."""
    import gymnasium as gym

    import roborl  # noqa: F401 - registers the tasks
    from roborl.envs.expert import expert
    from roborl.teleop.device import Command, DeviceBase, Event, from_env_action

    class ShadowOperator(DeviceBase):
        name = "scripted-operator"

        def __init__(self) -> None:
            super().__init__()
            self.shadow = gym.make(ENV_ID, **env_kwargs(args, "state"))
            self.rng = np.random.default_rng(seed0 + 7)
            self.state = "idle"
            self.episode = 0
            self.ever_success: list[bool] = []
            self.drift_mm: list[float] = []
            self.discarded = 0

        def on_episode_start(self, obs: Any) -> None:
            self.shadow.reset(seed=seed0 + self.episode)
            self.exp = expert(self.shadow, noise=args.demo_noise, seed=seed0 + self.episode)
            if near_miss:
                self.exp.u = _GoalOffset(self.exp.u, near_miss_offset(self.shadow.unwrapped.task_state(), self.rng))
            self.episode += 1
            self.streak, self.steps, self.ever = 0, 0, False
            self.state = "running"
            self._check(obs)

        def on_episode_end(self, success: bool) -> None:
            self.ever_success.append(self.ever)
            self.state = "review"

        def _check(self, obs: Any) -> None:
            """The shadow's gripper position against the robot's (proprio[:3]): a drift means the copy is off."""
            ee = np.asarray(self.shadow.unwrapped.task_state()["ee"], np.float64)
            self.drift_mm.append(float(1000 * np.abs(np.asarray(obs["proprio"][:3], np.float64) - ee).max()))

        def read(self, obs: Any = None) -> Any:
            zero = np.zeros(6, np.float32)
            if self.state == "idle":
                return Command(motion=zero, events=(Event.START,), active=True)
            if self.state == "review":
                self.state = "idle"
                # A near miss that touched the goal anyway is redone, not kept as a negative.
                redo = near_miss and self.ever  # this episode's shadow touched the goal
                self.discarded += int(redo)
                return Command(motion=zero, events=(Event.DISCARD if redo else Event.FAILURE,), active=True)
            if obs is not None and self.steps:
                self._check(obs)
            if not near_miss and self.streak >= args.hold:
                self.state = "idle"
                self.ever_success.append(True)
                return Command(motion=zero, events=(Event.SUCCESS,), active=True)
            a = np.asarray(self.exp(None), np.float32)
            _, _, _, _, info = self.shadow.step(a)
            ok = bool(info.get("is_success", False))
            self.ever = self.ever or ok
            self.streak = self.streak + 1 if ok else 0
            self.steps += 1
            cmd = from_env_action(a, layout)
            return Command(motion=cmd.motion, grip=cmd.grip, events=(), active=True)

    return ShadowOperator()


def collect_through_server(args: argparse.Namespace, root: Path, name: str, episodes: int, seed0: int,
                           near_miss: bool, blind: bool = True) -> dict[str, Any]:
    """``episodes`` episodes through a blind (or seeing) server with the teleop collector -> store ``root/name``."""
    from roborl import config as C
    from roborl.store import ReplayStore
    from roborl.teleop.collect import DemoCollector, build_teleop_env
    from roborl.teleop.config import TeleopConfig
    from roborl.teleop.device import action_layout

    srv = Server(args, root / f"server_{name}", blind=blind)
    t0 = time.perf_counter()
    try:
        env = build_teleop_env(srv.url, seed=seed0)
        layout = action_layout(env)
        dev = make_operator(args, layout, seed0, near_miss)
        store = ReplayStore.open_or_create(root / name, env_id=srv.url, observation_space=env.observation_space,
                                           action_space=env.action_space)
        cfg = C.build(TeleopConfig, {"hz": 1000.0, "device": "scripted"})
        summary = DemoCollector(env, dev, store, cfg, layout=layout, seed=seed0).run(episodes)
        store.close()
        env.close()
    finally:
        srv.close()
    truth = srv.stats()  # after close: the server logs the episode still open at shutdown
    labelled = summary.successes
    true_ok = [bool(e["ever_success"]) for e in truth["per_episode"]]
    return {"store": str(root / name), "episodes": summary.kept, "labelled_success": labelled,
            "server_ever_success": int(sum(true_ok)), "mean_length": round(summary.mean_length, 1),
            "discarded_near_misses_that_succeeded": dev.discarded,
            "shadow_drift_mm_max": round(max(dev.drift_mm or [0.0]), 3), "seconds": round(time.perf_counter() - t0, 1)}


def collect_heldout(args: argparse.Namespace, path: Path, seed0: int) -> dict[str, Any]:
    """Frames of the same env with per-step true success: noisy expert episodes that rest at the goal
    after success (``max_episode_steps`` long) and near misses."""
    import gymnasium as gym

    import roborl  # noqa: F401
    from roborl.envs.expert import expert
    from roborl.store import ReplayStore

    env = gym.make(ENV_ID, **env_kwargs(args))
    st = ReplayStore.create(path, env_id=ENV_ID, observation_space=env.observation_space, action_space=env.action_space)
    rng = np.random.default_rng(seed0)
    pos = 0
    for ep in range(args.heldout_episodes):
        obs, _ = env.reset(seed=seed0 + ep)
        exp = expert(env, noise=args.heldout_noise, seed=seed0 + ep)
        if ep % 2 == 1:  # every other episode is a near miss
            exp.u = _GoalOffset(exp.u, near_miss_offset(env.unwrapped.task_state(), rng))
        st.start_episode(obs, "demo")
        done = False
        while not done:
            a = exp(obs)
            obs, r, term, trunc, info = env.step(a)
            st.add_step(action=a, reward=r, next_obs=obs, terminated=term, truncated=trunc,
                        is_success=bool(info["is_success"]))
            pos += int(bool(info["is_success"]))
            done = term or trunc
    n = st.num_steps("demo")
    st.close()
    env.close()
    return {"store": str(path), "episodes": args.heldout_episodes, "frames": n, "positive_frames": pos}


def member_metrics(clf: Path, heldout: Path) -> list[dict[str, Any]]:
    """Each ensemble member alone on the held-out frames (true per-step labels): the spread the mean damps."""
    import torch

    from roborl.reward.data import load_frames
    from roborl.reward.metrics import binary_metrics
    from roborl.reward.model import load_model

    model, _ = load_model(clf)
    fs = load_frames([heldout], model.cameras, rule="step", require_both=False)
    imgs = [torch.from_numpy(fs.images[c]) for c in model.cameras]
    with torch.inference_mode():
        probs = torch.sigmoid(model.member_logits(imgs)).numpy()  # [K, N]
    out = []
    for p in probs:
        row = {"roc_auc": binary_metrics(p, fs.labels, 0.5)["roc_auc"]}
        for thr in (0.5, 0.9):
            m = binary_metrics(p, fs.labels, thr)
            row[f"at_{thr}"] = {k: m[k] for k in ("recall", "false_positive_rate", "fp", "fn")}
        out.append(row)
    return out


def reward_demos(src: Path, dst: Path, clf: Path, confirm_steps: int, threshold: float | None = None) -> dict[str, Any]:
    """The demos as a classifier-rewarded run would have stored them: each demo is replayed through
    :class:`roborl.reward.wrapper.ClassifierReward`'s rule on its stored frames, so it ends at the first
    step where the classifier fires ``confirm_steps`` frames in a row (reward 1, terminated); a demo where
    it never fires keeps reward 0. A blind robot's demos have reward 0 everywhere: without this the
    critic would learn from demos that never pay."""
    from roborl.reward.model import RewardClassifier, obs_value
    from roborl.store import ReplayStore

    model = RewardClassifier(clf)
    thr = float(model.threshold if threshold is None else threshold)
    s = ReplayStore.open(src, mode="r")
    d = ReplayStore.create(dst, env_id=s.meta.get("env_id", "robot"), observation_space=s.observation_space,
                           action_space=s.action_space)
    fired = 0
    lengths = []
    for i in range(s.num_episodes("demo")):
        ep = s.read_episode("demo", i)
        n = len(ep["reward"])
        obs0 = _row(ep, "obs", 0)
        frames = {c: ep["next_obs." + c] for c in model.cameras}
        p = model.probs(frames, None)
        streak, end = 0, None
        for t in range(n):
            streak = streak + 1 if p[t] > thr else 0
            if streak >= confirm_steps:
                end = t
                break
        stop = n if end is None else end + 1
        d.start_episode(obs0, partition="demo")
        for t in range(stop):
            last = t == stop - 1
            d.add_step(action=ep["action"][t], executed_action=ep["executed_action"][t],
                       reward=1.0 if end is not None and last else 0.0, next_obs=_row(ep, "next_obs", t),
                       terminated=bool(end is not None and last), truncated=bool(end is None and last),
                       is_success=bool(end is not None and last))
        fired += int(end is not None)
        lengths.append(stop)
    s.close()
    d.close()
    return {"store": str(dst), "episodes": len(lengths), "classifier_fired": fired,
            "mean_length": round(float(np.mean(lengths)), 1) if lengths else 0.0}


def _row(ep: dict[str, np.ndarray], prefix: str, t: int) -> dict[str, Any]:
    """The nested Dict observation of row ``t`` from a store episode's flat ``prefix.<leaf>`` fields."""
    out: dict[str, Any] = {}
    for k, v in ep.items():
        if k.startswith(prefix + "."):
            node = out
            parts = k[len(prefix) + 1:].split(".")
            for part in parts[:-1]:
                node = node.setdefault(part, {})
            node[parts[-1]] = v[t]
    return out


def cli(*argv: str, timeout: float = 36000) -> subprocess.CompletedProcess:
    out = subprocess.run([sys.executable, "-m", "roborl.cli", "--quiet", *argv], capture_output=True, text=True,
                         timeout=timeout)
    if out.returncode != 0:
        raise RuntimeError(f"roborl {' '.join(argv[:2])} failed ({out.returncode}): {out.stderr[-2000:]}")
    return out


def classifier_to_sac_encoder(model_dir: Path, out: Path, cameras: list[str]) -> Path:
    """The classifier's conv encoder (downsample=1: DrQ's layout) as a frozen SAC encoder file."""
    import torch

    from roborl.learners.encoders import PixelEncoder, save_encoder
    from roborl.reward.model import load_model

    model, meta = load_model(model_dir)
    enc = model.encoders[0]
    if enc.downsample != 1:
        raise SystemExit("classifier_to_sac_encoder: needs a classifier trained with downsample=1 (DrQ's layout)")
    spec = {c: tuple(meta["camera_shapes"][c]) for c in cameras}
    pe = PixelEncoder(spec, shared=True, channels=enc.channels, layers=enc.layers, feature_dim=enc.feature_dim)
    conv = pe.convs["shared"]
    with torch.no_grad():
        for i, layer in enumerate(enc.convs):
            if isinstance(layer, torch.nn.Conv2d):
                conv.convs[i].weight.copy_(layer.weight)
                conv.convs[i].bias.copy_(layer.bias)
        conv.proj[0].weight.copy_(enc.fc.weight)
        conv.proj[0].bias.copy_(enc.fc.bias)
        conv.proj[1].weight.copy_(enc.ln.weight)
        conv.proj[1].bias.copy_(enc.ln.bias)
        x = torch.rand(2, 3, *enc.in_hw)
        assert torch.allclose(conv(x), enc(x), atol=1e-5), "converted encoder differs from the classifier's"
    save_encoder(out, pe)
    return out


def pretrain_encoder(args: argparse.Namespace, out: Path, episodes: int, steps: int, seed0: int = 200_000) -> dict[str, Any]:
    """A frozen SAC encoder pretrained in the sim with privileged targets: from each camera frame, regress
    the cube's and the goal's x, y and the gripper's x, y, z (task_state; standardised). Only this
    *pretraining* reads sim state; the encoder then runs frozen on the blind twin's frames. Episodes:
    the noisy expert, every third one a near miss, every third one random motion (frames the demos
    never show). SAC's own layout (roborl.learners.encoders.PixelEncoder), saved with save_encoder."""
    import gymnasium as gym
    import torch

    import roborl  # noqa: F401
    from roborl.envs.expert import expert
    from roborl.learners.encoders import PixelEncoder, save_encoder

    torch.set_num_threads(1)
    torch.manual_seed(0)
    env = gym.make(ENV_ID, **env_kwargs(args))
    cams = [f"pixels.{c}" for c in args.cameras]
    rng = np.random.default_rng(seed0)
    frames: dict[str, list[np.ndarray]] = {c: [] for c in cams}
    targets: list[np.ndarray] = []
    t0 = time.perf_counter()
    for ep in range(episodes):
        obs, _ = env.reset(seed=seed0 + ep)
        exp = expert(env, noise=0.3, seed=seed0 + ep)
        if ep % 3 == 1:
            exp.u = _GoalOffset(exp.u, near_miss_offset(env.unwrapped.task_state(), rng))
        done = False
        while not done:
            a = exp(obs) if ep % 3 != 2 else env.action_space.sample()
            obs, _, term, trunc, _ = env.step(a)
            st = env.unwrapped.task_state()
            for c in cams:
                frames[c].append(np.asarray(obs["pixels"][c.split(".", 1)[1]]))
            targets.append(np.concatenate([np.asarray(st["object"])[:2], np.asarray(st["goal"])[:2],
                                           np.asarray(st["ee"])[:3]]).astype(np.float32))
            done = term or trunc
    env.close()
    collect_s = time.perf_counter() - t0
    y = torch.as_tensor(np.stack(targets))
    mu, sd = y.mean(0), y.std(0).clamp_min(1e-3)
    y = (y - mu) / sd
    ims = {c: torch.as_tensor(np.stack(v)) for c, v in frames.items()}
    spec = {c: tuple(ims[c].shape[1:]) for c in cams}
    enc = PixelEncoder(spec, shared=True, pad=4)
    head = torch.nn.Linear(enc.out_dim, y.shape[1])
    opt = torch.optim.Adam(list(enc.parameters()) + list(head.parameters()), lr=3e-4)
    n = len(y)
    idx = np.random.default_rng(0).permutation(n)
    val, tr = idx[: n // 10], idx[n // 10:]
    t0 = time.perf_counter()
    for i in range(steps):
        b = torch.as_tensor(np.random.default_rng(i).choice(tr, 64))
        loss = torch.nn.functional.mse_loss(head(enc({c: ims[c][b] for c in cams}, augment=True)), y[b])
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        v = torch.as_tensor(val)
        val_mse = torch.nn.functional.mse_loss(head(enc({c: ims[c][v] for c in cams})), y[v], reduction="none").mean(0)
    save_encoder(out, enc)
    # Validation error in cm (object x, y; goal x, y): what the policy can read about the task from one frame.
    err_cm = (val_mse.sqrt() * sd * 100).tolist()
    return {"file": str(out), "frames": n, "episodes": episodes, "steps": steps, "collect_s": round(collect_s, 1),
            "train_s": round(time.perf_counter() - t0, 1), "final_loss": round(loss.item(), 4),
            "val_rmse_cm": {k: round(e, 2) for k, e in zip(["object_x", "object_y", "goal_x", "goal_y", "ee_x", "ee_y",
                                                              "ee_z"], err_cm)}}


def pretrain_blind_encoder(args: argparse.Namespace, root: Path, seed: int) -> dict[str, Any]:
    """The pixel recipe's encoder, pretrained on the demos collected through the blind server only
    (``roborl encoder pretrain``, as configs/pixels_push.yaml's comment does by hand): contrastive (tell the
    demo episodes apart) then BC from those weights, early-stopped on 4 held-out demos. Only frames and the
    operator's actions: no sim state. The full-length demos (not the classifier-cut ones) are used."""
    import yaml

    enc = yaml.safe_load(Path(args.config).read_text())["sac"]["encoder"]
    common = [f"arch={enc['arch']}", f"downsample={enc['downsample']}", f"feature_dim={enc['feature_dim']}",
              f"channels={enc['channels']}", f"layers={enc['layers']}", f"seed={seed}", "batch_size=64",
              f"val_episodes={enc['pretrain_val_episodes']}"]
    first, out = root / f"encoder_contrastive_s{seed}.safetensors", root / f"encoder_s{seed}.safetensors"
    t0 = time.perf_counter()
    if not first.is_file():
        cli("encoder", "pretrain", "--threads", "1", "--store", str(root / "demos"), "--out", str(first),
            "objective=contrastive", f"steps={enc['pretrain_steps']}", "lr=1e-3", f"pad={enc['pad']}",
            "eval_every=0", *common)
    t1 = time.perf_counter()
    if not out.is_file():
        bc = enc["pretrain_bc_steps"]
        cli("encoder", "pretrain", "--threads", "1", "--store", str(root / "demos"), "--out", str(out), "--init",
            str(first), "objective=bc", f"steps={bc}", "lr=3e-4", "pad=2", f"eval_every={max(1, bc // 8)}", *common)
    return {"file": str(out), "contrastive_s": round(t1 - t0, 1), "bc_s": round(time.perf_counter() - t1, 1)}


def success_curve(per_episode: list[dict[str, Any]], every: int) -> tuple[list[dict[str, Any]], int | None]:
    """Server success rate of the episodes ending in each ``every``-step window, and the first env
    step from which a trailing 20-episode window is >= 90 % successful (None if never)."""
    steps = np.cumsum([int(e["steps"]) for e in per_episode])
    ok = np.array([bool(e["success"]) for e in per_episode], float)
    curve = []
    for hi in range(every, int(steps[-1]) + every, every) if len(steps) else []:
        m = (steps > hi - every) & (steps <= hi)
        if m.any():
            curve.append({"env_steps": int(hi), "episodes": int(m.sum()), "success": round(float(ok[m].mean()), 3)})
    reach = None
    for i in range(19, len(ok)):
        if ok[i - 19:i + 1].mean() >= 0.9:
            reach = int(steps[i])
            break
    return curve, reach


def train_rl(args: argparse.Namespace, root: Path, name: str, seed: int, demos: Path, encoder: Path,
             classifier: Path | None) -> dict[str, Any]:
    import shutil

    for d in (root / name, root / f"server_{name}"):
        shutil.rmtree(d, ignore_errors=True)  # each run is fresh (its server gets a new port)
    srv = Server(args, root / f"server_{name}", blind=classifier is not None)
    t0 = time.perf_counter()
    try:
        over = [f"env.id={srv.url}", f"run.dir={root / name}", f"run.seed={seed}", "device=cpu",
                f"train.total_steps={args.rl_steps}", "train.eval_every=0", "train.eval_episodes=1",
                "train.threads=1", f"train.log_every={max(100, args.rl_steps // 20)}",
                f"train.checkpoint_every={args.rl_steps}", f"store.demos=[{demos}]", "store.allow_env_mismatch=true",
                f"store.online_capacity={max(args.rl_steps + 1000, 10000)}", f"sac.encoder.weights={encoder}",
                "sac.encoder.pretrain_steps=0", f"sac.encoder.cache_size={2 * (args.rl_steps + 5000)}"]
        if args.config == "legacy":  # the first recipe measured here (BENCHMARKS.md): DrQ-layout encoder, UTD 1
            over += ["store.sampler.kind=uniform", "store.sampler.demo_fraction=0.5", "store.sampler.n_step=3",
                     "sac.hidden=[256,256]", f"sac.batch_size={args.batch_size}", "sac.gamma=0.95",
                     "sac.reward_scale=10.0", "sac.init_alpha=0.1", "sac.utd=1", "sac.actor_every=2",
                     "sac.layer_norm=true", "sac.warmup_steps=0", f"sac.bc_pretrain_steps={args.bc_steps}",
                     "sac.residual=true", "sac.residual_beta=0.3", "sac.residual_beta_final=2.0",
                     f"sac.residual_ramp_steps={max(1, int(0.6 * args.rl_steps))}", "sac.encoder.shared=true",
                     "sac.encoder.arch=conv"]
        else:  # the shipped pixel recipe; its env section is replaced by the server's robot:// env
            over += list(args.rl_extra)
        if classifier is not None:
            thr = args.rl_threshold or json.loads((classifier / "reward_model.json").read_text())["threshold"]
            over += [f"reward.classifier={classifier}", f"reward.confirm_steps={args.confirm_steps}",
                     f"reward.threshold={min(max(thr, 1e-6), 1 - 1e-6)}"]
        else:
            over += ["env.terminate_on_success=true"]
        cfg_file = "/dev/null"
        if args.config != "legacy":
            import yaml

            recipe = yaml.safe_load(Path(args.config).read_text())
            recipe["env"] = {}  # the sim's kwargs (obs_mode, cameras) are the server's business now
            cfg_file = str(root / f"{name}.yaml")
            Path(cfg_file).write_text(yaml.safe_dump(recipe))
        out = cli("train", cfg_file, *over)
        summary = json.loads(out.stdout.strip().splitlines()[-1])
    finally:
        srv.close()
    truth = srv.stats()  # after close: the server logs the episode still open at shutdown
    per = [e for e in truth["per_episode"] if int(e["steps"]) > 0]  # a reset with no step is no episode
    train_eps = per[:-1] if per else per  # the last episode is the final evaluation (deterministic policy)
    curve, reach = success_curve(train_eps, max(250, args.rl_steps // 10))
    last = train_eps[-20:]
    return {"run_dir": str(root / name), "reward": "classifier" if classifier else "sim (true)", "seed": seed,
            "env_steps": summary["env_steps"], "episodes": len(train_eps), "wall_s": round(time.perf_counter() - t0, 1),
            "server_success_rate": truth["success_rate"],
            "server_success_last20": round(float(np.mean([bool(e["success"]) for e in last])), 3) if last else None,
            "steps_to_90pct_last20": reach, "curve": curve,
            "final_eval_episode_success": bool(per[-1]["success"]) if per else None}


def final_eval(args: argparse.Namespace, root: Path, name: str) -> dict[str, Any]:
    """The run's final checkpoint, deterministic, on ``--final-eval`` held-out episodes (reset seeds
    20000..) through a fresh *blind* server: no classifier, no early end, 50-step episodes. The server's
    log says whether the cube ever reached the goal (``ever_success``: what ``roborl eval`` and every
    other held-out figure in BENCHMARKS.md count, and what a run that ends episodes on success asks
    for) and whether it still sits there after the 50 steps (``success_at_end``: stricter, since the
    policy was never trained to hold the cube after the episode would have ended)."""
    import shutil

    from roborl.eval.episodes import wilson_interval

    log = root / f"eval_{name}"
    shutil.rmtree(log, ignore_errors=True)
    srv = Server(args, log, blind=True)
    t0 = time.perf_counter()
    try:
        out = cli("eval", str(root / name), "--env", srv.url, "--episodes", str(args.final_eval), "--seed",
                  str(HELD_OUT_SEED), "--json")
        client = json.loads(out.stdout.strip().splitlines()[-1])
    finally:
        srv.close()
    truth = srv.stats()
    per = [e for e in truth["per_episode"] if int(e["steps"]) > 0]
    n = len(per)
    ever = sum(bool(e["ever_success"]) for e in per)
    at_end = sum(bool(e["success"]) for e in per)
    return {"run": name, "episodes": n, "success": round(ever / n, 4) if n else None,
            "success_ci95": [round(x, 4) for x in wilson_interval(ever, n)],
            "success_at_end": round(at_end / n, 4) if n else None,
            "success_at_end_ci95": [round(x, 4) for x in wilson_interval(at_end, n)],
            "client_reward_mean": client.get("return_mean"), "wall_s": round(time.perf_counter() - t0, 1)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dir", default="/tmp/bench_hwloop", help="Work directory (stores, models, runs, server logs).")
    p.add_argument("--demos", type=int, default=20)
    p.add_argument("--failures", type=int, default=20, help="Near-miss episodes labelled FAILURE (classifier negatives).")
    p.add_argument("--heldout-episodes", type=int, default=10)
    p.add_argument("--hold", type=int, default=10, help="Success frames the operator waits for before SUCCESS.")
    p.add_argument("--demo-noise", type=float, default=0.1)
    p.add_argument("--heldout-noise", type=float, default=0.15)
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--cameras", nargs="+", default=["front", "wrist"])
    p.add_argument("--episode-steps", type=int, default=50)
    p.add_argument("--server-hz", type=float, default=200.0)
    p.add_argument("--clf-steps", type=int, default=800)
    p.add_argument("--clf-batch", type=int, default=64)
    p.add_argument("--clf-downsample", type=int, default=2, help="1 = DrQ's layout (its encoder can feed SAC).")
    p.add_argument("--clf-extra", nargs="*", default=[], help="More ClassifierTrainConfig key=value overrides.")
    p.add_argument("--target-fpr", type=float, default=0.02,
                   help="Calibrate the threshold on 20 %% of the training episodes to this FPR; < 0: keep 0.5, no split.")
    p.add_argument("--confirm-steps", type=int, default=2)
    p.add_argument("--rl-threshold", type=float, default=None, help="reward.threshold of the run (default: the model's).")
    p.add_argument("--encoder", default=None, help="A frozen SAC encoder file; 'pretrain': pretrain one in the sim "
                   "(pretrain_encoder, reads sim state); 'classifier': the classifier's encoder (needs "
                   "--clf-downsample 1); default: the recipe's contrastive -> BC encoder on the blind demos, per seed.")
    p.add_argument("--pretrain-episodes", type=int, default=40)
    p.add_argument("--pretrain-steps", type=int, default=600)
    p.add_argument("--rl-steps", type=int, default=3000)
    p.add_argument("--bc-steps", type=int, default=1000)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--config", default="configs/pixels_push.yaml",
                   help="The SAC recipe (a run config; its env is replaced by the server's); 'legacy': the first "
                   "override set measured here (UTD 1, batch --batch-size, DrQ-layout encoder).")
    p.add_argument("--rl-extra", nargs="*", default=[], help="More key=value overrides of the run config.")
    p.add_argument("--compare-true-reward", action="store_true")
    p.add_argument("--skip-rl", action="store_true")
    p.add_argument("--final-eval", type=int, default=200,
                   help="Held-out episodes for each run's final checkpoint through a fresh blind server (0 = off).")
    p.add_argument("--eval-only", action="store_true",
                   help="Skip training where the run directory already has a checkpoint; only the final evaluation.")
    args = p.parse_args()
    os.environ.setdefault("MUJOCO_GL", "osmesa")
    os.environ.setdefault("PYOPENGL_PLATFORM", os.environ["MUJOCO_GL"])
    root = Path(args.dir)
    root.mkdir(parents=True, exist_ok=True)
    res: dict[str, Any] = {"bench": "hardware_loop", "env": ENV_ID, "machine": platform.machine(),
                           "cpus": os.cpu_count(), "load_avg_start": os.getloadavg(),
                           "args": {k: v for k, v in vars(args).items()}}
    t_all = time.perf_counter()
    # 1. demos + near misses through the blind server (teleop path)
    if not (root / "demos").is_dir():
        res["demos"] = collect_through_server(args, root, "demos", args.demos, 0, near_miss=False)
    if args.failures and not (root / "failures").is_dir():
        res["failures"] = collect_through_server(args, root, "failures", args.failures, 1000, near_miss=True)
    if not (root / "heldout").is_dir():
        t0 = time.perf_counter()
        res["heldout"] = collect_heldout(args, root / "heldout", 100_000)
        res["heldout"]["seconds"] = round(time.perf_counter() - t0, 1)
    # 2. the classifier on the collected stores only
    clf = root / "classifier"
    if not (clf / "reward_model.json").is_file():
        t0 = time.perf_counter()
        stores = ["--store", str(root / "demos")] + (["--store", str(root / "failures")] if args.failures else [])
        cli("reward", "train", *stores, "--out", str(clf), "positives=final", f"final_k={args.hold}",
            f"steps={args.clf_steps}", f"batch_size={args.clf_batch}", f"downsample={args.clf_downsample}",
            *args.clf_extra,
            # Calibrated on the near-miss (FAILURE) episodes' frames only: frames of a demo before its labelled
            # tail can already show success (the operator holds before pressing SUCCESS).
            *([f"target_fpr={args.target_fpr}", "val_fraction=0.2", "calibrate_on=failed_episodes"]
              if args.target_fpr >= 0 else ["val_fraction=0"]),
            "threads=1")
        res["classifier_train_s"] = round(time.perf_counter() - t0, 1)
    meta = json.loads((clf / "reward_model.json").read_text())
    res["classifier_threshold"] = meta.get("threshold")
    keys = ("threshold", "n", "positives", "negatives", "accuracy", "precision", "recall", "false_positive_rate",
            "roc_auc", "fp", "fn")
    ev = json.loads(cli("reward", "eval", str(clf), "--store", str(root / "heldout"), "--json",
                        "--positives", "step").stdout)
    res["classifier_heldout"] = {k: ev.get(k) for k in keys}
    for thr in (0.5, 0.9):
        e = json.loads(cli("reward", "eval", str(clf), "--store", str(root / "heldout"), "--json", "--positives",
                           "step", "--threshold", str(thr)).stdout)
        res[f"classifier_heldout_at_{thr}"] = {k: e.get(k) for k in ("recall", "false_positive_rate", "fp", "fn")}
    if int(meta.get("arch", {}).get("ensemble", 1)) > 1:
        res["classifier_heldout_members"] = member_metrics(clf, root / "heldout")
    # 3. SAC residual over BC from pixels, classifier reward (and the sim's true reward)
    if not args.skip_rl:
        if args.encoder == "pretrain":
            enc = root / "encoder_pretrained.safetensors"
            if not enc.is_file():
                res["encoder_pretrain"] = pretrain_encoder(args, enc, args.pretrain_episodes, args.pretrain_steps)
        elif args.encoder == "classifier":
            enc = classifier_to_sac_encoder(clf, root / "encoder.safetensors", list(meta["cameras"]))
        elif args.encoder:
            enc = Path(args.encoder)
        else:
            enc = None  # per seed, below
        res["encoder"] = str(enc) if enc else "contrastive -> bc on the blind demos, per seed"
        res["runs"] = []
        if not (root / "demos_rewarded").is_dir():
            res["demos_rewarded"] = reward_demos(root / "demos", root / "demos_rewarded", clf, args.confirm_steps,
                                                 args.rl_threshold)
        if args.compare_true_reward and not (root / "demos_true").is_dir():
            res["demos_true"] = collect_through_server(args, root, "demos_true", args.demos, 0, near_miss=False,
                                                       blind=False)
        print(json.dumps({k: res.get(k) for k in ("encoder", "encoder_pretrain")}), file=sys.stderr, flush=True)
        for seed in args.seeds:
            enc_s = enc
            if enc_s is None:
                res.setdefault("encoder_pretrain", {})[seed] = pre = pretrain_blind_encoder(args, root, seed)
                enc_s = Path(pre["file"])
            names = [(f"rl_classifier_s{seed}", root / "demos_rewarded", clf)]
            if args.compare_true_reward:
                names.append((f"rl_true_s{seed}", root / "demos_true", None))
            for name, demo_store, model in names:
                trained = (root / name / "checkpoints" / "latest").exists()
                if not (args.eval_only and trained):
                    res["runs"].append(train_rl(args, root, name, seed, demo_store, enc_s, model))
                    print(json.dumps(res["runs"][-1]), file=sys.stderr, flush=True)
                if args.final_eval:
                    res.setdefault("final_eval", []).append(final_eval(args, root, name))
                    print(json.dumps(res["final_eval"][-1]), file=sys.stderr, flush=True)
    res["wall_s"] = round(time.perf_counter() - t_all, 1)
    res["load_avg_end"] = os.getloadavg()
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()

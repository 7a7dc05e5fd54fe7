"""``roborl teleop``: collect demonstrations with a teleop device into a replay store."""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import warnings
from typing import Any

HELP = "Collect demos by teleoperation (keyboard, gamepad, spacemouse, scripted) into a store."
DESCRIPTION = """\
Drive the robot with a device at a fixed control rate; each episode goes to the store's
demo partition only when you keep it (labelled success or failure); discard redoes it.
Re-running the same command after a crash resumes: --episodes is the total wanted in
the store. A live MuJoCo viewer opens when a display is available; otherwise a text
status line is shown.

Keyboard (default keys): w/s a/d r/f move x/y/z, q/e yaw, space toggles the gripper,
enter starts an episode, x stops it, then y = keep as success, n = keep as failure,
k = keep with the env's label, backspace/z = discard; esc quits.

Example:
  roborl teleop --env roborl/Push-v0 --device keyboard --store demos/my_push --episodes 20
  roborl teleop --env roborl/Reach-v0 --device scripted --store /tmp/reach --episodes 5 --hz 20
  roborl teleop --env roborl/Push-v0 --device gamepad --store d sensitivity=0.5 gamepad.index=1
  roborl teleop --env roborl/Push-v0 --device keyboard --store d teleop.hz=10 env.kwargs.obs_mode=proprio+pixels
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--env", required=True, help="Env id, e.g. roborl/Push-v0.")
    p.add_argument("--device", default=None, help="keyboard | gamepad | spacemouse | scripted (default: from config, keyboard).")
    p.add_argument("--store", required=True, help="Store directory (created, or appended to).")
    p.add_argument("--episodes", type=int, required=True, help="Episodes wanted in the demo partition (counts those already there).")
    p.add_argument("--hz", type=float, default=None, help="Control rate (default: the env's control rate, else config hz).")
    p.add_argument("--seed", type=int, default=0, help="Seed of the first episode's reset.")
    p.add_argument("--partition", choices=["demo", "online"], default="demo", help="Store partition.")
    p.add_argument("--config", default=None, help="YAML file with TeleopConfig keys (roborl/teleop/config.py).")
    p.add_argument("--json", action="store_true", help="Print the summary as one JSON object on stdout.")
    p.add_argument("overrides", nargs="*", help="key=value overrides: TeleopConfig keys, bare or teleop.-prefixed as in "
                                                 "run configs (teleop.sensitivity=0.5), and env.* keys as for roborl train "
                                                 "(env.kwargs.obs_mode=proprio+pixels).")


def _viewer(env: Any, mode: str) -> Any:
    if mode == "off" or (mode == "auto" and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))):
        return None
    u = env.unwrapped
    model, data = getattr(u, "model", None), getattr(u, "data", None)
    if model is None or data is None:
        return None
    try:
        import mujoco.viewer

        return mujoco.viewer.launch_passive(model, data, show_left_ui=False, show_right_ui=False)
    except Exception as e:  # no GL, no display: stay headless rather than fail
        print(f"roborl teleop: live view unavailable ({e}); running headless", file=sys.stderr)
        return None


def run(args: argparse.Namespace) -> int:
    from roborl.config import load, parse_overrides
    from roborl.errors import UsageError
    from roborl.store.store import ReplayStore
    from roborl.teleop.collect import DemoCollector, build_teleop_env, text_status
    from roborl.teleop.config import TeleopConfig
    from roborl.teleop.device import ZeroReportWarning, action_layout
    from roborl.teleop.registry import make_device

    if args.episodes <= 0:
        raise UsageError(f"--episodes: must be > 0, got {args.episodes}")
    if args.hz is not None and args.hz <= 0:
        raise UsageError(f"--hz: must be > 0, got {args.hz}")
    env_items = [o for o in args.overrides if o.startswith("env.")]
    tele_items = [o[len("teleop."):] if o.startswith("teleop.") else o for o in args.overrides if not o.startswith("env.")]
    cfg = load(TeleopConfig, args.config, tele_items)
    env_over = parse_overrides([o[len("env."):] for o in env_items])
    env = build_teleop_env(args.env, args.seed, env_over)
    store = device = viewer = None
    try:
        hz = args.hz
        if hz is None:
            dt = getattr(env.unwrapped, "control_dt", None)
            hz = 1.0 / float(dt) if dt else cfg.hz
        cfg = dataclasses.replace(cfg, hz=float(hz), device=args.device or cfg.device)
        layout = action_layout(env, cfg.action_layout)
        device = make_device(cfg, env, layout)
        device.open()
        store = ReplayStore.open_or_create(args.store, env_id=args.env, observation_space=env.observation_space,
                                           action_space=env.action_space)
        viewer = _viewer(env, cfg.viewer)
        status = text_status(sys.stderr)
        warnings.simplefilter("always", ZeroReportWarning)
        status(f"roborl teleop: {args.env} with {cfg.device} at {cfg.hz:g} Hz -> {args.store} ({args.partition}); "
               f"action = {list(layout)}")
        collector = DemoCollector(env, device, store, cfg, layout=layout, partition=args.partition, seed=args.seed,
                                  status=status, viewer=viewer)
        summary = collector.run(args.episodes)
    finally:
        if store is not None:
            store.close()
        if device is not None:
            device.close()
        if viewer is not None:
            try:
                viewer.close()
            except Exception:
                pass
        env.close()
    if sys.stderr.isatty():
        sys.stderr.write("\n")
    if args.json:
        rate = summary.rate
        print(json.dumps({"kept": summary.kept, "discarded": summary.discarded, "already": summary.already,
                          "total": summary.already + summary.kept, "success_rate": summary.success_rate,
                          "mean_length": summary.mean_length, "zero_warnings": summary.zero_warnings,
                          "quit": summary.quit, "rate": rate.to_dict() if rate else None}))
    else:
        for line in summary.lines():
            print(line)
    return 0

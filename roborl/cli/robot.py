"""`roborl robot serve|stats|estop`: run the robot server next to the hardware, or query it."""
from __future__ import annotations

import argparse
import json
import signal
import sys

HELP = "Serve a robot (or its sim twin) over ZeroMQ, or query a running server."
DESCRIPTION = (HELP + "\n\nExamples:\n"
               "  roborl robot serve --backend sim:roborl/Push-v0 --port 5555\n"
               "  roborl robot serve --backend sim:roborl/Push-v0 --host 0.0.0.0 --port 5555 --token $SECRET\n"
               "  roborl robot serve --backend sim:roborl/Push-v0 env.kwargs.obs_mode=proprio+pixels "
               "env.kwargs.image_size=64\n"
               "  roborl robot serve --backend sim:roborl/Push-v0 --blind --log-dir runs/blind\n"
               "  roborl eval runs/push/checkpoints --env robot://127.0.0.1:5555\n"
               "  roborl robot stats robot://127.0.0.1:5555\n\n"
               "Binding to anything but loopback requires --token (or $ROBORL_ROBOT_TOKEN).")


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="robot_cmd", metavar="ACTION", parser_class=type(p))
    s = sub.add_parser("serve", help="Run the robot server (fixed-rate loop, watchdog, safety, stats).",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    s.add_argument("--backend", required=True,
                   help="KIND:ARG (sim:roborl/Push-v0; kinds: roborl.robots.BACKENDS or the 'roborl.robots' "
                        "entry points) or package.module:factory[:ARG].")
    s.add_argument("overrides", nargs="*", metavar="env.KEY=VALUE",
                   help="sim backend: the same env.* overrides as `roborl train` (env.kwargs.obs_mode=proprio+pixels "
                        "env.kwargs.image_size=64 env.dr.enabled=true ...), so demos, the served twin and training "
                        "see one env.")
    s.add_argument("--require-limits", action="store_true",
                   help="Refuse a backend that declares no limits (Robot.limits) instead of warning.")
    s.add_argument("--port", type=int, default=5555, help="TCP port.")
    s.add_argument("--host", default="127.0.0.1", help="Bind address; non-loopback requires --token.")
    s.add_argument("--token", default=None, help="Shared secret (default: $ROBORL_ROBOT_TOKEN).")
    s.add_argument("--hz", type=float, default=None, help="Control rate (default: the robot's own).")
    s.add_argument("--sim-clock", choices=["realtime", "lockstep"], default="realtime",
                   help="sim backend: realtime twin, or advance physics only on fresh commands (reproducible eval).")
    s.add_argument("--seconds", type=float, default=None, help="Stop after this many seconds (default: until Ctrl-C/SIGTERM).")
    s.add_argument("--env-kwargs", default=None, metavar="JSON", help="sim backend: env constructor kwargs as JSON.")
    s.add_argument("--blind", action="store_true",
                   help="Serve what a real arm gives: proprio + camera images (sim twin default "
                        "obs_mode=proprio+pixels; state is refused), reward 0, no success flag, no privileged info.")
    s.add_argument("--log-dir", default=None, help="Keep the server's true per-episode log (episodes.jsonl) here.")
    for name, helptext in (("stats", "A running server's latency/jitter statistics (robot://HOST:PORT), or true "
                                     "success per episode from a server's --log-dir."),
                           ("estop", "Latch a running server's e-stop (cleared by the next reset).")):
        q = sub.add_parser(name, help=helptext)
        q.add_argument("url", help="robot://HOST:PORT" + (" or LOGDIR" if name == "stats" else ""))
        q.add_argument("--token", default=None, help="Shared secret (default: $ROBORL_ROBOT_TOKEN).")
        q.add_argument("--timeout", type=float, default=2.0, help="Deadline in seconds.")
        if name == "stats":
            q.add_argument("--json", action="store_true", help="LOGDIR: print JSON instead of a table.")


def _serve(args: argparse.Namespace) -> int:
    from roborl import config as C
    from roborl.errors import UsageError
    from roborl.robots import make_robot
    from roborl.robots.limits import limits_notice
    from roborl.robots.server import RobotServer, ServerConfig
    from roborl.robots.transport import resolve_token

    cfg = C.build(ServerConfig, {"host": args.host, "port": args.port, "token": resolve_token(args.token),
                                 "hz": args.hz, "blind": args.blind, "log_dir": args.log_dir}, "command line")
    options: dict = {}
    env_cfg = _env_overrides(args)
    if args.backend.startswith("sim:"):
        options["clock"] = args.sim_clock
        options["blind"] = args.blind
        if env_cfg is not None:
            options["env_config"] = env_cfg
        if args.env_kwargs:
            try:
                kw = json.loads(args.env_kwargs)
            except json.JSONDecodeError as e:
                raise UsageError(f"--env-kwargs is not JSON ({e.msg})") from None
            if not isinstance(kw, dict):
                raise UsageError("--env-kwargs must be a JSON object")
            options["env_kwargs"] = kw
    robot = make_robot(args.backend, **options)
    with robot:
        notice = limits_notice(robot, args.backend, args.require_limits)
        if notice:
            print(f"roborl robot: {notice}", file=sys.stderr, flush=True)
        server = RobotServer(robot, cfg, backend=args.backend)

        def _stop(signum, frame):  # noqa: ARG001
            server.stop()

        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)

        def _ready() -> None:
            auth = "token required" if cfg.token else "no token (loopback)"
            blind = ", blind" if cfg.blind else ""
            print(f"roborl robot: serving {args.backend} on {cfg.host}:{cfg.port} at {server.hz:g} Hz, {auth}{blind}",
                  file=sys.stderr, flush=True)

        stats = server.serve(max_seconds=args.seconds, ready=_ready)
    print(json.dumps(stats), flush=True)
    return 0


def _env_overrides(args: argparse.Namespace):
    """The ``env.*`` overrides -> an EnvConfig (None without overrides); one line for anything else."""
    from roborl import config as C
    from roborl.envs.config import EnvConfig
    from roborl.errors import UsageError

    if not args.overrides:
        return None
    over = C.parse_overrides(args.overrides)
    other = sorted(k for k in over if k != "env")
    if other:
        raise UsageError(f"roborl robot serve: only env.* overrides apply to a served robot, got {other[0]!r}")
    if not args.backend.startswith("sim:"):
        raise UsageError(f"roborl robot serve: env.* overrides configure a sim: backend, not {args.backend!r}")
    env = over.get("env")
    if not isinstance(env, dict):
        raise UsageError("roborl robot serve: 'env' needs sub-keys (env.kwargs.obs_mode=...)")
    sim_id = args.backend[len("sim:"):]
    if env.get("id", sim_id) != sim_id:
        raise UsageError(f"roborl robot serve: env.id={env['id']!r} contradicts --backend {args.backend!r}")
    return C.build(EnvConfig, dict(env, id=sim_id), "command line")


def _log_stats(args: argparse.Namespace) -> int:
    from roborl.robots.blind import format_summary, summarize

    s = summarize(args.url)
    print(json.dumps(s, indent=1) if args.json else format_summary(s))
    return 0


def _query(args: argparse.Namespace) -> int:
    from roborl.robots.client import SCHEME, parse_robot_url

    if args.robot_cmd == "stats" and not args.url.startswith(SCHEME):
        return _log_stats(args)
    from roborl.robots.transport import Channel, resolve_token

    host, port, opts = parse_robot_url(args.url)
    with Channel(host, port, token=resolve_token(args.token or opts.get("token")), timeout_s=args.timeout,
                 name="robot server") as ch:
        reply = ch.call(args.robot_cmd)
    print(json.dumps(reply.header.get("stats", {"ok": True}), indent=1))
    return 0


def run(args: argparse.Namespace) -> int:
    from roborl.errors import UsageError

    if args.robot_cmd == "serve":
        return _serve(args)
    if args.robot_cmd in ("stats", "estop"):
        return _query(args)
    raise UsageError("roborl robot: choose an action: serve, stats or estop (see roborl robot --help)")

"""`roborl report RUN --out report.md`: one readable Markdown page about a run.

Sections: summary (algo, env, steps, wall time, checkpoint), a fresh evaluation of the
latest checkpoint (same seeds as the training-time eval, unless ``--no-eval``), the eval
rounds logged during training, the learning curves (a PNG written next to the .md),
safety-clip and intervention statistics from the metrics, and the resolved config.
"""
from __future__ import annotations

import argparse
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

HELP = "Write a one-page Markdown report of a run: config, eval table, plots, clip and intervention statistics."
DESCRIPTION = (HELP + "\n\nExamples:\n  roborl report runs/push --out runs/push/report.md\n"
               "  roborl report runs/push --out report.md --no-eval   # only what the run logged")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", metavar="RUN", help="Run directory.")
    p.add_argument("--out", default="report.md", help="Markdown file to write; the curves PNG goes next to it.")
    p.add_argument("--episodes", type=int, default=None, metavar="N",
                   help="Episodes of the fresh eval (default: the run's train.eval_episodes).")
    p.add_argument("--no-eval", action="store_true", help="Skip the fresh evaluation of the latest checkpoint.")
    p.add_argument("--device", default="cpu", metavar="D", help="Device for the fresh evaluation.")
    p.add_argument("--env-imports", default="", metavar="MOD[,MOD]",
                   help="Modules the checkpoint's env.imports may import (never imported unless named here).")


def _f(x: Any, nd: int = 3) -> str:
    if x is None:
        return "-"
    if isinstance(x, bool):
        return str(x)
    if isinstance(x, (int, np.integer)):
        return str(int(x))
    if isinstance(x, (float, np.floating)):
        return "-" if not math.isfinite(float(x)) else f"{float(x):.{nd}f}"
    return str(x)


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(_f(c) if not isinstance(c, str) else c for c in r) + " |" for r in rows]
    return out


def _subsample(rows: list[dict[str, Any]], n: int = 20) -> list[dict[str, Any]]:
    if len(rows) <= n:
        return rows
    idx = np.unique(np.linspace(0, len(rows) - 1, n).round().astype(int))
    return [rows[i] for i in idx]


def safety_stats(rows: list[dict[str, Any]]) -> list[list[Any]]:
    """One row per logged metric about clips or interventions: ``[key, rows, mean, max, total, last]``."""
    keys = sorted({k for r in rows for k in r if ("clip" in k.lower() or "interven" in k.lower())
                   and "grad" not in k.lower() and "ratio" not in k.lower() and "frac" not in k.lower()
                   or k.lower().startswith("safety/")})
    out = []
    for k in keys:
        vals = np.array([float(r[k]) for r in rows if isinstance(r.get(k), (int, float)) and not isinstance(r.get(k), bool)])
        if vals.size == 0:
            continue
        out.append([f"`{k}`", int(vals.size), float(vals.mean()), float(vals.max()), float(vals.sum()), float(vals[-1])])
    return out


def write_report(run: str | Path, out: str | Path, *, episodes: int | None = None, fresh_eval: bool = True,
                 device: str = "cpu", env_imports: tuple[str, ...] = ()) -> Path:
    """Write the report for ``run`` to ``out`` (plus ``<stem>_curves.png`` and ``<stem>_training.png`` next to it)."""
    from roborl.checkpoint import find_checkpoint
    from roborl.errors import UsageError
    from roborl.eval.plots import plot_runs, plot_training
    from roborl.runs import read_metrics

    run = Path(run)
    if not run.is_dir():
        raise UsageError(f"run directory not found: {run}")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    rows = read_metrics(run)
    cfg_text = (run / "config.yaml").read_text() if (run / "config.yaml").exists() else None
    from roborl.eval.plots import read_run_config

    cfg = read_run_config(run)
    ckpt = find_checkpoint(run)

    lines: list[str] = [f"# Run report: `{run.name}`", ""]
    last = rows[-1] if rows else {}
    summary = [
        ["run directory", f"`{run}`"],
        ["algorithm", str(cfg.get("train", {}).get("algo", "-"))],
        ["env", f"`{cfg.get('env', {}).get('id', '-')}`"],
        ["seed", str(cfg.get("run", {}).get("seed", "-"))],
        ["env steps", _f(max((r.get("step", 0) for r in rows), default=None))],
        ["wall time", f"{_f(last.get('time'), 1)} s" if last.get("time") is not None else "-"],
        ["latest checkpoint", f"`{ckpt}`" if ckpt else "none"],
    ]
    lines += _table(["", ""], summary) + [""]

    # ------------------------------------------------------------------ fresh eval
    lines += ["## Evaluation of the latest checkpoint", ""]
    if fresh_eval and ckpt is not None:
        from roborl.eval.episodes import build_eval_env
        from roborl.eval.load import check_spaces, load_for_eval
        from roborl.eval.episodes import eval_seed, run_episodes

        policy, env_cfg, meta, step, _, obs_norm = load_for_eval(str(ckpt), device, allow_imports=env_imports)
        mcfg = meta.get("config", {})
        seed = eval_seed(int(mcfg.get("run", {}).get("seed", 0) or 0))
        n = episodes or int(mcfg.get("train", {}).get("eval_episodes", 10) or 10)
        env = build_eval_env(env_cfg, seed, obs_normalizer=obs_norm)
        try:
            check_spaces(env, meta, env_cfg.id, policy)
            res = run_episodes(policy, env_cfg, n, seed, env=env, progress=True).to_json()
        finally:
            env.close()
        lo, hi = res["success_ci95"]
        lines.append(f"Checkpoint step {step}, {n} deterministic episodes on seeds {seed}..{seed + n - 1} "
                     f"(the training-time eval seeds; reproduce with `roborl eval {ckpt} --json`).")
        lines.append("")
        lines += _table(["metric", "value"], [
            ["success rate", f"{res['success_rate']:.3f} (95% Wilson CI {lo:.3f}-{hi:.3f})"],
            ["return", f"{_f(res['return_mean'])} ± {_f(res['return_std'])}"],
            ["episode length", _f(res["length_mean"], 1)],
            ["time to success (cycle time)", f"{_f(res['time_to_success_mean'])} s" if res["time_to_success_mean"] is not None else "-"],
            ["safety clips / episode", _f(res["safety_clips_mean"], 2)],
        ])
    elif ckpt is None:
        lines.append("No checkpoint yet.")
    else:
        lines.append("Skipped (`--no-eval`).")
    lines.append("")

    # ------------------------------------------------------------------ logged eval rounds
    evals = [r for r in rows if r.get("eval/return") is not None or r.get("eval/success") is not None]
    lines += ["## Eval rounds during training", ""]
    if evals:
        shown = _subsample(evals)
        if len(shown) < len(evals):
            lines.append(f"{len(shown)} of {len(evals)} rounds shown.")
            lines.append("")
        lines += _table(["env steps", "wall time [s]", "return", "success"],
                        [[r.get("step"), _f(r.get("time"), 1), r.get("eval/return"), r.get("eval/success")] for r in shown])
    else:
        lines.append("No eval rounds logged.")
    lines.append("")

    # ------------------------------------------------------------------ curves
    lines += ["## Learning curves", ""]
    png = out.with_name(out.stem + "_curves.png")
    try:
        plot_runs([run], png, title=f"{run.name}")
        lines.append(f"![learning curves]({os.path.relpath(png, out.parent)})")
    except UsageError as e:
        lines.append(f"No curves: {e}")
    lines.append("")
    lines += ["## Training diagnostics", ""]
    diag = out.with_name(out.stem + "_training.png")
    try:
        plot_training([run], diag, title=f"{run.name}: training diagnostics")
        lines.append(f"![training diagnostics]({os.path.relpath(diag, out.parent)})")
    except UsageError as e:
        lines.append(f"No training diagnostics: {e}")
    lines.append("")

    # ------------------------------------------------------------------ safety
    lines += ["## Safety clips and interventions", ""]
    train_eps = [r for r in rows if r.get("train/return") is not None]
    clip_eps = [float(r["train/safety_clips"]) for r in train_eps if isinstance(r.get("train/safety_clips"), (int, float))]
    if clip_eps:
        a = np.array(clip_eps)
        lines.append(f"Training episodes: {len(a)}; safety-layer clips per episode: mean {a.mean():.2f}, "
                     f"max {a.max():.0f}, total {a.sum():.0f}; episodes with at least one clip: {np.mean(a > 0):.1%}.")
        lines.append("")
    stats = safety_stats(rows)
    if stats:
        lines += _table(["metric", "rows", "mean", "max", "total", "last"], stats)
    elif not clip_eps:
        lines.append("No clip or intervention metrics logged.")
    lines.append("")

    # ------------------------------------------------------------------ config
    lines += ["## Config", ""]
    lines += (["```yaml", cfg_text.rstrip(), "```"] if cfg_text else ["No config.yaml in the run directory."])
    lines.append("")
    from roborl.checkpoint import atomic_write_text

    atomic_write_text(out, "\n".join(lines))
    return out


def run(args: argparse.Namespace) -> int:
    from roborl.errors import UsageError

    if args.episodes is not None and args.episodes <= 0:
        raise UsageError(f"--episodes must be positive, got {args.episodes}")
    out = write_report(args.run, args.out, episodes=args.episodes, fresh_eval=not args.no_eval, device=args.device,
                       env_imports=tuple(m.strip() for m in args.env_imports.split(",") if m.strip()))
    print(f"wrote {out} (+ {out.with_name(out.stem + '_curves.png').name}, {out.with_name(out.stem + '_training.png').name})")
    return 0

"""The SAC runner: env stack -> persistent store -> RAM sampler -> learner, with eval and checkpoints.

The runner owns the loop (rsl_rl's split): the learner sees tensors only. Every step
goes through the full env stack, including the safety layer, and the store receives
the *executed* action (``info["executed_action"]``), so the critic learns about what
the robot actually did. Checkpoints hold the model, optimisers, normaliser, alpha, RNG
states, sampler state, counters and the store's commit generation; ``roborl train``
on the same ``run.dir`` resumes from the latest one and says so.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from roborl import config as C
from roborl.checkpoint import find_checkpoint, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from roborl.errors import UsageError
from roborl.learners.sac import SAC, SACPolicy
from roborl.runners.config import RunConfig
from roborl.runs import MetricsLogger, progress, resolve_device, write_config

EVAL_SEED_OFFSET = 10_000  # eval episodes use seeds run.seed + 10_000 + i: disjoint from training seeds


def eval_seed(cfg: RunConfig) -> int:
    return cfg.run.seed + EVAL_SEED_OFFSET


def resolve_demo_path(p: str) -> Path:
    """A demo store path from the config: as given (relative to the CWD), else relative to the repo root."""
    cand = Path(p)
    if cand.exists():
        return cand
    repo = Path(__file__).resolve().parents[2] / p
    if repo.exists():
        return repo
    raise UsageError(f"store.demos: demo store not found: {p}")


class Accumulator:
    """Sums metric tensors on the device; one host sync per log row instead of per update.

    Counts are per key: actor metrics arrive only every ``sac.actor_every`` updates.
    """

    def __init__(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.counts: dict[str, int] = {}

    def add(self, metrics: dict[str, torch.Tensor]) -> None:
        for k, v in metrics.items():
            if k in self.sums:
                self.sums[k] += v
                self.counts[k] += 1
            else:
                self.sums[k] = v.clone().float()
                self.counts[k] = 1

    def pop(self) -> dict[str, float]:
        if not self.sums:
            return {}
        stacked = torch.stack(list(self.sums.values())).cpu()  # the one sync
        out = {k: float(v) / self.counts[k] for k, v in zip(self.sums, stacked)}
        self.sums, self.counts = {}, {}
        return out


class SACRunner:
    """Owns one SAC run. Pieces are methods so the actor/learner split can reuse them."""

    def __init__(self, cfg: RunConfig, run_dir: Path, *, make_env: bool = True,
                 spaces: tuple[Any, Any] | None = None) -> None:
        """``make_env=False`` (a remote learner) builds no env; then ``spaces`` = (observation_space,
        action_space) avoids even a probe env (which, for ``robot://`` ids, would connect to the robot)."""
        from roborl.envs.config import build_env
        from roborl.store import ReplayStore, Sampler

        if cfg.env.normalize_obs:
            # Off-policy data must keep its meaning: stored observations normalised with statistics
            # that keep moving would silently change under the critic. SAC normalises inside the
            # learner with statistics fitted once (sac.normalize_obs) and saved in checkpoints.
            raise UsageError("env.normalize_obs: not supported with SAC (stored observations must stay raw); "
                             "use sac.normalize_obs instead")
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.device = resolve_device(cfg.device)
        self.seed = cfg.run.seed
        if cfg.train.threads and self.device == "cpu":
            torch.set_num_threads(cfg.train.threads)
        np.random.seed(self.seed)
        torch.manual_seed(self.seed)
        self.env = build_env(cfg.env, seed=self.seed) if make_env else None
        if self.env is not None or spaces is None:
            probe = self.env if self.env is not None else build_env(cfg.env, seed=self.seed, eval=True)
            obs_space, act_space = probe.observation_space, probe.action_space
            if probe is not self.env:
                probe.close()
        else:
            obs_space, act_space = spaces
        if len(getattr(obs_space, "shape", ()) or ()) != 1 or len(getattr(act_space, "shape", ()) or ()) != 1:
            raise UsageError(f"env.id: SAC needs flat Box observations and actions; {cfg.env.id} has "
                             f"{type(obs_space).__name__} observations (use state observations)")
        if not np.allclose(act_space.low, -1) or not np.allclose(act_space.high, 1):
            raise UsageError(f"env.id: {cfg.env.id} actions are not scaled to [-1, 1] (enable env action scaling)")
        self.obs_space, self.act_space = obs_space, act_space
        self.obs_dim, self.act_dim = int(obs_space.shape[0]), int(act_space.shape[0])

        relabeler = self._goal_relabeler()  # before any file is written: a misconfiguration leaves no run dir
        self.run_dir.mkdir(parents=True, exist_ok=True)
        store_path = Path(cfg.store.path) if cfg.store.path else self.run_dir / "store"
        fresh_store = not (store_path.exists() and any(store_path.iterdir()))
        self.store = ReplayStore.open_or_create(store_path, env_id=cfg.env.id, observation_space=obs_space,
                                                action_space=act_space, online_capacity=cfg.store.online_capacity)
        if fresh_store:
            for p in cfg.store.demos:
                self.store.merge_from(resolve_demo_path(p), partition="demo", allow_env_mismatch=cfg.store.allow_env_mismatch)
        self.sampler = Sampler(self.store, cfg.store.sampler, device=self.device, seed=self.seed,
                               relabeler=relabeler)
        self.intervention = None
        if self.env is not None and cfg.intervention.source != "none":
            from roborl.teleop.intervention import build_intervention

            self.intervention = build_intervention(cfg.intervention, self.env, cfg.teleop, seed=self.seed)
        self.learner = SAC(self.obs_dim, self.act_dim, cfg.sac, self.device)
        self.policy = SACPolicy(self.learner)
        self.step = 0
        self.episodes = 0
        self.learning_started = False
        self.wall_offset = 0.0
        self.rng = np.random.default_rng(self.seed)

    def _goal_relabeler(self) -> Any:
        """The env's HER goal relabeler when ``store.sampler.her_fraction`` > 0 (else None)."""
        cfg = self.cfg
        if cfg.store.sampler.her_fraction <= 0:
            return None
        key = "store.sampler.her_fraction"
        if cfg.env.terminate_on_success:
            # A success under the original goal ended the episode; under a relabelled goal it would not have.
            raise UsageError(f"{key}: HER cannot be combined with env.terminate_on_success")
        if cfg.env.obs_history or cfg.env.obs_last_actions:
            raise UsageError(f"{key}: HER cannot relabel the goals inside env.obs_history / env.obs_last_actions")
        if cfg.env.id.startswith("robot://"):
            raise UsageError(f"{key}: {cfg.env.id} has no goal to relabel (HER is for goal-conditioned sim tasks)")
        from roborl.envs.config import build_env

        env = self.env if self.env is not None else build_env(cfg.env, seed=self.seed, eval=True)
        try:
            fn = getattr(env.unwrapped, "goal_relabeler", None)
            relabeler = fn() if callable(fn) else None
        finally:
            if env is not self.env:
                env.close()
        if relabeler is None:
            raise UsageError(f"{key}: {cfg.env.id} has no goal to relabel (HER needs a goal-conditioned env with "
                             f"state observations: roborl/Reach-v0, Push-v0, PickPlace-v0); set {key}=0")
        return relabeler

    # ------------------------------------------------------------------ checkpoints
    def meta(self) -> dict[str, Any]:
        return {"algo": "sac", "config": C.to_dict(self.cfg), "obs_shape": [self.obs_dim], "act_shape": [self.act_dim],
                "env_id": self.cfg.env.id, "store_generation": int(self.store.generation), "step": self.step,
                "episodes": self.episodes}

    def save(self, elapsed: float) -> Path:
        state = {"learner": self.learner.full_state(), "sampler": self.sampler.state_dict(), "rng": rng_state(),
                 "runner_rng": self.rng.bit_generator.state,
                 "counters": {"step": self.step, "episodes": self.episodes, "learning_started": self.learning_started,
                              "wall_time": elapsed}}
        return save_checkpoint(self.run_dir, self.step, state, self.meta())

    def try_resume(self) -> bool:
        if find_checkpoint(self.run_dir) is None:
            return False
        state, meta, step = load_checkpoint(self.run_dir)
        if meta.get("algo") != "sac":
            raise UsageError(f"run.dir: {self.run_dir} holds a {meta.get('algo')!r} checkpoint, not SAC")
        if list(meta.get("obs_shape", [])) != [self.obs_dim] or list(meta.get("act_shape", [])) != [self.act_dim]:
            raise UsageError(f"run.dir: checkpoint spaces {meta.get('obs_shape')}/{meta.get('act_shape')} do not match "
                             f"env {self.cfg.env.id} ({self.obs_dim}/{self.act_dim})")
        try:
            self.learner.load_full_state(state["learner"])
        except (RuntimeError, KeyError, ValueError) as e:
            raise UsageError(f"run.dir: checkpoint does not fit this config's networks (sac.*): {str(e).splitlines()[0]}") from None
        self.sampler.load_state_dict(state["sampler"])
        set_rng_state(state["rng"])
        self.rng.bit_generator.state = state["runner_rng"]
        cnt = state["counters"]
        self.step, self.episodes = int(cnt["step"]), int(cnt["episodes"])
        self.learning_started = bool(cnt["learning_started"])
        self.wall_offset = float(cnt.get("wall_time", 0.0))
        return True

    # ------------------------------------------------------------------ learning pieces
    def start_learning(self) -> None:
        """Fit the observation normaliser on the data so far, then BC-pretrain on the demos."""
        c = self.cfg.sac
        if c.normalize_obs:
            n = min(20_000, max(1, self.store.num_steps("demo") + self.store.num_steps("online")))
            b = self.sampler.sample(n, gamma=c.gamma, n_step=1, relabel=False)
            self.learner.normalizer.fit(b.obs.float())
        has_demos = self.store.num_steps("demo") > 0
        if c.bc_pretrain_steps > 0 and has_demos:
            for _ in progress(range(c.bc_pretrain_steps), total=c.bc_pretrain_steps, desc="BC pretrain"):
                # BC targets are the demonstrator's actions for the goals it was given: no HER relabelling.
                b = self.sampler.sample(c.batch_size, gamma=c.gamma, demo_fraction=1.0, relabel=False)
                self.learner.bc_update(b.obs, b.action)
        elif c.residual:
            raise UsageError("sac.residual: residual mode needs demos (store.demos) and sac.bc_pretrain_steps > 0")
        if c.residual:
            self.learner.init_residual_actor()
        self.learning_started = True

    def update(self, acc: Accumulator) -> None:
        c = self.cfg.sac
        kind = self.cfg.store.sampler.kind
        for _ in range(c.utd):
            batch = self.sampler.sample(c.batch_size, gamma=c.gamma, step=self.step)
            metrics, td_abs = self.learner.update(batch)
            if kind != "uniform":
                self.sampler.update_priorities(batch.index, td_abs)
            acc.add(metrics)

    def act(self, obs: np.ndarray) -> np.ndarray:
        if not self.learning_started:
            return self.rng.uniform(-1.0, 1.0, size=self.act_dim).astype(np.float32)
        return self.learner.act(obs[None], deterministic=False)[0].cpu().numpy()

    def evaluate(self) -> dict[str, Any]:
        from roborl.eval.episodes import run_episodes

        self.learner.eval()
        res = run_episodes(self.policy, self.cfg.env, self.cfg.train.eval_episodes, seed=eval_seed(self.cfg))
        self.learner.train()
        return res.to_json()

    def ready_to_learn(self) -> bool:
        have = self.store.num_steps("demo") + self.store.num_steps("online")
        return self.step >= self.cfg.sac.warmup_steps and have >= self.cfg.sac.batch_size

    # ------------------------------------------------------------------ the loop
    def train(self, quiet: bool = False) -> dict[str, Any]:
        cfg, t = self.cfg, self.cfg.train
        resumed = self.try_resume()
        write_config(self.run_dir, cfg)
        logger = MetricsLogger(self.run_dir)
        logger.set_time_offset(self.wall_offset)
        if resumed:
            print(f"resumed from step {self.step}", flush=True)
        t0 = time.time() - self.wall_offset
        env = self.env
        assert env is not None
        from roborl.teleop.intervention import InterventionRecorder

        source = self.intervention
        recorder = InterventionRecorder()
        obs = self._reset_episode(env, source, recorder)
        ep_ret, ep_len, ep_clips, ep_success = 0.0, 0, 0, False
        acc = Accumulator()
        last_log = last_ckpt = self.step
        last_eval = self.step
        rate_t, rate_step, rate_upd = time.time(), self.step, 0
        last_eval_res: dict[str, Any] = {}
        bar = progress(total=t.total_steps, initial=self.step, desc="SAC")
        deadline = t0 + 60 * t.max_minutes if t.max_minutes else math.inf
        try:
            while self.step < t.total_steps and time.time() < deadline:
                if not self.learning_started and self.ready_to_learn():
                    self.start_learning()
                self.learner.set_progress(self.step)
                action = self.act(obs)
                # HIL-SERL takeover: the operator's action is executed and stored as the executed action.
                active, op_action = source.poll(obs) if source is not None else (False, None)
                command = op_action if active and op_action is not None else action
                next_obs, reward, terminated, truncated, info = env.step(command)
                executed = np.asarray(info.get("executed_action", command), dtype=np.float32)
                success = bool(info.get("is_success", False))
                self.store.add_step(action=action, executed_action=executed, reward=float(reward), next_obs=next_obs,
                                    terminated=bool(terminated), truncated=bool(truncated), is_success=success,
                                    intervention=bool(active))
                if source is not None:
                    recorder.step(obs=obs, action=action, executed_action=executed, reward=float(reward),
                                  next_obs=next_obs, terminated=bool(terminated), truncated=bool(truncated),
                                  intervention=bool(active), is_success=success)
                self.step += 1
                bar.update(1)
                ep_ret += float(reward)
                ep_len += 1
                ep_success = ep_success or success
                ep_clips += _count_clips(info)
                obs = next_obs
                if terminated or truncated:
                    self.episodes += 1
                    row = {"train/return": ep_ret, "train/success": float(ep_success), "train/length": ep_len,
                           "train/safety_clips": ep_clips, "train/episode": self.episodes}
                    if source is not None:
                        stats = source.episode_stats()
                        row.update({"train/intervention_rate": stats["intervention_rate"],
                                    "train/interventions": stats["interventions"]})
                        if self.cfg.intervention.copy_to_demo:
                            # Takeover segments also go to the demo partition (never evicted, sampled like demos).
                            row["train/intervention_segments"] = recorder.flush(self.store)
                    logger.log(self.step, row)
                    obs = self._reset_episode(env, source, recorder)
                    ep_ret, ep_len, ep_clips, ep_success = 0.0, 0, 0, False
                if self.learning_started:
                    self.update(acc)
                    rate_upd += self.cfg.sac.utd
                if self.step - last_log >= t.log_every:
                    now = time.time()
                    row = acc.pop()
                    row.update({"env_steps_per_s": (self.step - rate_step) / max(now - rate_t, 1e-9),
                                "updates_per_s": rate_upd / max(now - rate_t, 1e-9)})
                    logger.log(self.step, row, prefix="")
                    rate_t, rate_step, rate_upd = now, self.step, 0
                    last_log = self.step
                if t.eval_every and self.step - last_eval >= t.eval_every:
                    last_eval_res = self.evaluate()
                    last_eval = self.step
                    logger.log(self.step, {"eval/return": last_eval_res["return_mean"],
                                           "eval/success": last_eval_res["success_rate"],
                                           "eval/episodes": last_eval_res["episodes"]})
                    bar.set_postfix(success=f"{last_eval_res['success_rate']:.2f}")
                if self.step - last_ckpt >= t.checkpoint_every:
                    self.save(time.time() - t0)
                    last_ckpt = self.step
            # Final eval + checkpoint.
            if last_eval != self.step:
                last_eval_res = self.evaluate()
                logger.log(self.step, {"eval/return": last_eval_res["return_mean"],
                                       "eval/success": last_eval_res["success_rate"],
                                       "eval/episodes": last_eval_res["episodes"]})
            ckpt = self.save(time.time() - t0)
        finally:
            bar.close()
            logger.close()
        summary = {"run_dir": str(self.run_dir), "checkpoint": str(ckpt), "env_steps": self.step,
                   "episodes": self.episodes, "wall_s": round(time.time() - t0, 1),
                   "device": str(self.learner.device), "precision": self.learner.precision,
                   "eval_success": last_eval_res.get("success_rate"), "eval_return": last_eval_res.get("return_mean"),
                   "eval_seed": eval_seed(cfg)}
        return summary

    def _reset_episode(self, env: Any, source: Any, recorder: Any) -> np.ndarray:
        obs, _ = env.reset(seed=self.seed + self.episodes)
        if source is not None:
            source.reset(obs)
            recorder.start()
        self.store.start_episode(obs, partition="online")
        return obs

    def close(self) -> None:
        if self.intervention is not None:
            self.intervention.close()
        if self.env is not None:
            self.env.close()
        self.store.close()


def _count_clips(info: dict[str, Any]) -> int:
    s = info.get("safety")
    if isinstance(s, dict):
        return int(sum(int(v) for v in s.values() if isinstance(v, (int, np.integer, bool, np.bool_))))
    return 0


def run(cfg: RunConfig, run_dir: Path, role: str = "local", learner_addr: str | None = None) -> int:
    """Entry point for ``roborl train`` with ``train.algo: sac``."""
    if role != "local":
        from roborl.runners import distributed  # the actor/learner split

        return distributed.run(cfg, run_dir, role, learner_addr)
    runner = SACRunner(cfg, run_dir)
    try:
        summary = runner.train()
    finally:
        runner.close()
    import json

    print(json.dumps(summary), flush=True)
    return 0

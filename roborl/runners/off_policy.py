"""The off-policy runner: env stack -> persistent store -> RAM sampler -> learner, with eval and checkpoints.

The runner owns the loop (rsl_rl's split): the learner sees tensors only. It is built for one
``train.algo`` of kind ``off_policy`` in :data:`roborl.learners.LEARNERS`: the learner class and
its config section (``cfg.<section>``) come from the registry, and the runner talks to the
learner only through :class:`roborl.learners.base.OffPolicyLearner`. Every step goes through
:func:`roborl.envs.step.env_step` (full env stack including the safety layer; the store
receives the *executed* action, ``info["executed_action"]``, so the critic learns about what
the robot actually did). Checkpoints hold the model, optimisers, normaliser, alpha, RNG
states, sampler state, counters and the store's uuid, commit generation and online rows;
``roborl train`` on the same ``run.dir`` resumes from the latest one and says so. The resume
rule (:meth:`OffPolicyRunner.reconcile_with_store`): every online row in the store is a counted
env step, so rows written after the checkpoint (or by a run killed before its first one) are kept
as replay data and counted; a store older than, or other than, the checkpoint's is refused.

The hardware loop (docs/reward.md): ``reward.classifier`` wraps the env in the classifier reward
(its info fields become store fields), the operator's SUCCESS / FAILURE end the episode with that
label, ``env.reset_mode=manual`` waits for the operator's START before each episode (a timeout
saves everything and stops with one line), and misconfigurations are refused before the first step.

The remote learner and actor (:mod:`roborl.runners.distributed`) drive the same object through
its public methods: ``start_learning``, ``update``, ``advance_to``, ``acting_state`` /
``load_acting_state``.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from roborl import config as C
from roborl.checkpoint import find_checkpoint, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from roborl.envs.step import EpisodeStats, env_step
from roborl.errors import UsageError
from roborl.eval.episodes import eval_seed
from roborl.learners import LEARNERS, build_learner
from roborl.runners.config import RunConfig
from roborl.runs import Accumulator, MetricsLogger, ProgressLines, progress, resolve_device, write_config

__all__ = ["OffPolicyRunner", "Accumulator", "resolve_demo_path", "run", "FINETUNED_CLASSIFIER"]

# run.dir subdirectory of the classifier fine-tuned from operator labels (reward.finetune_every): the
# model given in reward.classifier is never overwritten.
FINETUNED_CLASSIFIER = "reward_classifier"
# Reset seeds of the random-action episodes recorded for encoder pretraining (sac.encoder.pretrain_random_episodes):
# far from the training (run.seed..), in-run eval and held-out ranges, so no pretraining frame shows an eval scene.
PRETRAIN_FRAMES_SEED = 50_000


def resolve_demo_path(p: str) -> Path:
    """A demo store path from the config: as given (relative to the CWD), else relative to the repo root."""
    cand = Path(p)
    if cand.exists():
        return cand
    repo = Path(__file__).resolve().parents[2] / p
    if repo.exists():
        return repo
    raise UsageError(f"store.demos: demo store not found: {p}")


class OffPolicyRunner:
    """Owns one off-policy run (``train.algo`` of kind ``off_policy``). Pieces are public methods so
    the actor/learner split (:mod:`roborl.runners.distributed`) drives the same code."""

    def __init__(self, cfg: RunConfig, run_dir: Path, *, with_env: bool = True,
                 spaces: tuple[Any, Any] | None = None) -> None:
        """``with_env=False`` (a remote learner) builds no env; then ``spaces`` = (observation_space,
        action_space) avoids even a probe env (which, for ``robot://`` ids, would connect to the robot)."""
        from roborl.envs.config import build_env
        from roborl.store import ReplayStore, Sampler

        self.algo = cfg.train.algo
        spec = LEARNERS[self.algo]
        if spec.kind != "off_policy":
            raise UsageError(f"train.algo: {self.algo!r} is {spec.kind}, not an off-policy learner")
        self.section = spec.section
        self.lcfg: Any = getattr(cfg, spec.section)  # the learner's config: batch_size, gamma, utd, warmup_steps
        if cfg.env.normalize_obs:
            # Off-policy data must keep its meaning: stored observations normalised with statistics
            # that keep moving would silently change under the critic. The learner normalises inside
            # with statistics fitted once (<section>.normalize_obs) and saved in checkpoints.
            raise UsageError(f"env.normalize_obs: not supported with {self.algo.upper()} (stored observations must "
                             f"stay raw); use {self.section}.normalize_obs instead")
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.device = resolve_device(cfg.device)
        self.seed = cfg.run.seed
        if cfg.train.threads:  # on CUDA too: the host side (sampling, acting) is small ops, and a default
            torch.set_num_threads(cfg.train.threads)  # pool per process oversubscribes the cores
        np.random.seed(self.seed)
        torch.manual_seed(self.seed)
        # Checks that need no env come before build_env: a robot:// env connects to the robot.
        if cfg.store.sampler.her_fraction > 0 and cfg.env.id.startswith("robot://"):
            raise UsageError(f"store.sampler.her_fraction: {cfg.env.id} has no goal to relabel (HER is for "
                             f"goal-conditioned sim tasks)")
        store_path = Path(cfg.store.path) if cfg.store.path else self.run_dir / "store"
        fresh_store = not (store_path.exists() and any(store_path.iterdir()))
        self._check_demo_needs(fresh_store)
        self.env = build_env(cfg.env, seed=self.seed) if with_env else None
        if self.env is not None or spaces is None:
            probe = self.env if self.env is not None else build_env(cfg.env, seed=self.seed, eval=True)
            obs_space, act_space = probe.observation_space, probe.action_space
            if probe is not self.env:
                probe.close()
        else:
            obs_space, act_space = spaces
        import gymnasium as gym

        # The learner's action kind (LearnerSpec.actions) must match the env's action space.
        self.discrete = spec.actions == "discrete"
        if self.discrete != isinstance(act_space, gym.spaces.Discrete):
            raise UsageError(f"env.id: {self.algo} needs {'Discrete' if self.discrete else 'Box'} actions; "
                             f"{cfg.env.id} has {type(act_space).__name__} actions")
        act_shape = (int(act_space.n),) if self.discrete else (getattr(act_space, "shape", ()) or ())
        # SAC reads Dict observations with cameras through its image encoder (sac.encoder): the
        # learner gets the spec {leaf: shape}, the store keeps the Dict as it is.
        self.obs_spec: dict[str, list[int]] | None = None
        if isinstance(obs_space, gym.spaces.Dict) and self.algo == "sac" and len(act_shape) == 1:
            from roborl.envs.spaces import leaves

            self.obs_spec = {lf.name.replace("/", "."): list(lf.shape) for lf in leaves(obs_space)}
        elif len(getattr(obs_space, "shape", ()) or ()) != 1 or len(act_shape) != 1:
            raise UsageError(f"env.id: {self.algo.upper()} needs flat Box observations and actions; {cfg.env.id} has "
                             f"{type(obs_space).__name__} observations (use state observations)")
        if not self.discrete and (not np.allclose(act_space.low, -1) or not np.allclose(act_space.high, 1)):
            raise UsageError(f"env.id: {cfg.env.id} actions are not scaled to [-1, 1] (enable env action scaling)")
        self.obs_space, self.act_space = obs_space, act_space
        self.obs_dim = int(obs_space.shape[0]) if self.obs_spec is None else 0
        self.act_dim = int(act_shape[0])  # Discrete: act_dim = n

        relabeler = self._goal_relabeler()  # before any file is written: a misconfiguration leaves no run dir
        self.reset_device: Any = None  # the operator device of manual resets (env.reset_mode=manual)
        self.reward_env: Any = None  # the ClassifierReward layer when reward.classifier is set
        self._labeler: Any = None  # ClassifierReward.label when reward.classifier is set
        self._owns_reset_device = False
        self.intervention = None
        if self.env is not None:
            self._wrap_hardware_loop()  # classifier reward, interventions, manual resets: checks before any write
        self.run_dir.mkdir(parents=True, exist_ok=True)
        extra: dict[str, Any] = {}
        fill: dict[str, Any] | None = None  # demos recorded without the classifier lack its fields
        self._info_fields: tuple[str, ...] = ()  # info keys env_step stores as extra store fields
        if cfg.reward.classifier:
            from roborl.reward.wrapper import STORE_FIELD_FILL, STORE_FIELDS

            extra = {"extra_fields": dict(STORE_FIELDS)}
            fill = dict(STORE_FIELD_FILL)
            self._info_fields = tuple(STORE_FIELDS)
        self.store = ReplayStore.open_or_create(store_path, env_id=cfg.env.id, observation_space=obs_space,
                                                action_space=act_space, online_capacity=cfg.store.online_capacity,
                                                **extra)
        if fresh_store:
            for p in cfg.store.demos:
                self.store.merge_from(resolve_demo_path(p), partition="demo", allow_env_mismatch=cfg.store.allow_env_mismatch,
                                      fill=fill)
        elif self._needs_demos() and self.store.num_steps("demo") == 0:
            self.store.close()
            raise UsageError(f"store.demos: {self._needs_demos()} needs demos but the store at {store_path} has an "
                             f"empty demo partition")
        self.sampler = Sampler(self.store, cfg.store.sampler, device=self.device, seed=self.seed,
                               relabeler=relabeler, ram_budget_gb=cfg.store.ram_budget_gb)
        self._pretrain_encoder()
        self.learner = build_learner(self.algo, self.obs_spec or self.obs_dim, self.act_dim, self.lcfg, self.device)
        if hasattr(self.learner, "set_sampler"):  # a learner that draws its own real batches (MBPO), resumed runs too
            self.learner.set_sampler(self.sampler.sample)

        self.policy = self.learner.as_policy()
        self._step = 0
        self._episodes = 0
        self._learning_started = False
        self.wall_offset = 0.0
        self._ckpt_rows = self._ckpt_eps = 0  # the store's online rows/episodes at the loaded checkpoint
        self._is_w_min: torch.Tensor | None = None  # smallest PER importance weight since the last log row
        self.rng = np.random.default_rng(self.seed)

    # ------------------------------------------------------------------ counters (read-only outside)
    @property
    def step(self) -> int:
        """Env steps taken (by this runner's env or, on a remote learner, by the actor's stream)."""
        return self._step

    @property
    def episodes(self) -> int:
        return self._episodes

    @property
    def learning_started(self) -> bool:
        return self._learning_started

    def advance_to(self, step: int) -> None:
        """Env steps taken elsewhere (a remote actor's stream position): the count never goes back."""
        self._step = max(self._step, int(step))

    def _needs_demos(self) -> str:
        """The learner option that needs a demo partition ('' when none does)."""
        c, sec = self.lcfg, self.section
        for name in ("residual", "bc_pretrain_steps", "bc_weight"):
            if getattr(c, name, 0):
                return f"{sec}.{name}"
        return ""

    def _check_demo_needs(self, fresh_store: bool) -> None:
        """Residual or BC with no demos would train on nothing (or fail at the warmup step, on a robot)."""
        need = self._needs_demos()
        if need and fresh_store and not self.cfg.store.demos:
            raise UsageError(f"store.demos: {need} needs demos (the demo partition would be empty); set store.demos")

    def _wrap_hardware_loop(self) -> None:
        """The outer env layers of a robot run, outermost last: the classifier reward
        (``reward.classifier``; its cameras are checked against the env here), the intervention
        source, and manual resets (``env.reset_mode=manual``; the operator device is the intervention
        device when there is one, else ``teleop.device``)."""
        cfg = self.cfg
        from roborl.reward.wrapper import wrap_reward

        model_dir = None
        if cfg.reward.classifier and cfg.reward.finetune_every and (self.run_dir / FINETUNED_CLASSIFIER).is_dir():
            model_dir = self.run_dir / FINETUNED_CLASSIFIER  # a resumed run keeps its fine-tuned classifier
        self.env = wrap_reward(self.env, cfg.reward, model_dir=model_dir)
        self.reward_env = self.env if cfg.reward.classifier else None  # the ClassifierReward layer
        self._labeler = getattr(self.env, "label", None) if cfg.reward.classifier else None  # operator verdicts
        if cfg.intervention.source != "none":
            from roborl.teleop.intervention import build_intervention

            self.intervention = build_intervention(cfg.intervention, self.env, cfg.teleop, seed=self.seed)
        if cfg.env.reset_mode == "manual":
            from roborl.teleop.config import ResetConfig
            from roborl.teleop.reset import apply_reset

            device = getattr(self.intervention, "device", None)
            if device is None:
                from roborl.teleop.device import action_layout
                from roborl.teleop.registry import make_device

                device = make_device(cfg.teleop, self.env, action_layout(self.env, cfg.teleop.action_layout))
                self._owns_reset_device = True
            self.reset_device = device
            self.env = apply_reset(self.env, ResetConfig(reset_mode="manual", reset_timeout_s=cfg.env.reset_timeout_s),
                                   device, prompt=lambda m: print(m, flush=True))

    def _pretrain_encoder(self) -> None:
        """``<section>.encoder.pretrain_steps`` > 0 with no ``weights``: pretrain the image encoder once on the
        demo partition (:func:`roborl.runners.pretrain.pretrain_encoder`; ``pretrain_objective``, then a BC
        stage when ``pretrain_bc_steps``), save it as ``<run dir>/encoder.safetensors`` (kept: a resume reuses
        it) and train with it frozen."""
        import dataclasses

        ec = getattr(self.lcfg, "encoder", None)
        if self.obs_spec is None or ec is None or ec.weights is not None or not getattr(ec, "pretrain_steps", 0):
            return
        path = self.run_dir / "encoder.safetensors"
        if not path.is_file():
            if self.store.num_steps("demo") == 0:
                raise UsageError(f"{self.section}.encoder.pretrain_steps: pretraining needs demos (store.demos)")
            from roborl.config import build
            from roborl.learners.config import EncoderPretrainConfig
            from roborl.runners.pretrain import LOSS_NAME, pretrain_encoder

            ae = ec.pretrain_objective == "autoencoder"
            label_free = ec.pretrain_objective in ("autoencoder", "contrastive")  # no actions needed
            if ec.pretrain_bc_steps and not label_free:
                raise UsageError(f"{self.section}.encoder.pretrain_bc_steps: a BC fine-tune follows a label-free "
                                 f"stage; set pretrain_objective=contrastive or autoencoder")
            if ec.pretrain_random_episodes and not label_free:
                raise UsageError(f"{self.section}.encoder.pretrain_random_episodes: random-action frames carry no "
                                 f"expert actions; they need pretrain_objective=autoencoder or contrastive")
            over: dict[str, Any] = {"objective": ec.pretrain_objective}
            if ae:
                over["recon_size"] = 64
            elif ec.pretrain_objective == "contrastive":
                over.update(lr=1e-3, batch_size=64)  # the measured setting (BENCHMARKS.md, "Pixel Push")
            if ec.pretrain_val_episodes:
                over.update(val_episodes=ec.pretrain_val_episodes, eval_every=max(1, ec.pretrain_steps // 8))
                if ec.pretrain_objective == "contrastive":
                    # Hold the episodes out (of a BC stage too), but keep the last weights: the held-out NCE over
                    # a few episodes is flat and noisy past the first few hundred steps and picked undertrained
                    # encoders (BENCHMARKS.md, "Pixel Push: an episode-contrastive encoder").
                    over["eval_every"] = 0
            pcfg = build(EncoderPretrainConfig, {"steps": ec.pretrain_steps, "shared": ec.shared, "channels": ec.channels,
                                                 "layers": ec.layers, "feature_dim": ec.feature_dim,
                                                 "downsample": ec.downsample, "pad": ec.pad or 4, "seed": self.seed,
                                                 "arch": ec.arch, **over},
                         source=f"{self.section}.encoder")
            stores: list[Any] = [self.store]
            if label_free and ec.pretrain_random_episodes:
                stores.append(self._random_frames(ec.pretrain_random_episodes))
            log = None if os.environ.get("ROBORL_QUIET") else (lambda m: print(m, flush=True))
            name = LOSS_NAME[ec.pretrain_objective]
            chain = bool(ec.pretrain_bc_steps) and label_free
            first = path.with_name("encoder_" + ec.pretrain_objective + ".safetensors") if chain else path
            meta = pretrain_encoder(stores, first, pcfg, device=self.device, log=log)
            print(f"encoder pretrained ({meta['objective']}) on {meta['demo_steps']} steps: {name} "
                  f"{meta[f'train_{name}']:.4f} ({meta['seconds']} s) -> {first}", flush=True)
            if chain:
                # Stage two, BC on the demos only, from the stage-one weights (encoder pretrain --init).
                # pad 2: a smaller shift than stage one's keeps the keypoints' sub-pixel placement of small objects.
                bcfg = dataclasses.replace(
                    pcfg, objective="bc", steps=ec.pretrain_bc_steps, pad=2, lr=3e-4, batch_size=64,
                    eval_every=max(1, ec.pretrain_bc_steps // 8) if ec.pretrain_val_episodes else 0)
                meta = pretrain_encoder([self.store], path, bcfg, device=self.device, init=first, log=log)
                print(f"encoder fine-tuned (bc) on {meta['demo_steps']} demo steps from {first.name}: bc_loss "
                      f"{meta['train_bc_loss']:.4f}, best step {meta['best_step']} ({meta['seconds']} s) -> {path}",
                      flush=True)
        self.lcfg = dataclasses.replace(self.lcfg, encoder=dataclasses.replace(ec, weights=str(path)))
        self.cfg = dataclasses.replace(self.cfg, **{self.section: self.lcfg})

    def _random_frames(self, episodes: int) -> Path:
        """Record ``episodes`` random-action episodes of a fresh env (reset seeds PRETRAIN_FRAMES_SEED + i, apart
        from training, in-run eval and held-out seeds) into ``<run dir>/pretrain_frames`` (its demo partition:
        what :func:`~roborl.runners.pretrain.load_demo_frames` reads). Resumable: a rerun tops it up."""
        from roborl.envs.config import build_env
        from roborl.runners.collect import collect_policy, record_episodes
        from roborl.store import ReplayStore

        where = self.run_dir / "pretrain_frames"
        env = build_env(self.cfg.env, seed=PRETRAIN_FRAMES_SEED + self.seed)
        try:
            st = ReplayStore.open_or_create(where, env_id=self.cfg.env.id, observation_space=env.observation_space,
                                            action_space=env.action_space)
            try:
                t0 = time.time()
                act = collect_policy("random", env, seed=PRETRAIN_FRAMES_SEED + self.seed)
                res = record_episodes(env, st, act, episodes=episodes, seed=PRETRAIN_FRAMES_SEED + 1000 * self.seed)
                if res.episodes:
                    print(f"encoder pretrain: recorded {res.episodes} random-action episodes ({res.steps} env steps, "
                          f"{time.time() - t0:.0f} s) -> {where}", flush=True)
            finally:
                st.close()
        finally:
            env.close()
        return where

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
        return {"algo": self.algo, "config": C.to_dict(self.cfg), "obs_shape": [self.obs_dim],
                "act_shape": [self.act_dim], "obs_spec": self.obs_spec, "env_id": self.cfg.env.id,
                "store_generation": int(self.store.generation),
                "store_uuid": str(self.store.meta.get("uuid", "")), "step": self._step, "episodes": self._episodes}

    def save(self, elapsed: float) -> Path:
        state = {"learner": self.learner.full_state(), "sampler": self.sampler.state_dict(), "rng": rng_state(),
                 "runner_rng": self.rng.bit_generator.state,
                 "counters": {"step": self._step, "episodes": self._episodes,
                              "learning_started": self._learning_started, "wall_time": elapsed,
                              # Where the store stood: a resume counts the rows written after this point.
                              "store_online_rows": int(self.store.end_row("online")),
                              "store_online_episodes": int(self.store.total_episodes("online"))}}
        return save_checkpoint(self.run_dir, self._step, state, self.meta())

    def try_resume(self) -> bool:
        if find_checkpoint(self.run_dir) is None:
            return False
        state, meta, step = load_checkpoint(self.run_dir)
        self._check_store_matches(meta, state.get("counters", {}), step)
        if meta.get("algo") != self.algo:
            raise UsageError(f"run.dir: {self.run_dir} holds a {meta.get('algo')!r} checkpoint, not {self.algo!r}")
        if list(meta.get("obs_shape", [])) != [self.obs_dim] or list(meta.get("act_shape", [])) != [self.act_dim] \
                or meta.get("obs_spec") != self.obs_spec:
            raise UsageError(f"run.dir: checkpoint spaces {meta.get('obs_shape')}/{meta.get('act_shape')} do not match "
                             f"env {self.cfg.env.id} ({self.obs_dim}/{self.act_dim})")
        try:
            self.learner.load_full_state(state["learner"])
        except (RuntimeError, KeyError, ValueError) as e:
            raise UsageError(f"run.dir: checkpoint does not fit this config's networks ({self.section}.*): "
                             f"{str(e).splitlines()[0]}") from None
        self.sampler.load_state_dict(state["sampler"])
        set_rng_state(state["rng"])
        self.rng.bit_generator.state = state["runner_rng"]
        cnt = state["counters"]
        self._step, self._episodes = int(cnt["step"]), int(cnt["episodes"])
        self._learning_started = bool(cnt["learning_started"])
        self.wall_offset = float(cnt.get("wall_time", 0.0))
        # Older checkpoints lack the store position: every env step of this runner is one online row.
        self._ckpt_rows = int(cnt.get("store_online_rows", self._step))
        self._ckpt_eps = int(cnt.get("store_online_episodes", self._episodes))
        return True

    def _check_store_matches(self, meta: dict[str, Any], cnt: dict[str, Any], step: int) -> None:
        """Refuse a store that changed under the checkpoint: another store (uuid), an older copy
        (commit generation below the saved one) or fewer online rows than when it was saved. Resuming
        on it would sample rows the learner never saw at the saved priorities, or miss rows it counted."""
        where = f"run.dir: the store at {self.store.path} does not match checkpoint step_{step}"
        fix = "restore the store it was saved with, or start a new run.dir"
        uid = meta.get("store_uuid")
        if uid and uid != str(self.store.meta.get("uuid", "")):
            raise UsageError(f"{where} (another store: uuid {self.store.meta.get('uuid')} != {uid}); {fix}")
        gen = meta.get("store_generation")
        if gen is not None and int(self.store.generation) < int(gen):
            raise UsageError(f"{where} (commit generation {self.store.generation} is older than the saved "
                             f"{int(gen)}); {fix}")
        rows = cnt.get("store_online_rows")
        if rows is not None and self.store.end_row("online") < int(rows):
            raise UsageError(f"{where} ({self.store.end_row('online')} online rows, {int(rows)} when saved); {fix}")

    def reconcile_with_store(self, resumed: bool) -> str:
        """Make the counters match the store, and say how (one line).

        The rule: every online row in the store is an env step this run took, and counts. Rows
        written after the latest checkpoint (or, without one, by a run killed before its first
        checkpoint), including an episode interrupted by the kill (closed as *interrupted* when the
        store reopened; it bootstraps at its last step), are kept as replay data and counted, so
        ``step == store.end_row("online")`` and ``episodes == store.total_episodes("online")``. The
        learner, sampler and RNG states are the checkpoint's; new rows enter the sampler with the
        maximum priority like any new row.
        """
        rows, eps = int(self.store.end_row("online")), int(self.store.total_episodes("online"))
        base_rows = self._ckpt_rows if resumed else 0
        base_eps = self._ckpt_eps if resumed else 0
        extra_rows, extra_eps = rows - base_rows, eps - base_eps
        ck_step = self._step
        self._step += extra_rows
        self._episodes += max(0, extra_eps)
        if resumed:
            msg = f"resumed from step {ck_step}"
            if extra_rows:
                msg += (f"; {extra_rows} newer rows in the store ({extra_eps} episodes, incl. any interrupted one) "
                        f"kept as replay data and counted: continuing at step {self._step}")
            return msg
        if extra_rows:
            return (f"no checkpoint in {self.run_dir}; {extra_rows} rows already in the store ({extra_eps} episodes, "
                    f"from a run stopped before its first checkpoint) kept as replay data and counted: "
                    f"starting at step {self._step}")
        return ""

    # ------------------------------------------------------------------ learning pieces
    def ready_to_learn(self, open_rows: int = 0) -> bool:
        """Warmup done and a batch's worth of rows, counting the ``open_rows`` of the episode in progress
        (see :meth:`publish_open_episode`)."""
        have = self.store.num_steps("demo") + self.store.num_steps("online")
        return self._step >= self.lcfg.warmup_steps and have + open_rows >= self.lcfg.batch_size

    def publish_open_episode(self, obs: Any, open_rows: int) -> bool:
        """Make the rows of the episode in progress sampleable when the ended ones are not a batch.

        The sampler reads ended episodes only (the store's rule), so on long-episode envs (dm_control:
        1,000 steps) learning would wait for the first episode to end, past the warmup step. The
        open episode is ended here as *interrupted* (its last row bootstraps from its ``next_obs``, as
        a mid-episode cut must) and a new store episode continues from ``obs``, the same env episode:
        the env, its seed and the episode statistics are untouched. Happens at most once, at the
        learning start; the store then holds one more episode than the env ran. Returns whether it cut.
        """
        have = self.store.num_steps("demo") + self.store.num_steps("online")
        if have >= self.lcfg.batch_size or open_rows <= 0:
            return False
        self.store.end_episode()
        self.store.start_episode(obs, partition="online")
        return True

    def start_learning(self) -> None:
        """The learner's start hook (normaliser fit, demo pretraining, ...) with the runner's sampler."""
        demo = self.store.num_steps("demo")
        self.learner.start_learning(self.sampler.sample, num_steps=demo + self.store.num_steps("online"),
                                    num_demo_steps=demo)
        self._learning_started = True

    def update(self, acc: Accumulator, n: int | None = None) -> int:
        """``n`` gradient updates (default ``<section>.utd``), each on a fresh batch; priorities are
        refreshed from the returned |TD| unless the sampler is uniform. Returns n."""
        c = self.lcfg
        n = c.utd if n is None else n
        prioritized = self.cfg.store.sampler.kind != "uniform"
        for _ in range(n):
            batch = self.sampler.sample(c.batch_size, gamma=c.gamma, step=self._step)
            metrics, td_abs = self.learner.update(batch)
            if prioritized:
                self.sampler.update_priorities(batch.index, td_abs)
                w = batch.weight.detach().min()  # stays on the device: no sync per update
                self._is_w_min = w if self._is_w_min is None else torch.minimum(self._is_w_min, w)
            acc.add(metrics)
        return n

    def per_stats(self) -> dict[str, float]:
        """Prioritised replay health (``store.sampler.kind`` per/lap; else {}): mean and max priority
        ``p`` over the live rows of both partitions (the sum tree's leaves, p = (|td| + eps)^alpha or
        max(|td|, floor)^alpha) and the smallest importance weight of a batch since the last call
        (per: (N P(i))^-beta / max; lap: 1). A max far above the mean with a tiny weight minimum means
        a few rows dominate the draws."""
        if self.cfg.store.sampler.kind == "uniform":
            return {}
        trees = [(m.tree, m.live) for m in self.sampler.mirrors.values() if m.tree is not None and m.live > 0]
        out: dict[str, float] = {}
        if trees:
            out["per/priority_mean"] = float(sum(t.total for t, _ in trees) / sum(n for _, n in trees))
            out["per/priority_max"] = float(max(t.leaves().max() for t, _ in trees))
        if self._is_w_min is not None:
            out["per/is_weight_min"] = float(self._is_w_min)
            self._is_w_min = None
        return out

    def act(self, obs: np.ndarray) -> np.ndarray:
        """Uniform random actions [A] until learning starts, then a stochastic policy sample."""
        if not self._learning_started:
            if self.discrete:
                return np.asarray(self.rng.integers(self.act_dim), dtype=np.int64)
            return self.rng.uniform(-1.0, 1.0, size=self.act_dim).astype(np.float32)
        # A Dict obs goes as it is (the learner adds the batch dim per leaf).
        return self.learner.act(obs if isinstance(obs, dict) else obs[None], deterministic=False)[0].cpu().numpy()

    def _behaviour_log_prob(self, obs: np.ndarray, action: np.ndarray) -> float | None:
        """log mu(action|obs) of the acting policy, kept in the store for Retrace (store.sampler.nstep_correction);
        None (not stored) otherwise or where the learner cannot say (uniform warmup: -A log 2)."""
        if self.cfg.store.sampler.nstep_correction != "retrace" or self.discrete:
            return None
        if not self._learning_started:
            return -self.act_dim * float(np.log(2.0))
        fn = getattr(self.learner, "behaviour_log_prob", None)
        return None if fn is None else fn(obs[None], action[None])

    def acting_state(self) -> dict[str, Any]:
        """The weights an actor needs (published by a remote learner)."""
        return self.learner.acting_state()

    def load_acting_state(self, state: dict[str, Any]) -> None:
        """An actor received weights: load them and act with the policy from now on."""
        self.learner.load_acting_state(state)
        self._learning_started = True

    def evaluate(self) -> dict[str, Any]:
        from roborl.eval.episodes import run_episodes

        self.learner.eval()
        res = run_episodes(self.policy, self.cfg.env, self.cfg.train.eval_episodes, seed=eval_seed(self.seed))
        self.learner.train()
        return res.to_json()

    # ------------------------------------------------------------------ acting
    def reset_episode(self, recorder: Any = None) -> np.ndarray:
        """Reset the env (seed run.seed + episodes) and open an online episode in the store."""
        assert self.env is not None
        if self._owns_reset_device and not getattr(self, "_reset_device_open", False):
            self.reset_device.open()
            self._reset_device_open = True
        obs, _ = self.env.reset(seed=self.seed + self._episodes)  # manual resets wait for START here
        if self._owns_reset_device:
            self.reset_device.on_episode_start(obs)
        if self.intervention is not None:
            self.intervention.reset(obs)
            if recorder is not None:
                recorder.start()
        self.store.start_episode(obs, partition="online")
        return obs

    def collect_step(self, obs: np.ndarray, stats: EpisodeStats, recorder: Any = None) -> Any:
        """Act on ``obs`` and take one :func:`~roborl.envs.step.env_step` into the store -> the Step.
        An ended episode is counted here; the caller logs it and calls :meth:`reset_episode`."""
        self.learner.set_progress(self._step)
        action = self.act(obs)
        s = env_step(self.env, obs, action, sink=self.store, source=self.intervention,
                     recorder=recorder if self.intervention is not None else None, stats=stats,
                     info_fields=self._info_fields, labeler=self._labeler, log_prob=self._behaviour_log_prob(obs, action))
        self._step += 1
        if s.done:
            self._episodes += 1
            if self.reset_device is not None:
                self.reset_device.on_episode_end(s.success)  # a device waits for the next START after this
        return s

    def maybe_finetune(self) -> dict[str, float]:
        """Every ``reward.finetune_every`` episodes, fine-tune the classifier on the operator's labelled
        frames kept since the last round (between episodes: the robot is not waiting on a step).
        The model goes to ``run.dir/reward_classifier`` and is reloaded. Returns log fields ({} when
        nothing ran)."""
        rc = self.cfg.reward
        if self.reward_env is None or not rc.finetune_every or self._episodes % rc.finetune_every:
            return {}
        n = int(self.reward_env.num_corrections)
        if n == 0:
            return {}
        t0 = time.time()
        meta = self.reward_env.finetune(steps=rc.finetune_steps, lr=rc.finetune_lr,
                                        out=self.run_dir / FINETUNED_CLASSIFIER)
        after = (meta or {}).get("finetunes", [{}])[-1].get("after", {})
        return {"reward/finetune_frames": float(n), "reward/finetune_s": time.time() - t0,
                "reward/finetune_accuracy": float(after.get("accuracy", float("nan")))}

    # ------------------------------------------------------------------ the loop
    def train(self, quiet: bool = False) -> dict[str, Any]:
        cfg, t = self.cfg, self.cfg.train
        resumed = self.try_resume()
        write_config(self.run_dir, cfg)
        logger = MetricsLogger(self.run_dir)
        logger.set_time_offset(self.wall_offset)
        note = self.reconcile_with_store(resumed)
        if note:
            print(note, flush=True)
        t0 = time.time() - self.wall_offset
        assert self.env is not None
        from roborl.teleop.intervention import InterventionRecorder

        source = self.intervention
        recorder = InterventionRecorder()
        ep = EpisodeStats()
        acc = Accumulator()
        last_log = last_ckpt = self._step
        last_eval = self._step
        rate_t, rate_step, rate_upd = time.time(), self._step, 0
        last_eval_res: dict[str, Any] = {}
        bar = progress(total=t.total_steps, initial=self._step, desc=self.algo.upper())
        lines = ProgressLines(t.total_steps, t.log_every_s, step=self._step)
        last_ret: float | None = None
        last_succ: float | None = None
        deadline = t0 + 60 * t.max_minutes if t.max_minutes else math.inf
        from roborl.teleop.reset import ResetAborted, ResetTimeout

        try:
            obs = self.reset_episode(recorder)
            while self._step < t.total_steps and time.time() < deadline:
                if not self._learning_started and self.ready_to_learn(open_rows=ep.length):
                    self.publish_open_episode(obs, ep.length)
                    self.start_learning()
                s = self.collect_step(obs, ep, recorder)
                bar.update(1)
                obs = s.next_obs
                if s.done:
                    row = {"train/return": ep.ret, "train/success": float(ep.success), "train/length": ep.length,
                           "train/safety_clips": ep.safety_clips, "train/episode": self._episodes}
                    if source is not None:
                        stats = source.episode_stats()
                        row.update({"train/intervention_rate": stats["intervention_rate"],
                                    "train/interventions": stats["interventions"]})
                        if cfg.intervention.copy_to_demo:
                            # Takeover segments also go to the demo partition (never evicted, sampled like demos).
                            row["train/intervention_segments"] = recorder.flush(self.store)
                    row.update(self.maybe_finetune())
                    logger.log(self._step, row)
                    last_ret, last_succ = ep.ret, float(ep.success)
                    obs = self.reset_episode(recorder)
                    ep.reset()
                n_upd = self.update(acc) if self._learning_started else 0
                rate_upd += n_upd
                if self._step - last_log >= t.log_every:
                    now = time.time()
                    row = acc.pop()
                    row.update(self.per_stats())
                    row.update({"env_steps_per_s": (self._step - rate_step) / max(now - rate_t, 1e-9),
                                "updates_per_s": rate_upd / max(now - rate_t, 1e-9)})
                    logger.log(self._step, row, prefix="")
                    rate_t, rate_step, rate_upd = now, self._step, 0
                    last_log = self._step
                if t.eval_every and self._step - last_eval >= t.eval_every:
                    last_eval_res = self.evaluate()
                    last_eval = self._step
                    logger.log(self._step, {"eval/return": last_eval_res["return_mean"],
                                            "eval/success": last_eval_res["success_rate"],
                                            "eval/episodes": last_eval_res["episodes"]})
                    bar.set_postfix(success=f"{last_eval_res['success_rate']:.2f}")
                lines.update(self._step, n_upd, ret=last_ret, success=last_succ,
                             eval_success=last_eval_res.get("success_rate"), force=last_eval == self._step)
                if self._step - last_ckpt >= t.checkpoint_every:
                    self.save(time.time() - t0)
                    last_ckpt = self._step
            # Final eval + checkpoint.
            if last_eval != self._step:
                last_eval_res = self.evaluate()
                logger.log(self._step, {"eval/return": last_eval_res["return_mean"],
                                        "eval/success": last_eval_res["success_rate"],
                                        "eval/episodes": last_eval_res["episodes"]})
            lines.update(self._step, ret=last_ret, success=last_succ,
                         eval_success=last_eval_res.get("success_rate"), force=True)
            ckpt = self.save(time.time() - t0)
        except (ResetTimeout, ResetAborted) as e:
            # Nobody reset the scene: keep everything (the store commits on close) and stop with one line.
            ckpt = self.save(time.time() - t0)
            self.store.commit()
            raise UsageError(f"{e}; saved {ckpt.name} at step {self._step}: `roborl train` on the same run.dir "
                             f"resumes") from None
        finally:
            bar.close()
            logger.close()
        return {"run_dir": str(self.run_dir), "checkpoint": str(ckpt), "env_steps": self._step,
                "episodes": self._episodes, "wall_s": round(time.time() - t0, 1),
                "device": str(self.learner.device), "precision": getattr(self.learner, "precision", "fp32"),
                "eval_success": last_eval_res.get("success_rate"), "eval_return": last_eval_res.get("return_mean"),
                "eval_seed": eval_seed(self.seed)}

    def close(self) -> None:
        if self.intervention is not None:
            self.intervention.close()
        if self._owns_reset_device and getattr(self, "_reset_device_open", False):
            self.reset_device.close()
        if self.env is not None:
            self.env.close()
        self.store.close()


def run(cfg: RunConfig, run_dir: Path, role: str = "local", learner_addr: str | None = None) -> int:
    """Entry point for ``roborl train`` with an off-policy ``train.algo``; ``role`` learner/actor is the
    split across machines (:mod:`roborl.runners.distributed`)."""
    if role != "local":
        from roborl.runners import distributed

        return distributed.run(cfg, run_dir, role, learner_addr, OffPolicyRunner)
    runner = OffPolicyRunner(cfg, run_dir)
    try:
        summary = runner.train()
    finally:
        runner.close()
    import json

    print(json.dumps(summary), flush=True)
    return 0

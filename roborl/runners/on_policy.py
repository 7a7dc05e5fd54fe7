"""The on-policy loop: vector-env rollouts -> learner update -> eval, checkpoints, metrics.

``run(cfg, run_dir, role, learner_addr)`` is registered as ``RUNNERS["ppo"]``; ``roborl train
configs/ppo_*.yaml`` dispatches here. The runner talks to its learner only through
:class:`roborl.learners.base.OnPolicyLearner` (``act``, ``value``, ``update``, ``observe``,
``set_lr``, ``policy``, state); the learner and its config section come from the registry
:data:`roborl.learners.LEARNERS` (every ``on_policy`` entry: PPO, REINFORCE, A2C, NPG, TRPO), and the
rollout settings (``n_envs``, ``rollout_steps``, ``vector``, ...) from that section (:func:`learner_section`).
The learner never sees envs or files; this module owns both.

Observations reach the learner as a dict of groups: ``{"policy": [N, O]}`` for a flat Box
observation space, one group per key of a Dict space of flat Boxes. With ``ppo.asymmetric`` the
privileged info keys (``ppo.privileged_keys``) become the ``"critic"`` group, which only the
critic reads.

Autoreset: the vector env uses ``AutoresetMode.SAME_STEP``. When env i's episode ends at
step t, ``step`` already returns the *reset* observation of the next episode, and the real
final observation is in ``info["final_obs"][i]`` (its info in ``info["final_info"]``). A
truncated step then bootstraps from ``V(final_obs)``; a terminated one does not bootstrap
(see :func:`roborl.learners.ppo.compute_gae`). NEXT_STEP mode would instead insert a dummy
transition after every episode end that has to be masked out of the batch.

Each env of the vector env is ``build_env(cfg.env, seed=run.seed + i)`` (make_env -> safety
-> rescale to [-1, 1] -> domain randomization); the eval env is ``build_env(cfg.env,
seed=eval_seed(run.seed), eval=True)``. PPO keeps observation normalization in its own model
(saved with every checkpoint), so the policy evaluates on raw observations.

Data parallel (``torchrun --nproc_per_node N -m roborl train ...`` or ``roborl train ... --nproc N``;
helpers in :mod:`roborl.runners.dist`): every rank runs this loop with its own vector env, env
seeds offset by ``SEED_STRIDE * rank``; the learner averages gradients across ranks (one all-reduce
per minibatch) and agrees on KL decisions; observation and reward statistics are combined across
ranks after each rollout, so every rank holds the same model. ``global_step`` counts the env steps
of all ranks. Only rank 0 logs, evaluates and writes checkpoints; every rank resumes from them.
"""
from __future__ import annotations

import functools
import math
import pathlib
import time
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from roborl import config as C
from roborl.checkpoint import find_checkpoint, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from roborl.envs.config import build_env
from roborl.envs.success import SUCCESS_KEYS, vector_success
from roborl.envs.vector import FastSyncVectorEnv
from roborl.envs.wrappers import skip_unread_info
from roborl.errors import UsageError
from roborl.eval.episodes import eval_seed, run_episodes
from roborl.learners.base import POLICY, PRIVILEGED, OnPolicyLearner, Rollout
from roborl.learners import LEARNERS, build_learner
from roborl.learners.networks import RunningMeanStd, combine_moments
from roborl.runners import dist as D
from roborl.runners.config import RunConfig
from roborl.runs import MetricsLogger, ProgressLines, progress, resolve_device, write_config

__all__ = ["run", "make_vec_env", "privileged_from_info", "OnPolicyTrainer", "ON_POLICY_LEARNERS", "learner_section"]


# The train.algo values this runner trains (the registry's on_policy entries).
ON_POLICY_LEARNERS: tuple[str, ...] = tuple(a for a, s in LEARNERS.items() if s.kind == "on_policy")


def _grad_steps(cfg: RunConfig) -> int:
    """The minibatch gradient steps of the whole run (per process): iterations x epochs x minibatches
    (``ppo.compile: auto`` compiles only for long runs)."""
    pc = learner_section(cfg)
    batch = pc.n_envs * pc.rollout_steps
    epochs, minibatch = getattr(pc, "epochs", 1), getattr(pc, "minibatch_size", batch)
    return -(-cfg.train.total_steps // batch) * epochs * max(1, batch // minibatch)


def learner_section(cfg: RunConfig) -> Any:
    """The config section of ``train.algo``'s learner (``cfg.ppo``, ``cfg.a2c``, ...). The runner reads its
    rollout settings there: n_envs, rollout_steps, vector, asymmetric, privileged_keys, norm_reward,
    gamma, anneal_lr, lr, torch_threads."""
    spec = LEARNERS[cfg.train.algo]
    if spec.kind != "on_policy":
        raise UsageError(f"train.algo: {cfg.train.algo!r} is {spec.kind}, not an on-policy learner")
    return getattr(cfg, spec.section)


# ============================================================================= env construction

class _KeepInfo(gym.Wrapper):
    """Pass on only the info keys in ``keep`` (the rest are dropped before the vector env sees them).

    Why: gymnasium's vector envs merge *every* info key of every env into per-key arrays each
    step (``VectorEnv._add_info``); on HalfCheetah that was ~25 us per env step, a quarter of
    the simulation time, for keys PPO never reads. PPO reads only success flags and the
    privileged keys of an asymmetric critic.

    ``skip_unread=True`` also asks the wrappers below not to build the entries this filter drops
    (:func:`roborl.envs.wrappers.skip_unread_info`: ``executed_action`` and the safety counts);
    the kept keys and everything else the env returns are the same either way (tests/envs/test_lean_info.py).
    """

    def __init__(self, env: gym.Env, keep: tuple[str, ...], skip_unread: bool = True) -> None:
        super().__init__(env)
        self._keep = frozenset(keep)
        self.skipped = skip_unread_info(env, self._keep) if skip_unread else []

    def reset(self, **kwargs: Any) -> tuple[Any, dict]:
        obs, info = self.env.reset(**kwargs)
        return obs, {k: v for k, v in info.items() if k in self._keep}

    def step(self, action: Any) -> tuple[Any, Any, bool, bool, dict]:
        obs, r, term, trunc, info = self.env.step(action)
        keep = self._keep
        # Plain formula: the comprehension (in info's key order). Usually no key is kept
        # (HalfCheetah reports no success flag), which the C-level disjointness test finds
        # without a Python loop over the info.
        if info.keys().isdisjoint(keep):
            return obs, r, term, trunc, {}
        return obs, r, term, trunc, {k: v for k, v in info.items() if k in keep}


def _env_fn(env_cfg: Any, seed: int, info_keys: tuple[str, ...] | None = None, skip_unread: bool = True) -> gym.Env:
    env = build_env(env_cfg, seed=seed)
    return env if info_keys is None else _KeepInfo(env, info_keys, skip_unread)


def make_vec_env(env_cfg: Any, n_envs: int, seed: int, vector: str = "sync",
                 info_keys: tuple[str, ...] | None = None, skip_unread: bool = True) -> gym.vector.VectorEnv:
    """``n_envs`` envs (env i built with ``seed + i``), autoreset in the SAME step (see module doc).

    ``info_keys``: pass only these info keys to the vector env (None = all; see :class:`_KeepInfo`).
    ``skip_unread``: with ``info_keys``, the wrappers do not build the entries that filter drops
    (same outputs; False = every wrapper reports, the reference path).
    """
    fns = [functools.partial(_env_fn, env_cfg, seed + i, info_keys, skip_unread) for i in range(n_envs)]
    mode = gym.vector.AutoresetMode.SAME_STEP
    if vector == "async":
        return gym.vector.AsyncVectorEnv(fns, autoreset_mode=mode)
    return FastSyncVectorEnv(fns, autoreset_mode=mode)


def _flat(v: Any, n: int) -> np.ndarray | None:
    """A vector-env info value (array [N, ...], or dict of such, nested) -> float32 [N, k]."""
    if isinstance(v, dict):
        parts = [_flat(v[k], n) for k in sorted(v) if not str(k).startswith("_")]
        parts = [p for p in parts if p is not None]
        return np.concatenate(parts, 1) if parts else None
    try:
        a = np.asarray(v, dtype=np.float32)
    except (TypeError, ValueError):
        return None
    if a.ndim == 0 or a.shape[0] != n:
        return None
    return a.reshape(n, -1)


def privileged_from_info(info: dict[str, Any], keys: tuple[str, ...], n: int) -> tuple[np.ndarray | None, np.ndarray]:
    """Privileged state from a vector env's info: ``([N, P] float32 or None, present mask [N] bool)``.

    Values of ``keys`` (e.g. the DR wrapper's ``dr_params`` dict, object poses) are flattened
    (dict entries in sorted key order) and concatenated. ``present[i]`` says env i reported them.
    """
    parts, present = [], np.zeros(n, dtype=bool)
    for k in keys:
        if k not in info:
            continue
        a = _flat(info[k], n)
        if a is None:
            continue
        parts.append(a)
        mask = info.get("_" + k)
        present |= np.asarray(mask, dtype=bool).reshape(n) if mask is not None else True
    if not parts:
        return None, present
    return np.concatenate(parts, 1), present


# ============================================================================= trainer

@dataclass
class _Timers:
    sim: float = 0.0
    inference: float = 0.0
    update: float = 0.0
    other: float = 0.0

    def as_dict(self) -> dict[str, float]:
        return {"sim": self.sim, "inference": self.inference, "update": self.update, "other": self.other}


@dataclass
class _EpisodeStats:
    returns: list[float] = field(default_factory=list)
    lengths: list[int] = field(default_factory=list)
    successes: list[bool] = field(default_factory=list)


def _obs_dims(space: gym.Space, env_id: str) -> dict[str, int]:
    """Observation group sizes of a flat Box or a Dict of flat Boxes; a one-line UsageError otherwise."""
    def flat(s: gym.Space) -> bool:
        return isinstance(s, gym.spaces.Box) and len(s.shape) == 1
    if flat(space):
        return {POLICY: int(space.shape[0])}
    if isinstance(space, gym.spaces.Dict) and space.spaces and all(flat(s) for s in space.spaces.values()):
        return {str(k): int(s.shape[0]) for k, s in space.spaces.items()}
    raise UsageError(f"env.id: the on-policy runner needs a flat Box observation space or a Dict of flat Boxes, "
                     f"{env_id!r} has {space}")


class OnPolicyTrainer:
    """Rollout collection + update for one vector env; the pieces ``run`` and ``tools/bench_ppo.py`` share.

    ``iterate()`` collects ``n_envs * rollout_steps`` env steps with batched inference, runs
    one learner update, refreshes the normalizers and returns the update metrics.
    """

    def __init__(self, cfg: RunConfig, device: str = "cpu", envs: gym.vector.VectorEnv | None = None,
                 reset_seed: int | None = None, world: D.World = D.World()) -> None:
        self.cfg, self.pcfg = cfg, learner_section(cfg)
        pc = self.pcfg
        self.device = torch.device(device)
        self.n = pc.n_envs
        self.world = world
        rank_seed = cfg.run.seed + D.SEED_STRIDE * world.rank
        keys = SUCCESS_KEYS + (tuple(pc.privileged_keys) if pc.asymmetric else ())
        self.envs = envs if envs is not None else make_vec_env(cfg.env, pc.n_envs, rank_seed, pc.vector, keys)
        obs_space, act_space = self.envs.single_observation_space, self.envs.single_action_space
        self.obs_dims = _obs_dims(obs_space, cfg.env.id)
        self._dict_obs = isinstance(obs_space, gym.spaces.Dict)
        if PRIVILEGED in self.obs_dims and pc.asymmetric:
            raise UsageError(f"env.id: {cfg.env.id!r} has an observation group {PRIVILEGED!r}, the name of the "
                             f"privileged group ppo.asymmetric builds from ppo.privileged_keys")
        if not isinstance(act_space, gym.spaces.Box) or len(act_space.shape) != 1:
            raise UsageError(f"env.id: {cfg.train.algo} needs a flat Box action space, {cfg.env.id!r} has {act_space}")
        if not (np.allclose(act_space.low, -1) and np.allclose(act_space.high, 1)):
            raise UsageError(f"env.id: {cfg.train.algo} expects actions rescaled to [-1, 1]; {cfg.env.id!r} has "
                             f"[{act_space.low.min()}, {act_space.high.max()}]")
        self.obs_dim = sum(d for k, d in self.obs_dims.items() if k != PRIVILEGED)
        self.act_dim = int(act_space.shape[0])
        seed = (cfg.run.seed if reset_seed is None else reset_seed) + D.SEED_STRIDE * world.rank
        obs, info = self.envs.reset(seed=[seed + i for i in range(self.n)])
        self.obs = self._to_torch(obs)
        priv, _ = privileged_from_info(info, pc.privileged_keys, self.n) if pc.asymmetric else (None, None)
        if pc.asymmetric and priv is None:
            raise UsageError(f"ppo.asymmetric: env {cfg.env.id!r} reports none of ppo.privileged_keys "
                             f"{list(pc.privileged_keys)} in its reset info (enable env.dr or set ppo.asymmetric=false)")
        self.priv_dim = 0 if priv is None else int(priv.shape[1])
        if priv is not None:
            self.obs[PRIVILEGED] = torch.as_tensor(priv, device=self.device)
            self.obs_dims[PRIVILEGED] = self.priv_dim
        self.learner: OnPolicyLearner = build_learner(cfg.train.algo, dict(self.obs_dims), self.act_dim, pc,
                                                      str(self.device), expected_steps=_grad_steps(cfg))
        self.reward_rms = RunningMeanStd(1)  # the checkpointed form of _rew_stats (mean, var, count)
        self._rew_stats = (0.0, 1.0, float(self.reward_rms.count))
        self._roll = [0.0, 0.0, 0.0]  # this rollout's [count, sum, sum of squares] of discounted returns (data parallel)
        self._disc_ret = np.zeros(self.n, dtype=np.float64)
        self._ep_ret = np.zeros(self.n, dtype=np.float64)
        self._ep_len = np.zeros(self.n, dtype=np.int64)
        self._ep_succ = np.zeros(self.n, dtype=bool)
        self.episodes = _EpisodeStats()
        self.timers = _Timers()
        self.global_step = 0
        self.iteration = 0
        T, N, d = pc.rollout_steps, self.n, self.device
        z = functools.partial(torch.zeros, device=d)
        self.buf = Rollout(obs={k: z(T, N, dim) for k, dim in self.obs_dims.items()}, actions=z(T, N, self.act_dim),
                           logp=z(T, N), mu=z(T, N, self.act_dim), values=z(T, N), rewards=z(T, N),
                           next_values=z(T, N), terminated=z(T, N), dones=z(T, N))

    def _to_torch(self, obs: Any, idx: np.ndarray | None = None) -> dict[str, torch.Tensor]:
        """A vector env's observation (array [N, O] or dict of such) -> groups {k: [N, O_k]} float32
        on the device (rows ``idx`` only when given)."""
        if not self._dict_obs:
            obs = {POLICY: obs}
        return {k: torch.as_tensor(np.asarray(v if idx is None else v[idx], dtype=np.float32), device=self.device)
                for k, v in obs.items()}

    def _final_obs(self, info: dict[str, Any], idx: np.ndarray) -> dict[str, torch.Tensor]:
        """The real final observations of envs ``idx`` (SAME_STEP autoreset keeps them per env in ``final_obs``)."""
        f = info["final_obs"]
        if not self._dict_obs:
            return {POLICY: torch.as_tensor(np.stack([f[i] for i in idx]), dtype=torch.float32, device=self.device)}
        return {k: torch.as_tensor(np.stack([f[i][k] for i in idx]), dtype=torch.float32, device=self.device)
                for k in self.obs_dims if k != PRIVILEGED}

    # ------------------------------------------------------------------ rollout
    def _scale_rewards(self, r: np.ndarray, done: np.ndarray) -> np.ndarray:
        """SB3 VecNormalize-style reward scaling: divide by the running std of the discounted return."""
        if not self.pcfg.norm_reward:
            return r
        self._disc_ret = self._disc_ret * self.pcfg.gamma + r
        # RunningMeanStd's own formula (combine_moments) on Python floats: a dozen torch ops on a
        # 1-element tensor per env step cost more than the whole numpy side of the step.
        x = self._disc_ret
        self._rew_stats = combine_moments(*self._rew_stats, float(x.mean()), float(x.var()), x.size)
        if self.world.distributed:
            rl = self._roll
            rl[0] += x.size
            rl[1] += float(x.sum())
            rl[2] += float(x @ x)
        self._disc_ret[done] = 0.0
        return np.clip(r / math.sqrt(self._rew_stats[1] + 1e-8), -10.0, 10.0)

    def collect(self) -> None:
        """Fill ``self.buf`` with ``rollout_steps`` steps of all envs.

        Rewards, terminations and dones are staged per step in float32 numpy arrays [T, N] and copied
        into the torch buffers once per rollout: three ``torch.as_tensor`` conversions and three
        indexed copies per step cost more than the numpy side of the step (the same float32 values:
        a float64 -> float32 cast rounds alike in numpy and torch). Episode bookkeeping for ended
        envs runs only on steps where some env ended.
        """
        pc, buf, learner, n = self.pcfg, self.buf, self.learner, self.n
        asym = self.priv_dim > 0
        tm = self.timers
        rew_start = self._rew_stats
        T = pc.rollout_steps
        rewards = np.zeros((T, n), dtype=np.float32)
        terminated = np.zeros((T, n), dtype=np.float32)
        dones = np.zeros((T, n), dtype=np.float32)
        obs_bufs = list(buf.obs.items())
        actions, logps, mus, values = buf.actions, buf.logp, buf.mu, buf.values
        act, step, perf = learner.act, self.envs.step, time.perf_counter
        ep_ret, ep_len, ep_succ = self._ep_ret, self._ep_len, self._ep_succ
        for t in range(T):
            t0 = perf()
            action, u, logp, mu, v = act(self.obs)
            for k, o in obs_bufs:
                o[t] = self.obs[k]
            actions[t], logps[t], mus[t], values[t] = u, logp, mu, v
            a_np = action.cpu().numpy()
            t1 = perf()
            obs, r, term, trunc, info = step(a_np)
            t2 = perf()
            done = term | trunc
            any_done = bool(done.any())
            r = np.asarray(r, dtype=np.float64)
            ep_ret += r
            ep_len += 1
            final_info = info.get("final_info", {}) if any_done else {}
            s = vector_success(info, n)
            if s is not None:
                ep_succ |= s & ~done  # for done envs, info is the *reset* info of the next episode
            if any_done:
                s_final = vector_success(final_info, n)
                if s_final is not None:
                    ep_succ |= s_final & done
            rewards[t] = self._scale_rewards(r, done)
            terminated[t] = term
            dones[t] = done
            new_obs = self._to_torch(obs)
            if asym:
                priv = self.obs[PRIVILEGED]
                p, present = privileged_from_info(info, pc.privileged_keys, n)
                if p is not None and present.any():
                    priv = priv.clone()
                    priv[torch.as_tensor(present)] = torch.as_tensor(p[present], device=self.device)
                new_obs[PRIVILEGED] = priv
            if any_done:
                # Truncated envs bootstrap from V(real final obs); the default next value (V of the
                # next step's obs) is filled in by iterate() for everything else.
                trunc_only = trunc & ~term
                if trunc_only.any():
                    idx = np.nonzero(trunc_only)[0]
                    f_obs = self._final_obs(info, idx)
                    if asym:
                        # DR params are per episode: the ending episode's
                        f_priv = self.obs[PRIVILEGED][torch.as_tensor(idx)]
                        fp, fpresent = privileged_from_info(final_info, pc.privileged_keys, n)
                        if fp is not None:
                            sel = fpresent[idx]
                            if sel.any():
                                f_priv[torch.as_tensor(sel)] = torch.as_tensor(fp[idx[sel]], device=self.device)
                        f_obs[PRIVILEGED] = f_priv
                    self._final_values[t, torch.as_tensor(idx)] = learner.value(f_obs)
                    self._has_final[t, torch.as_tensor(idx)] = True
                for i in np.nonzero(done)[0]:
                    self.episodes.returns.append(float(ep_ret[i]))
                    self.episodes.lengths.append(int(ep_len[i]))
                    self.episodes.successes.append(bool(ep_succ[i]))
                ep_ret[done], ep_len[done], ep_succ[done] = 0.0, 0, False
            self.obs = new_obs
            t3 = perf()
            tm.inference += (t1 - t0) + (t3 - t2)
            tm.sim += t2 - t1
        # Plain formula, per step: buf.rewards[t] = torch.as_tensor(scaled r, dtype=torch.float32), etc.
        buf.rewards.copy_(torch.from_numpy(rewards))
        buf.terminated.copy_(torch.from_numpy(terminated))
        buf.dones.copy_(torch.from_numpy(dones))
        self.global_step += pc.rollout_steps * n * self.world.size
        if pc.norm_reward and self.world.distributed:
            self._sync_reward_stats(rew_start)

    def _sync_reward_stats(self, start: tuple[float, float, float]) -> None:
        """Data parallel: the reward statistics after a rollout = ``start`` combined with the moments of
        every rank's discounted returns of that rollout (one all-reduce of [count, sum, sum of squares]).

        During a rollout each rank folds in its own returns step by step (as one process does) and
        also sums them in ``_roll``; afterwards all ranks replace their running stats with the same
        combination, so the statistics agree again before the update.
        """
        t = torch.tensor(self._roll, dtype=torch.float64, device=self.device)
        self._roll = [0.0, 0.0, 0.0]
        torch.distributed.all_reduce(t)
        n, s1, s2 = (float(x) for x in t)
        if n <= 0:
            self._rew_stats = start
            return
        mean = s1 / n
        var = max(s2 / n - mean * mean, 0.0)
        self._rew_stats = combine_moments(*start, mean, var, n)

    def iterate(self) -> dict[str, float]:
        """One iteration: collect, bootstrap, update, refresh normalizers. Returns update metrics."""
        T, N = self.pcfg.rollout_steps, self.n
        self._final_values = torch.zeros(T, N, device=self.device)
        self._has_final = torch.zeros(T, N, dtype=torch.bool, device=self.device)
        self.collect()
        t0 = time.perf_counter()
        buf = self.buf
        last_v = self.learner.value(self.obs)
        buf.next_values[:-1] = buf.values[1:]
        buf.next_values[-1] = last_v
        buf.next_values[self._has_final] = self._final_values[self._has_final]
        metrics = self.learner.update(buf)
        self.learner.observe(buf.obs)
        self.timers.update += time.perf_counter() - t0
        self.iteration += 1
        return metrics

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        rr = self.reward_rms
        for buf_, v in zip((rr.mean, rr.var, rr.count), self._rew_stats):
            buf_.fill_(v)
        return {"learner": self.learner.state_dict(), "reward_rms": self.reward_rms.state_dict(), "rng": rng_state(),
                "counters": {"global_step": self.global_step, "iteration": self.iteration,
                             "timers": self.timers.as_dict()}}

    def load_state_dict(self, st: dict[str, Any]) -> None:
        self.learner.load_state_dict(st["learner"])
        self.reward_rms.load_state_dict(st["reward_rms"])
        rr = self.reward_rms
        self._rew_stats = (float(rr.mean[0]), float(rr.var[0]), float(rr.count))
        set_rng_state(st["rng"])
        c = st["counters"]
        self.global_step, self.iteration = int(c["global_step"]), int(c["iteration"])
        self.timers = _Timers(**{k: float(v) for k, v in c["timers"].items()})

    def close(self) -> None:
        self.envs.close()


# ============================================================================= eval

def _evaluate(trainer: OnPolicyTrainer, cfg: RunConfig, eval_env: gym.Env) -> dict[str, float]:
    """Deterministic eval episodes with the shared ``roborl.eval.episodes.run_episodes`` (DR off)."""
    res = run_episodes(trainer.learner.policy(), cfg.env, cfg.train.eval_episodes, seed=eval_seed(cfg.run.seed),
                       deterministic=True, env=eval_env)
    return {"eval/return": res.return_mean, "eval/success": res.success_rate, "eval/length": res.length_mean}


# ============================================================================= run

def _dims(tr: OnPolicyTrainer) -> dict[str, Any]:
    """``meta["dims"]``: total actor obs size, action size, privileged size; per-group sizes for Dict observations."""
    dims: dict[str, Any] = {"obs": tr.obs_dim, "act": tr.act_dim, "priv": tr.priv_dim}
    if tr._dict_obs:
        dims["groups"] = {k: d for k, d in tr.obs_dims.items() if k != PRIVILEGED}
        if tr.priv_dim:
            dims["groups"][PRIVILEGED] = tr.priv_dim
    return dims


def _meta(cfg: RunConfig, tr: OnPolicyTrainer, wall: float) -> dict[str, Any]:
    return {"algo": cfg.train.algo, "config": C.to_dict(cfg), "env_id": cfg.env.id, "dims": _dims(tr),
            "global_step": tr.global_step, "iteration": tr.iteration, "wall_time": wall}


class _NoLogger:
    """Ranks other than 0 log nothing."""

    def set_time_offset(self, t: float) -> None:
        pass

    def log(self, step: int, row: dict[str, Any], prefix: str = "") -> None:
        pass

    def close(self) -> None:
        pass


def run(cfg: RunConfig, run_dir: pathlib.Path, role: str, learner_addr: str | None) -> int:
    """Train an on-policy learner for ``train.total_steps`` env steps in ``run_dir`` (resuming from its latest checkpoint).

    Under a distributed launcher (``WORLD_SIZE`` > 1) this process is one rank of a data-parallel job.
    """
    if role != "local":
        raise UsageError(f"--role {role}: {cfg.train.algo} is on-policy and runs locally only (use --role local)")
    pc = learner_section(cfg)
    run_dir = pathlib.Path(run_dir)
    world = D.world_from_env()
    main = world.is_main
    device = D.rank_device(resolve_device(cfg.device), world)
    if pc.torch_threads is not None:
        torch.set_num_threads(pc.torch_threads)
    rank_seed = cfg.run.seed + D.SEED_STRIDE * world.rank
    np.random.seed(rank_seed)
    torch.manual_seed(rank_seed)
    D.init(world, device)
    try:
        return _run(cfg, run_dir, world, main, device, rank_seed)
    except RuntimeError as e:
        # gloo reports a vanished peer as a plain RuntimeError naming its transport
        if not (world.distributed and (isinstance(e, torch.distributed.DistError)
                                       or any(k in str(e) for k in ("gloo", "NCCL", "peer")))):
            raise
        # Another rank went away mid-collective: exit quietly; the launcher reports the rank that failed.
        raise SystemExit(D.PEER_LOST_EXIT) from None
    finally:
        D.shutdown()


def _run(cfg: RunConfig, run_dir: pathlib.Path, world: D.World, main: bool, device: str, rank_seed: int) -> int:
    pc = learner_section(cfg)
    ck = find_checkpoint(run_dir) if run_dir.exists() else None
    state = meta = None
    if ck is not None:
        state, meta, _ = load_checkpoint(ck)
        if meta.get("algo") != cfg.train.algo:
            raise UsageError(f"run.dir: {run_dir} holds a {meta.get('algo')!r} checkpoint, not {cfg.train.algo}")
    # A resumed run must not replay the episodes of the first run: offset the reset seeds.
    resume_iter = int(meta["iteration"]) if meta else 0
    tr = OnPolicyTrainer(cfg, device, reset_seed=cfg.run.seed + 7919 * resume_iter, world=world)
    wall0 = 0.0
    if state is not None:
        if meta["dims"] != _dims(tr):
            raise UsageError(f"run.dir: checkpoint dims {meta['dims']} do not match env {cfg.env.id!r} "
                             f"(obs {tr.obs_dim}, act {tr.act_dim}, priv {tr.priv_dim})")
        tr.load_state_dict(state)
        if world.rank:  # the checkpoint holds rank 0's generator states; the others keep their own streams
            np.random.seed(rank_seed + 7919 * resume_iter)
            torch.manual_seed(rank_seed + 7919 * resume_iter)
        wall0 = float(meta.get("wall_time", 0.0))
        if main:
            print(f"resumed from step {tr.global_step}", flush=True)
    if main:
        write_config(run_dir, cfg)
    logger: MetricsLogger | _NoLogger = MetricsLogger(run_dir) if main else _NoLogger()
    logger.set_time_offset(wall0)
    eval_env = build_env(cfg.env, seed=eval_seed(cfg.run.seed), eval=True) if main else None
    total, tc = cfg.train.total_steps, cfg.train
    batch = pc.rollout_steps * pc.n_envs * world.size
    next_log = (tr.global_step // tc.log_every + 1) * tc.log_every
    next_ckpt = (tr.global_step // tc.checkpoint_every + 1) * tc.checkpoint_every
    next_eval = (tr.global_step // tc.eval_every + 1) * tc.eval_every if tc.eval_every else None
    t_start, steps_start = time.time(), tr.global_step
    bar = progress(total=total if main else 0, desc=cfg.train.algo, initial=min(tr.global_step, total))
    eval_row: dict[str, float] = {}
    last_eval_step = -1
    lines, last_row = ProgressLines(total, tc.log_every_s, step=tr.global_step), {}  # plain lines for logs
    try:
        while tr.global_step < total:
            if pc.anneal_lr:
                tr.learner.set_lr(pc.lr * max(1.0 - tr.global_step / total, 0.0))
            m = tr.iterate()
            bar.update(batch)
            if main and (tr.global_step >= next_log or tr.global_step >= total):
                next_log = (tr.global_step // tc.log_every + 1) * tc.log_every
                ep = tr.episodes
                row: dict[str, Any] = dict(m)
                if ep.returns:  # rank 0's episodes
                    row["train/return"] = float(np.mean(ep.returns))
                    row["train/length"] = float(np.mean(ep.lengths))
                    row["train/success"] = float(np.mean(ep.successes))
                    row["train/episodes"] = len(ep.returns)
                tr.episodes = _EpisodeStats()
                el = time.time() - t_start
                row["fps"] = (tr.global_step - steps_start) / max(el, 1e-9)  # env steps of all ranks
                tot_t = sum(tr.timers.as_dict().values()) or 1.0
                for k, v in tr.timers.as_dict().items():
                    row[f"time/{k}_frac"] = v / tot_t
                logger.log(tr.global_step, row)
                last_row = row if "train/return" in row else last_row
            wall = wall0 + time.time() - t_start
            out_of_time = tc.max_minutes is not None and (time.time() - t_start) / 60.0 >= tc.max_minutes
            if tc.max_minutes is not None:  # clocks differ: every rank stops after the same iteration
                out_of_time = D.agree_any(out_of_time, tr.device)
            if next_eval is not None and tr.global_step >= next_eval:
                next_eval = (tr.global_step // tc.eval_every + 1) * tc.eval_every
                if main:
                    eval_row = _evaluate(tr, cfg, eval_env)
                    logger.log(tr.global_step, eval_row)
                last_eval_step = tr.global_step
            if main:
                lines.update(tr.global_step, getattr(pc, "epochs", 1) * max(1, batch // getattr(pc, "minibatch_size", batch)),
                             ret=last_row.get("train/return"), success=last_row.get("train/success"),
                             eval_success=eval_row.get("eval/success"), force=last_eval_step == tr.global_step)
            if tr.global_step >= next_ckpt or out_of_time:
                next_ckpt = (tr.global_step // tc.checkpoint_every + 1) * tc.checkpoint_every
                if main:
                    save_checkpoint(run_dir, tr.global_step, tr.state_dict(), _meta(cfg, tr, wall))
            if out_of_time:
                if main:
                    print(f"train.max_minutes reached at step {tr.global_step}; checkpoint saved", flush=True)
                break
        else:
            if main:
                if last_eval_step != tr.global_step:  # always end with an eval of the final policy
                    eval_row = _evaluate(tr, cfg, eval_env)
                    logger.log(tr.global_step, eval_row)
                save_checkpoint(run_dir, tr.global_step, tr.state_dict(),
                                _meta(cfg, tr, wall0 + time.time() - t_start))
    finally:
        bar.close()
        logger.close()
        if eval_env is not None:
            eval_env.close()
        tr.close()
    if eval_row:
        print(f"step {tr.global_step}: eval return {eval_row['eval/return']:.2f} "
              f"success {eval_row['eval/success']:.2f}", flush=True)
    return 0

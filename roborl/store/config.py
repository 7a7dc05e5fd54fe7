"""Replay store and sampler configuration (owned by the store work)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from roborl.config import field, non_negative, positive, unit_interval


@dataclass(frozen=True)
class SamplerConfig:
    """How batches are drawn from the store (all sampling is from a RAM mirror, never per batch from zarr)."""

    kind: Literal["uniform", "per", "lap"] = field(
        "uniform", doc="uniform; per = proportional prioritized replay with a sum tree (Schaul et al. 2015); "
                       "lap = Loss-Adjusted Prioritization (Fujimoto et al. 2020): priorities max(|td|, lap_min_priority)^alpha, "
                       "no importance weights (pair it with a Huber loss).")
    alpha: float = field(0.6, doc="Priority exponent: p = (|td| + eps)^alpha (per) or max(|td|, lap_min_priority)^alpha (lap).",
                         check=non_negative)
    beta0: float = field(0.4, doc="Initial importance-sampling exponent (per); annealed linearly to 1.", check=unit_interval)
    beta_anneal_steps: int = field(100_000, doc="Steps (the `step` passed to sample) over which beta goes from beta0 to 1.",
                                   check=positive)
    eps: float = field(1e-6, doc="Added to |td| so that no transition gets zero priority (per).", check=positive)
    lap_min_priority: float = field(1.0, doc="LAP floor on |td| (Fujimoto 2020 use 1).", check=positive)
    demo_fraction: float = field(0.5, doc="Exact share of each batch drawn from the demo partition (RLPD: 0.5).",
                                 check=unit_interval)
    demo_fraction_final: float | None = field(None, doc="If set, demo_fraction is annealed linearly to this value.",
                                              check=unit_interval)
    demo_anneal_steps: int = field(100_000, doc="Steps over which demo_fraction goes to demo_fraction_final.", check=positive)
    success_boost: float = field(1.0, doc="Sampling-priority multiplier for steps of successful episodes (1 = off).",
                                 check=positive)
    n_step: int = field(1, doc="n-step return horizon, computed at sample time from episode boundaries.", check=positive)
    her_fraction: float = field(0.0, doc="Share of sampled transitions whose goal is relabelled with one the episode "
                                "achieved later (HER 'future' strategy, Andrychowicz 2017), reward recomputed by the "
                                "env's roborl.envs.goals.GoalRelabeler; 0 = off. Needs a goal-conditioned env (Reach, "
                                "Push, PickPlace). BC pretraining and the normaliser fit always see stored goals; the optional "
                                "sac.bc_weight term does see relabelled demo rows.", check=unit_interval)
    nstep_correction: Literal["none", "retrace"] = field(
        "none", doc="Off-policy correction of the n-step return (n_step > 1). retrace: batches also carry the "
        "per-step trace (rewards, next observations, actions, the stored behaviour log_prob mu) and learners that "
        "read it (SAC) build Retrace targets with traces c = retrace_lambda * min(1, pi/mu) (Munos et al. 2016); "
        "rows without a stored log_prob cut the trace (c = 0). none: the plain n-step return.")
    retrace_lambda: float = field(1.0, doc="Retrace's lambda in c = lambda * min(1, pi/mu).", check=unit_interval)


@dataclass(frozen=True)
class StoreConfig:
    """Where transitions live (a crash-safe zarr store; see roborl/store/store.py)."""

    path: str | None = field(None, doc="Store directory; null means <run.dir>/store.")
    online_capacity: int = field(1_000_000, doc="Max steps in the online partition (FIFO eviction of whole oldest episodes).",
                                 check=positive)
    demos: tuple[str, ...] = field((), doc="Demo stores merged into this store's demo partition at start "
                                           "(each source is merged once; re-running skips it).")
    chunk_rows: int | None = field(None, doc="Rows per zarr chunk and flush block; null = auto (~4 MiB of the largest field, "
                                             "16..16384 rows).", check=positive)
    fsync: Literal["commit", "always", "never"] = field(
        "commit", doc="commit: fsync zarr chunks, WAL and commit file at each flush, and the WAL every fsync_interval_s "
                      "(power loss loses at most that long); always: fsync the WAL after every step (slow); never: rely on "
                      "the OS (still safe against kill -9).")
    fsync_interval_s: float = field(1.0, doc="With fsync=commit, max seconds between WAL fsyncs.", check=non_negative)
    allow_env_mismatch: bool = field(False, doc="Merge demo stores recorded on another env_id than env.id (refused by "
                                            "default: the same spaces do not make the same task).")
    ram_budget_gb: float | None = field(None, doc="Most memory (GB) the sampler's replay mirror (RAM, or GPU memory with "
                                                 "a cuda device) may use: demo rows + online_capacity rows, frames once "
                                                 "in their stored dtype (images uint8). A store that could outgrow it is "
                                                 "refused at start in one line; null = unchecked.", check=positive)
    sampler: SamplerConfig = field(default_factory=SamplerConfig, doc="Sampler.")

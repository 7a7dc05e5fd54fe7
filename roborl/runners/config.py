"""The top-level run config: the sections every run has, composed from the components' own configs.

Common keys scripts can rely on: ``run.dir``, ``run.seed``, ``env.id``,
``train.total_steps``, ``device``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from roborl.config import field, non_negative, positive
from roborl.envs.config import EnvConfig
from roborl.learners import LEARNERS, check_algo
from roborl.learners.config import (A2CConfig, DDPGConfig, DiscreteSACConfig, MBPOConfig, NPGConfig, PPOConfig,
                                    ReinforceConfig, SACConfig, TD3Config, TRPOConfig)
from roborl.reward.config import RewardConfig
from roborl.store.config import StoreConfig
from roborl.teleop.config import InterventionConfig, TeleopConfig


@dataclass(frozen=True)
class DistributedConfig:
    """The actor/learner split (``roborl train --role learner|actor``)."""

    push_every: int = field(100, doc="Learner publishes actor weights every this many gradient updates.", check=positive)
    batch: int = field(1024, doc="Max transitions per actor->learner message.", check=positive)
    send_every: int = field(32, doc="Actor sends its backlog once this many transitions are unacked (or every second).", check=positive)
    timeout_s: float = field(2.0, doc="Deadline of every actor->learner call.", check=positive)
    on_disconnect: Literal["act", "hold"] = field("act", doc="Learner gone: keep acting with the last weights, or hold (stop acting) until it is back.")
    actor_hz: float | None = field(None, doc="Cap the actor's step rate (null = as fast as the env goes; robot:// paces itself).", check=positive)
    linger_s: float = field(5.0, doc="Learner keeps answering this long after total_steps, for the actor's last pushes.", check=positive)
    actor_id: str | None = field(None, doc="This actor's identity at the learner (--actor-id); null = one made up once and "
                                 "kept in run.dir/actor_id. Each actor of a learner needs its own.")
    num_envs: int = field(1, doc="Actor: sims stepped by this one actor (each its own store stream; one batched policy "
                          "forward per step of all). Sims only (not robot://, no intervention source).", check=positive)
    actor_timeout_s: float = field(10.0, doc="Learner: an actor not heard from this long is gone, and another process "
                                   "may take over its identity (a restarted one takes over at once).", check=positive)


@dataclass(frozen=True)
class RunSection:
    """Identity and location of a run."""

    name: str = field("run", doc="Run name; the default directory is runs/<name>-<timestamp>.")
    dir: str | None = field(None, doc="Run directory. Null means runs/<name>-<timestamp>. Re-using a directory resumes.")
    seed: int = field(0, doc="Seed for envs, networks, sampling.", check=non_negative)


@dataclass(frozen=True)
class TrainConfig:
    """The training loop (owned by the runner)."""

    algo: str = field("sac", doc="Which learner runs: a key of roborl.learners.LEARNERS (sac, ppo, td3, ddpg, sac_discrete, reinforce, a2c, npg, trpo, mbpo).",
                      check=check_algo)
    total_steps: int = field(100_000, doc="Env-step budget.", check=positive)
    eval_every: int = field(5_000, doc="Env steps between eval rounds (0 = only at the end).", check=non_negative)
    eval_episodes: int = field(10, doc="Episodes per eval round.", check=positive)
    checkpoint_every: int = field(5_000, doc="Env steps between checkpoints.", check=positive)
    log_every: int = field(1_000, doc="Env steps between metric rows.", check=positive)
    log_every_s: float = field(30.0, doc="Seconds between plain progress lines on stdout when it is not a TTY "
                               "(logs); 0 = none. --quiet silences them.", check=non_negative)
    max_minutes: float | None = field(None, doc="Wall-clock limit; training stops cleanly (with a checkpoint) when reached.", check=positive)
    threads: int | None = field(1, doc="torch intra-op CPU threads (null = torch default). 1 by default: a 256x256 MLP "
                                "update does not scale across 2 cores, and oversubscribed OpenMP threads slow it down "
                                "by 10-100x when the machine is busy (measured; see BENCHMARKS.md). On CUDA it bounds the host side "
                                "(sampling, acting).", check=positive)


@dataclass(frozen=True)
class RunConfig:
    """Everything one `roborl train` run needs."""

    run: RunSection = field(default_factory=RunSection, doc="Run identity.")
    device: Literal["auto", "cpu", "cuda"] = field("auto", doc="auto uses CUDA when present.")
    env: EnvConfig = field(default_factory=EnvConfig, doc="Environment.")
    train: TrainConfig = field(default_factory=TrainConfig, doc="Training loop.")
    store: StoreConfig = field(default_factory=StoreConfig, doc="Replay store (off-policy learners).")
    sac: SACConfig = field(default_factory=SACConfig, doc="SAC learner.")
    ppo: PPOConfig = field(default_factory=PPOConfig, doc="PPO learner.")
    td3: TD3Config = field(default_factory=TD3Config, doc="TD3 learner.")
    ddpg: DDPGConfig = field(default_factory=DDPGConfig, doc="DDPG learner.")
    sac_discrete: DiscreteSACConfig = field(default_factory=DiscreteSACConfig, doc="Discrete-action SAC learner.")
    reinforce: ReinforceConfig = field(default_factory=ReinforceConfig, doc="REINFORCE learner (on-policy).")
    a2c: A2CConfig = field(default_factory=A2CConfig, doc="A2C learner (on-policy).")
    npg: NPGConfig = field(default_factory=NPGConfig, doc="Natural policy gradient learner (on-policy).")
    trpo: TRPOConfig = field(default_factory=TRPOConfig, doc="TRPO learner (on-policy).")
    mbpo: MBPOConfig = field(default_factory=MBPOConfig, doc="MBPO learner (model-based, off-policy runner).")
    intervention: InterventionConfig = field(default_factory=InterventionConfig,
                                             doc="Human/scripted takeovers during off-policy training (HIL-SERL).")
    teleop: TeleopConfig = field(default_factory=TeleopConfig, doc="Teleop device used by intervention.source=device.")
    distributed: DistributedConfig = field(default_factory=DistributedConfig, doc="Actor/learner split (--role).")
    reward: RewardConfig = field(default_factory=RewardConfig, doc="Learned success reward (reward.classifier; "
                                                                 "off-policy runs): docs/reward.md.")

    def __post_init__(self) -> None:
        spec = LEARNERS.get(self.train.algo)
        if spec is not None and spec.sim_only and self.env.id.startswith("robot://"):
            raise ValueError(f"train.algo: {self.train.algo} runs in simulation only (MuJoCo/gymnasium envs), "
                             f"not on {self.env.id}")
        if self.store.sampler.nstep_correction == "retrace" and (self.train.algo != "sac" or self.sac.residual):
            raise ValueError(f"store.sampler.nstep_correction: retrace targets are built by SAC without a residual "
                             f"policy only, not train.algo={self.train.algo}" + (" with sac.residual" if self.sac.residual else ""))
        # Values that pass each field's own check but cannot work together. Refused here, before
        # anything runs, instead of a run that trains with zero updates and exits 0.
        learner = getattr(self, self.train.algo, None)
        batch = getattr(learner, "batch_size", None)
        if batch is not None and batch > self.store.online_capacity:
            raise ValueError(f"{self.train.algo}.batch_size ({batch}) is larger than store.online_capacity "
                             f"({self.store.online_capacity}): no batch could ever be sampled")
        warmup = getattr(learner, "warmup_steps", None)
        if warmup is not None and warmup >= self.train.total_steps:
            raise ValueError(f"{self.train.algo}.warmup_steps ({warmup}) is not below train.total_steps "
                             f"({self.train.total_steps}): learning would never start")

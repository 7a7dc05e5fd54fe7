"""The remote learner (runners.distributed) and the local runner take the same update path:
same data, same seed -> bit-identical parameters after the same number of updates."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from roborl import config as C
from roborl.envs.step import EpisodeStats
from roborl.learners.sac import SAC
from roborl.runners import distributed
from roborl.runners.config import RunConfig
from roborl.runners.off_policy import OffPolicyRunner
from roborl.runs import Accumulator

SMALL = ["env.id=Pendulum-v1", "sac.hidden=[32,32]", "sac.batch_size=32", "sac.warmup_steps=100",
         "store.sampler.demo_fraction=0", "sac.utd=1", "sac.normalize_obs=true", "train.eval_episodes=1"]


def test_remote_learner_updates_equal_local_runner_updates(tmp_path: Path) -> None:
    cfg = C.load(RunConfig, None, SMALL + [f"run.dir={tmp_path}/local"])
    local = OffPolicyRunner(cfg, tmp_path / "local")
    remote = OffPolicyRunner(cfg, tmp_path / "remote", with_env=False,
                             spaces=(local.obs_space, local.act_space))
    try:
        # The local runner collects 250 steps (random actions: learning has not started).
        obs = local.reset_episode()
        ep = EpisodeStats()
        for _ in range(250):
            s = local.collect_step(obs, ep)
            obs = local.reset_episode() if s.done else s.next_obs
        local.store.end_episode()  # what an actor does before its last push
        local.store.commit()
        # The same rows reach the remote learner's store through the actor stream's sink.
        n = distributed.online_end(local.store)
        rows = local.store.read_rows("online", 0, n)
        arrays = {k: np.ascontiguousarray(rows[k]) for k in distributed.STREAM_FIELDS}
        arrays["first"] = distributed.episode_starts(local.store, 0, n)
        sink = distributed.TransitionSink(remote.store)
        acked, added = sink.ingest("actor-a", 0, arrays, distributed.ended_upto(local.store))
        assert added == n == acked == sink.total()
        remote.advance_to(sink.total())
        assert remote.step == local.step == 250

        for r in (local, remote):
            assert r.ready_to_learn() and not r.learning_started
            r.start_learning()
            assert r.learning_started
        acc_l, acc_r = Accumulator(), Accumulator()
        # One process, one global torch RNG (SAC's action noise): both sides start from the same state.
        torch_rng = torch.get_rng_state()
        for _ in range(20):  # the local loop: set_progress at the env step, then utd updates
            local.learner.set_progress(local.step)
            local.update(acc_l)
        torch.set_rng_state(torch_rng)
        distributed.learner_updates(remote, acc_r, 20)  # what run_learner calls

        for (name, a), b in zip(local.learner.named_parameters(), remote.learner.parameters()):
            torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)
        torch.testing.assert_close(local.learner.normalizer.mean, remote.learner.normalizer.mean, rtol=0, atol=0)
        assert acc_l.pop() == acc_r.pop()
        # The acting weights a remote learner publishes are the local learner's.
        for k, v in local.acting_state().items():
            torch.testing.assert_close(v, remote.acting_state()[k], rtol=0, atol=0)
    finally:
        local.close()
        remote.close()


class ProbeSAC(SAC):
    """A registered off-policy learner that is not the SAC entry: counts the protocol calls it gets."""

    calls: dict[str, int] = {}

    def start_learning(self, sample: Any, *, num_steps: int, num_demo_steps: int) -> None:
        ProbeSAC.calls["start_learning"] = ProbeSAC.calls.get("start_learning", 0) + 1
        super().start_learning(sample, num_steps=num_steps, num_demo_steps=num_demo_steps)

    def update(self, batch: Any) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        ProbeSAC.calls["update"] = ProbeSAC.calls.get("update", 0) + 1
        return super().update(batch)


def test_runner_builds_whatever_the_registry_names(tmp_path: Path, monkeypatch: Any) -> None:
    """The runner takes the learner class, its config section and the checkpoint's algo from the registry."""
    from roborl.checkpoint import load_checkpoint
    from roborl.learners import LEARNERS, LearnerSpec

    monkeypatch.setitem(LEARNERS, "probe", LearnerSpec("off_policy", f"{__name__}:ProbeSAC", "sac",
                                                       "roborl.learners.config:SACConfig",
                                                       "roborl.learners.sac:policy_from_checkpoint"))
    ProbeSAC.calls = {}
    cfg = C.load(RunConfig, None, SMALL + [f"run.dir={tmp_path}/run", "train.algo=probe", "train.total_steps=300",
                                           "train.eval_every=0", "sac.utd=2"])
    r = OffPolicyRunner(cfg, tmp_path / "run")
    assert type(r.learner) is ProbeSAC
    r.train()
    r.close()
    # Learning starts at the warmup step (100) inside the first 200-step episode; then utd 2 per step.
    assert ProbeSAC.calls == {"start_learning": 1, "update": 2 * 200}
    _, meta, _ = load_checkpoint(tmp_path / "run")
    assert meta["algo"] == "probe"

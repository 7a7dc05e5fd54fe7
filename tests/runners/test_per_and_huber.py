"""Prioritised replay statistics in the metrics; the Huber critic loss (LAP's) against its plain formula."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from roborl import config as C
from roborl.learners.sac import critic_td_loss
from roborl.runners.config import RunConfig
from roborl.runners.off_policy import OffPolicyRunner
from roborl.runs import read_metrics


def test_huber_equals_mse_below_one_and_is_linear_beyond() -> None:
    small = torch.linspace(-0.99, 0.99, 101).reshape(1, -1)
    torch.testing.assert_close(critic_td_loss(small, "huber"), critic_td_loss(small, "mse"), rtol=0, atol=0)
    torch.testing.assert_close(critic_td_loss(small, "mse"), 0.5 * small ** 2)
    big = torch.tensor([[1.5, 3.0, -2.0, -10.0, 100.0]])
    torch.testing.assert_close(critic_td_loss(big, "huber"), big.abs() - 0.5)
    # Linear beyond 1: the gradient is sign(td), where mse's is td.
    x = big.clone().requires_grad_(True)
    critic_td_loss(x, "huber").sum().backward()
    torch.testing.assert_close(x.grad, big.sign())


@pytest.mark.parametrize("kind,loss", [("per", "mse"), ("lap", "huber")])
def test_prioritised_replay_logs_its_statistics(tmp_path: Path, kind: str, loss: str) -> None:
    cfg = C.load(RunConfig, None, ["env.id=Pendulum-v1", "sac.hidden=[32,32]", "sac.batch_size=32",
                                   "sac.warmup_steps=100", f"sac.critic_loss={loss}", f"store.sampler.kind={kind}",
                                   "train.total_steps=300", "train.eval_every=0", "train.eval_episodes=1",
                                   "train.log_every=100", f"run.dir={tmp_path}"])
    r = OffPolicyRunner(cfg, tmp_path)
    r.train()
    r.close()
    rows = [x for x in read_metrics(tmp_path) if "per/priority_mean" in x]
    assert rows, read_metrics(tmp_path)
    last = rows[-1]
    assert 0 < last["per/priority_mean"] <= last["per/priority_max"]
    assert 0 < last["per/is_weight_min"] <= 1.0
    if kind == "lap":
        assert last["per/is_weight_min"] == 1.0  # LAP has no importance weights
        assert last["per/priority_mean"] >= 1.0  # max(|td|, 1)^alpha

"""The learner registry: every entry imports, builds from its config defaults, satisfies its
protocol, has a runner and a policy loader; train.algo is validated against it; it is torch-free."""
from __future__ import annotations

import dataclasses
import subprocess
import sys

import numpy as np
import pytest
import torch

from roborl import config as C
from roborl.learners import LEARNERS, LearnerSpec, build_learner, import_object
from roborl.learners.base import OffPolicyLearner, OnPolicyLearner, Policy
from roborl.runners import RUNNER_BY_KIND, RUNNERS
from roborl.runners.config import RunConfig

PROTOCOLS = {"off_policy": OffPolicyLearner, "on_policy": OnPolicyLearner}


@pytest.mark.parametrize("algo", sorted(LEARNERS))
def test_entry_builds_from_config_defaults_and_satisfies_its_protocol(algo: str) -> None:
    spec = LEARNERS[algo]
    assert isinstance(spec, LearnerSpec) and spec.kind in PROTOCOLS
    # The RunConfig section named by the entry holds exactly the entry's config class, with defaults.
    cfg_cls = import_object(spec.config)
    run_cfg = C.load(RunConfig, None, [f"train.algo={algo}"])
    section = getattr(run_cfg, spec.section)
    assert type(section) is cfg_cls and section == C.build(cfg_cls, {}, "defaults")
    learner = build_learner(algo, 5, 2, section, "cpu")
    assert isinstance(learner, import_object(spec.learner))
    assert isinstance(learner, PROTOCOLS[spec.kind]), f"{algo}: not an {PROTOCOLS[spec.kind].__name__}"
    policy = learner.as_policy() if spec.kind == "off_policy" else learner.policy()
    assert isinstance(policy, Policy)
    a = policy.act(np.zeros((3, 5), np.float32), deterministic=True)
    if spec.actions == "discrete":  # action indices [N] into the 2 actions
        assert np.asarray(a).shape == (3,) and np.asarray(a).dtype.kind == "i" and set(np.asarray(a)) <= {0, 1}
    else:
        assert np.asarray(a).shape == (3, 2) and np.all(np.abs(np.asarray(a)) <= 1.0)
    assert callable(import_object(spec.policy_loader))
    # Its runner is its kind's runner, and it imports.
    assert RUNNERS[algo] == RUNNER_BY_KIND[spec.kind]
    assert callable(import_object(RUNNERS[algo]))


def test_off_policy_learners_have_the_fields_the_runner_reads() -> None:
    for algo, spec in LEARNERS.items():
        if spec.kind != "off_policy":
            continue
        names = {f.name for f in dataclasses.fields(import_object(spec.config))}
        assert {"batch_size", "gamma", "utd", "warmup_steps"} <= names, algo


def test_off_policy_acting_state_round_trips_to_a_fresh_learner() -> None:
    """What a remote learner publishes is enough for an actor's learner to act identically."""
    for algo, spec in LEARNERS.items():
        if spec.kind != "off_policy":
            continue
        cfg = getattr(C.load(RunConfig, None, []), spec.section)
        torch.manual_seed(0)
        a = build_learner(algo, 5, 2, cfg, "cpu")
        torch.manual_seed(1)
        b = build_learner(algo, 5, 2, cfg, "cpu")
        obs = np.random.default_rng(0).normal(size=(4, 5)).astype(np.float32)
        b.load_acting_state(a.acting_state())
        torch.testing.assert_close(a.act(obs, deterministic=True), b.act(obs, deterministic=True), rtol=0, atol=0)


def test_unknown_algo_is_one_config_error_listing_the_choices() -> None:
    with pytest.raises(C.ConfigError) as e:
        C.load(RunConfig, None, ["train.algo=td9"])
    msg = str(e.value)
    assert "train.algo" in msg and "td9" in msg and "\n" not in msg
    assert all(algo in msg for algo in LEARNERS)


def test_registry_and_run_config_import_no_torch() -> None:
    code = ("import sys, roborl.learners, roborl.runners, roborl.runners.config; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr

"""The held-out perturbation grid."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from roborl import config as C
from roborl.envs.config import EnvConfig
from roborl.envs.dr import DomainRandomization
from roborl.envs.wrappers import find_wrapper
from roborl.errors import UsageError
from roborl.eval.episodes import run_episodes
from roborl.eval.perturb import (PerturbPoint, evaluate_grid, grid_summary, latency_steps, load_grid,
                                 make_perturbed_env)

REPO = Path(__file__).resolve().parents[2]


class LinearPolicy:
    def __init__(self, obs_dim: int, act_dim: int, seed: int = 0) -> None:
        self.W = np.random.default_rng(seed).normal(size=(obs_dim, act_dim)).astype(np.float32)

    def act(self, obs: np.ndarray, deterministic: bool = True) -> np.ndarray:
        return np.tanh(obs @ self.W)


def test_default_grid_file_covers_the_issue_ranges():
    pts = load_grid(REPO / "configs" / "perturb_grid.yaml")
    assert pts == load_grid(None)
    assert len(pts) == 36 and len(set(pts)) == 36
    assert min(p.mass_scale for p in pts) == 0.7 and max(p.mass_scale for p in pts) == 1.5
    assert min(p.friction_scale for p in pts) == 0.5 and max(p.friction_scale for p in pts) == 1.5
    assert {p.latency_ms for p in pts} == {0.0, 40.0} and max(p.obs_noise for p in pts) > 0


def test_grid_parsing_errors(tmp_path: Path):
    assert load_grid({"points": [{}, {"mass_scale": 2}]}) == [PerturbPoint(), PerturbPoint(mass_scale=2.0)]
    for bad, msg in (({"axes": {"mass": [1.0]}}, "mass"), ({"points": [{"latency_ms": -1}]}, "latency_ms"),
                     ({"axes": {"mass_scale": []}}, "mass_scale"), ({"grid": 1}, "axes"),
                     ({"points": [{"mass_scale": 0}]}, "mass_scale")):
        with pytest.raises(UsageError, match=msg):
            load_grid(bad)
    with pytest.raises(UsageError, match="not found"):
        load_grid(tmp_path / "nope.yaml")


def test_latency_conversion():
    assert latency_steps(40, 0.02) == 2 and latency_steps(40, 0.04) == 1 and latency_steps(0, None) == 0
    with pytest.raises(UsageError, match="dt"):
        latency_steps(20, None)


def test_perturbed_env_pins_dr_values():
    cfg = C.build(EnvConfig, {"id": "InvertedPendulum-v5"})
    env, steps = make_perturbed_env(cfg, PerturbPoint(mass_scale=1.5, latency_ms=40, obs_noise=0.01), seed=3)
    try:
        dr = find_wrapper(env, DomainRandomization)
        assert dr is not None and steps == 1  # InvertedPendulum-v5: dt = 0.04 s
        nominal = dr.nominal()["body_mass"].copy()
        env.reset(seed=3)
        m = env.unwrapped.model
        np.testing.assert_allclose(m.body_mass[1:], nominal[1:] * 1.5)
        env.reset(seed=4)  # fixed, not sampled: the same value every episode
        np.testing.assert_allclose(m.body_mass[1:], nominal[1:] * 1.5)
    finally:
        env.close()


def test_evaluate_grid_reproducible_and_perturbations_matter():
    cfg = C.build(EnvConfig, {"id": "InvertedPendulum-v5", "max_episode_steps": 60})
    pol = LinearPolicy(4, 1, seed=1)
    grid = {"points": [{}, {"latency_ms": 80}, {"mass_scale": 1.5}, {"obs_noise": 0.05}]}
    a = evaluate_grid(pol, cfg, grid, episodes=2, seed=11)
    b = evaluate_grid(pol, cfg, grid, episodes=2, seed=11)
    assert a == b
    assert [e["params"]["latency_ms"] for e in a] == [0.0, 80.0, 0.0, 0.0] and a[1]["latency_steps"] == 2
    assert set(a[0]) >= {"params", "return_mean", "success_rate"}
    # The nominal point is exactly the nominal eval (same seeds, DR pinned at 1).
    nominal = run_episodes(pol, cfg, 2, seed=11)
    assert a[0]["return_mean"] == nominal.return_mean
    # Each perturbation changes what happens.
    for e in a[1:]:
        assert e["return_mean"] != nominal.return_mean, e["params"]
    s = grid_summary(a, nominal=nominal.to_json())
    rets = [e["return_mean"] for e in a]
    assert s["points"] == 4 and s["return_worst"] == min(rets) and s["return_mean"] == pytest.approx(np.mean(rets))
    assert s["success_worst"] == min(e["success_rate"] for e in a)


def test_grid_on_non_mujoco_env_is_one_line_error():
    cfg = C.build(EnvConfig, {"id": "Pendulum-v1"})
    with pytest.raises(UsageError, match="--perturb"):
        evaluate_grid(LinearPolicy(3, 1), cfg, {"points": [{"mass_scale": 1.2}]}, episodes=1, seed=0)

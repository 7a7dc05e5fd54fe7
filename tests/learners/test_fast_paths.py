"""The learners' fast paths (``sac.compile``, ``ppo.compile``; roborl/learners/fast.py) do the plain path's math.

Same seed, same batches: the parameters after K updates with the fast path on equal those with it off,
within float tolerance (compiled kernels fuse and reorder float ops). Compile failing or unavailable
falls back with one logged line and the same results.
"""
from __future__ import annotations

import logging

import pytest
import torch

from roborl.batch import Batch
from roborl.config import build
from roborl.learners.base import Rollout
from roborl.learners.config import PPOConfig, SACConfig
from roborl.learners.fast import Compiled, adam_step
from roborl import config as C
from roborl.learners.ppo import COMPILE_MIN_STEPS, PPO
from roborl.runners.config import RunConfig
from roborl.runners.on_policy import _grad_steps
from roborl.learners.sac import SAC

O, A, B = 7, 3, 32


def _batches(n: int, seed: int = 1) -> list[Batch]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        out.append(Batch(obs=torch.randn(B, O, generator=g, dtype=torch.float64), action=torch.rand(B, A, generator=g) * 2 - 1,
                         reward=torch.randn(B, generator=g), next_obs=torch.randn(B, O, generator=g, dtype=torch.float64),
                         discount=0.99 * (torch.rand(B, generator=g) > 0.1).float(), weight=torch.rand(B, generator=g) + 0.5,
                         index=torch.arange(B), is_demo=torch.rand(B, generator=g) < 0.5))
    return out


def _sac(compile: str | bool, **over: object) -> SAC:
    torch.manual_seed(0)
    cfg = build(SACConfig, {"hidden": [32, 32], "batch_size": B, "compile": compile, **over})
    learner = SAC(O, A, cfg)
    with torch.no_grad():  # a non-trivial fitted normaliser
        learner.normalizer.fit(torch.randn(256, O) * 3 + 1)
    return learner


def _sac_params(learner: SAC, k: int, batches: list[Batch]) -> tuple[torch.Tensor, dict[str, float]]:
    torch.manual_seed(123)  # the update's own draws (policy noise, REDQ subsets) from the same stream
    metrics: dict[str, torch.Tensor] = {}
    td = torch.zeros(1)
    for b in batches[:k]:
        metrics, td = learner.update(b)
    flat = torch.cat([p.detach().reshape(-1) for p in learner.parameters()]
                     + [t.detach().reshape(-1).float() for t in learner.critic_target.parameters()])
    return flat, {key: float(v) for key, v in metrics.items()} | {"td": float(td.sum())}


SAC_MODES = {
    "twin": {},
    # REDQ ensemble (random target subset), LayerNorm, Huber, residual over a (random) base, BC term, delayed actor.
    "ensemble_residual": {"n_critics": 4, "critic_subset": 2, "layer_norm": True, "critic_loss": "huber",
                          "residual": True, "bc_weight": 0.5, "actor_every": 2, "grad_clip": 1.0},
}


@pytest.mark.parametrize("mode", list(SAC_MODES))
def test_sac_compiled_update_equals_plain(mode: str) -> None:
    batches = _batches(6)
    plain, m_plain = _sac_params(_sac("off", **SAC_MODES[mode]), 6, batches)
    fast_learner = _sac("on", **SAC_MODES[mode])
    assert fast_learner._fast is not None
    fast, m_fast = _sac_params(fast_learner, 6, batches)
    assert fast_learner._fast[0].active, "compile fell back: this test needs a working torch.compile"
    assert plain.shape == fast.shape
    torch.testing.assert_close(fast, plain, rtol=1e-4, atol=1e-5)
    assert m_fast.keys() == m_plain.keys()
    for key in m_plain:
        assert m_fast[key] == pytest.approx(m_plain[key], rel=1e-3, abs=1e-4), key
    # The parameters moved (a test that compares two untouched models would pass trivially).
    assert not torch.allclose(plain, _sac_params(_sac("off", **SAC_MODES[mode]), 0, batches)[0])


def _rollouts(n: int, T: int = 32, N: int = 4) -> list[Rollout]:
    g = torch.Generator().manual_seed(7)
    out = []
    for _ in range(n):
        r = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
        out.append(Rollout(obs={"policy": r(T, N, O) * 2}, actions=r(T, N, A), logp=r(T, N) - 3, mu=r(T, N, A) * 0.1,
                           values=r(T, N), rewards=r(T, N), next_values=r(T, N),
                           terminated=(torch.rand(T, N, generator=g) < 0.05).float(),
                           dones=(torch.rand(T, N, generator=g) < 0.1).float()))
    return out


def _ppo_run(compile: str, k: int, **over: object) -> tuple[PPO, dict[str, float]]:
    torch.manual_seed(0)
    learner = PPO(O, A, build(PPOConfig, {"compile": compile, "minibatch_size": 32, "epochs": 3, **over}))
    torch.manual_seed(5)  # minibatch permutations from the same stream
    m: dict[str, float] = {}
    for ro in _rollouts(k):
        m = learner.update(ro)
        learner.observe(ro.obs)
    return learner, m


PPO_MODES = {
    "clip": {},
    "kl_penalty": {"loss": "kl", "clip_value": 0.2, "ent_coef": 0.01, "target_kl": 0.01, "kl_control": "adaptive_lr",
                   "max_grad_norm": None},
}


@pytest.mark.parametrize("mode", list(PPO_MODES))
def test_ppo_compiled_step_equals_plain(mode: str) -> None:
    plain, m_plain = _ppo_run("off", 3, **PPO_MODES[mode])
    fast, m_fast = _ppo_run("on", 3, **PPO_MODES[mode])
    assert plain._fast_step is None and fast._fast_step is not None and fast._fast_step.active
    torch.testing.assert_close(fast.flat.detach(), plain.flat.detach(), rtol=1e-4, atol=1e-6)
    # The optimiser state the checkpoints hold moved alike (adam_step writes Adam's own state).
    sp, sf = plain.optim.state[plain.flat], fast.optim.state[fast.flat]
    assert float(sp["step"]) == float(sf["step"]) > 0
    torch.testing.assert_close(sf["exp_avg_sq"], sp["exp_avg_sq"], rtol=1e-3, atol=1e-9)
    for key in ("loss/policy", "loss/value", "kl", "approx_kl", "lr", "grad_steps", "beta"):
        assert m_fast[key] == pytest.approx(m_plain[key], rel=1e-3, abs=1e-6), key
    untouched, _ = _ppo_run("off", 0, **PPO_MODES[mode])
    assert not torch.allclose(untouched.flat, plain.flat)


def test_ppo_auto_compiles_single_process_only_where_fusable() -> None:
    # auto: a single process with the fused pair, for runs long enough to repay the compile.
    assert PPO(O, A, build(PPOConfig, {}), expected_steps=COMPILE_MIN_STEPS)._fast_step is not None
    assert PPO(O, A, build(PPOConfig, {}), expected_steps=COMPILE_MIN_STEPS - 1)._fast_step is None
    assert PPO(O, A, build(PPOConfig, {}))._fast_step is None  # run length unknown
    assert PPO(O, A, build(PPOConfig, {"compile": "off"}), expected_steps=10**6)._fast_step is None
    # Critic wider than the actor: no fused pair, so the plain step runs.
    assert PPO(O, A, build(PPOConfig, {"critic_hidden": [16]}), expected_steps=10**6)._fast_step is None
    # The runner passes the run's gradient steps: 1M env steps of the HalfCheetah recipe compile, 20k do not.
    cfg = C.build(RunConfig, {"env": {"id": "HalfCheetah-v5"}, "train": {"algo": "ppo", "total_steps": 1_000_000}})
    assert _grad_steps(cfg) == 489 * 10 * 32 >= COMPILE_MIN_STEPS
    assert _grad_steps(C.build(RunConfig, {"train": {"algo": "ppo", "total_steps": 20_000}})) < COMPILE_MIN_STEPS
    # sac.compile auto: CUDA only (on a CPU the update is bound by its matmuls).
    assert _sac("auto")._fast is None and _sac("on")._fast is not None
    # YAML 1.1 reads a bare on/off as a bool: both spellings mean the same.
    assert _sac(True)._fast is not None and _sac(False)._fast is None
    cfg = C.load(RunConfig, None, ["train.algo=ppo", "ppo.compile=on", "sac.compile=off"])
    assert cfg.ppo.compile is True and cfg.sac.compile is False
    assert PPO(O, A, cfg.ppo)._fast_step is not None


def _refuse(*args: object, **kwargs: object) -> object:
    raise RuntimeError("no C++ compiler found\nsecond line")


def _broken_compile(fn: object, **kwargs: object) -> object:
    def call(*args: object) -> object:
        raise RuntimeError("inductor: compilation failed\ndetails")
    return call


@pytest.mark.parametrize("how", [_refuse, _broken_compile], ids=["compile_refused", "first_call_fails"])
def test_compile_failure_falls_back_with_one_line(how: object, monkeypatch: pytest.MonkeyPatch,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    # The fallback is the path under test, so torch.compile itself is what fails here.
    monkeypatch.setattr(torch, "compile", how)
    batches = _batches(4)
    with caplog.at_level(logging.WARNING, logger="roborl.learners.fast"):
        sac = _sac("on", n_critics=3)
        fast, _ = _sac_params(sac, 4, batches)
        ppo, _ = _ppo_run("on", 2)
    lines = [r.getMessage() for r in caplog.records if r.name == "roborl.learners.fast"]
    # One line per compiled function (two SAC losses, one PPO step), each one line, naming its option.
    assert len(lines) == 3, lines
    assert all("\n" not in ln and "uncompiled" in ln for ln in lines)
    assert sum("sac.compile" in ln for ln in lines) == 2 and sum("ppo.compile" in ln for ln in lines) == 1
    assert not sac._fast[0].active and not ppo._fast_step.active
    # ...and the uncompiled fast path still does the plain path's math.
    monkeypatch.undo()
    plain, _ = _sac_params(_sac("off", n_critics=3), 4, batches)
    torch.testing.assert_close(fast, plain, rtol=1e-5, atol=1e-6)
    ref, _ = _ppo_run("off", 2)
    torch.testing.assert_close(ppo.flat.detach(), ref.flat.detach(), rtol=1e-5, atol=1e-7)


def test_compiled_wrapper_reports_compile_time() -> None:
    c = Compiled(lambda x: (x * 2 + 1).sum(), "test.compile", dynamic=False)
    assert c.compile_s is None
    assert float(c(torch.ones(4))) == 12.0
    assert c.active and c.compile_s is not None and c.compile_s > 0


def test_adam_step_equals_optimizer_step() -> None:
    torch.manual_seed(0)
    ps = [torch.nn.Parameter(torch.randn(5, 3)), torch.nn.Parameter(torch.randn(3))]
    qs = [torch.nn.Parameter(p.detach().clone()) for p in ps]
    opt_a = torch.optim.Adam(ps, lr=1e-2, eps=1e-5, fused=True)
    opt_b = torch.optim.Adam(qs, lr=1e-2, eps=1e-5, fused=True)
    for i in range(5):
        grads = [torch.randn_like(p) for p in ps]
        for p, q, g in zip(ps, qs, grads):
            p.grad, q.grad = g.clone(), g.clone()
        opt_a.step()
        adam_step(opt_b)
        for p, q in zip(ps, qs):
            assert torch.equal(p, q), i  # the same kernel with the same arguments: bit for bit
    assert opt_a.state_dict()["state"][0]["step"] == opt_b.state_dict()["state"][0]["step"]


# ----------------------------------------------------------------------------- rollout hot path (PPO)

def _plain_act(learner: PPO, obs: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """PPO.act's plain formula (before the cached std and the direct fused call)."""
    from roborl.learners.ppo import gaussian_log_prob
    m = learner.model
    with torch.no_grad():
        mu, v = m(m.normalize({"policy": obs}))
        u = mu + torch.randn_like(mu) * m.log_std.exp()
        logp = gaussian_log_prob(u, mu, m.log_std)
        return m.squash_action(u), u, logp, mu, v


@pytest.mark.parametrize("fuse", [True, False])
def test_ppo_act_equals_plain_formula_across_updates_and_loads(fuse: bool) -> None:
    """Bit-identical to the plain formula, also after updates and a load change log_std (the cached std)."""
    torch.manual_seed(0)
    learner = PPO(O, A, build(PPOConfig, {"compile": "off", "minibatch_size": 32, "epochs": 2, "ent_coef": 0.5,
                                          "numpy_act": False}), fuse=fuse)
    obs = torch.randn(8, O) * 2

    def check() -> None:
        torch.manual_seed(9)
        fast = learner.act(obs)
        torch.manual_seed(9)
        for a, b in zip(fast, _plain_act(learner, obs)):
            assert torch.equal(a, b)

    check()
    std0 = learner.model.log_std.detach().clone()
    for ro in _rollouts(2):
        learner.update(ro)
        learner.observe(ro.obs)
        check()
    assert not torch.equal(std0, learner.model.log_std.detach())  # the cache had to be refreshed
    other = PPO(O, A, build(PPOConfig, {"compile": "off", "init_log_std": -1.0}), fuse=fuse)
    learner.load_state_dict(other.state_dict())
    check()
    with torch.no_grad():
        learner.model.log_std.add_(0.25)  # an in-place edit of log_std itself
    check()


def test_compute_gae_numpy_loop_equals_torch_loop() -> None:
    from roborl.learners.ppo import compute_gae
    g = torch.Generator().manual_seed(3)
    T, N = 64, 5
    r, v, nv = (torch.randn(T, N, generator=g) for _ in range(3))
    term = (torch.rand(T, N, generator=g) < 0.05).float()
    done = torch.maximum(term, (torch.rand(T, N, generator=g) < 0.1).float())
    adv, ret = compute_gae(r, v, nv, term, done, 0.99, 0.95)
    # The plain formula: the torch loop (the path CUDA tensors take).
    deltas = r + 0.99 * (1.0 - term) * nv - v
    ref = torch.zeros_like(r)
    last = torch.zeros_like(r[0])
    for t in range(T - 1, -1, -1):
        last = deltas[t] + 0.99 * 0.95 * (1.0 - done)[t] * last
        ref[t] = last
    assert torch.equal(adv, ref) and torch.equal(ret, ref + v)


NUMPY_ACT_CASES = {
    "tanh_flat": ({"policy": O}, {}),
    "relu_clamp": ({"policy": O}, {"activation": "relu", "action_squash": "clip"}),
    "asymmetric_groups": ({"policy": O, "joint": 4, "critic": 5}, {"asymmetric": True}),
}


@pytest.mark.parametrize("case", list(NUMPY_ACT_CASES))
def test_ppo_numpy_act_equals_torch_act_to_rounding(case: str) -> None:
    """The numpy rollout inference (_NumpyAct) against the torch ops, through updates (the weight views
    follow the optimiser) and normaliser refreshes; the same noise draws."""
    dims, over = NUMPY_ACT_CASES[case]
    torch.manual_seed(0)
    learner = PPO(dims, A, build(PPOConfig, {"compile": "off", "minibatch_size": 32, "epochs": 2, **over}))
    assert learner._np_act is not None
    g = torch.Generator().manual_seed(4)
    T, N = 16, 4

    def check() -> None:
        obs = {k: torch.randn(8, d, generator=g) * 3 + 1 for k, d in dims.items()}
        torch.manual_seed(11)
        fast = learner.act(obs)
        torch.manual_seed(11)
        plain = learner._act_torch(obs)
        for a, b in zip(fast, plain):
            assert a.dtype == b.dtype and a.shape == b.shape
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)

    check()
    for _ in range(2):
        ro = Rollout(obs={k: torch.randn(T, N, d, generator=g) * 2 for k, d in dims.items()},
                     actions=torch.randn(T, N, A, generator=g), logp=torch.randn(T, N, generator=g) - 3,
                     mu=torch.randn(T, N, A, generator=g) * 0.1, values=torch.randn(T, N, generator=g),
                     rewards=torch.randn(T, N, generator=g), next_values=torch.randn(T, N, generator=g),
                     terminated=torch.zeros(T, N), dones=torch.zeros(T, N))
        learner.update(ro)
        learner.observe(ro.obs)
        check()
    # A plain tensor (not a dict of groups) runs the torch path.
    x = torch.randn(8, O)
    if len(dims) == 1:
        torch.manual_seed(2)
        a = learner.act(x)
        torch.manual_seed(2)
        b = learner._act_torch(x)
        assert all(torch.equal(p, q) for p, q in zip(a, b))


def test_ppo_numpy_act_off_by_config_and_off_cuda_or_elu() -> None:
    assert PPO(O, A, build(PPOConfig, {"numpy_act": False}))._np_act is None
    assert PPO(O, A, build(PPOConfig, {"activation": "elu"}))._np_act is None
    assert PPO(O, A, build(PPOConfig, {}), fuse=False)._np_act is None


def test_zero_grad_equals_optimizer_zero_grad() -> None:
    from roborl.learners.fast import zero_grad
    torch.manual_seed(0)
    nets = [torch.nn.Linear(4, 3) for _ in range(2)]
    opts = [torch.optim.Adam(n.parameters()) for n in nets]
    for n in nets:
        n(torch.randn(5, 4)).sum().backward()
    assert all(p.grad is not None for n in nets for p in n.parameters())
    opts[0].zero_grad(set_to_none=True)
    zero_grad(opts[1])
    assert all(p.grad is None for n in nets for p in n.parameters())

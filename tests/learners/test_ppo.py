"""PPO learner: GAE, the clipped surrogate, KL estimates, normalizers, the encoder/actor/critic model and its
fused fast path, observation groups (Dict observations, asymmetric critic), checkpoints."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from roborl import config as C
from roborl.errors import UsageError
from roborl.learners.base import OnPolicyLearner
from roborl.learners.networks import ConcatEncoder, ObsNormalizer, RunningMeanStd, combine_moments
from roborl.learners.ppo import (PPO, ActorCritic, PPOConfig, Rollout, approx_kl, clipped_surrogate, compute_gae,
                                 gaussian_kl, gaussian_log_prob, policy_from_checkpoint)


def _t(x):
    return torch.tensor(x, dtype=torch.float32)


# ----------------------------------------------------------------------------- GAE

def test_gae_matches_a_worked_example():
    # By hand: r = (1, 2, -1), V(s0..s3) = (5, 5.5, 6, 4), gamma 0.99, lambda 0.95.
    rewards = _t([[1.0], [2.0], [-1.0]])
    values = _t([[5.0], [5.5], [6.0]])
    next_values = _t([[5.5], [6.0], [4.0]])
    zeros = torch.zeros(3, 1)
    adv, ret = compute_gae(rewards, values, next_values, zeros, zeros, 0.99, 0.95)
    deltas = rewards + 0.99 * next_values - values
    assert deltas[0, 0].item() == pytest.approx(1.445, abs=1e-5)
    assert deltas[1, 0].item() == pytest.approx(2.44, abs=1e-5)
    assert deltas[2, 0].item() == pytest.approx(-3.04, abs=1e-5)
    assert adv[0, 0].item() == pytest.approx(1.051, abs=1e-3)
    assert adv[2, 0].item() == pytest.approx(-3.04, abs=1e-5)
    torch.testing.assert_close(ret, adv + values)
    # lambda = 0 is one-step TD: the advantage is delta itself.
    adv0, _ = compute_gae(rewards, values, next_values, zeros, zeros, 0.99, 0.0)
    torch.testing.assert_close(adv0, deltas)


def _reference_gae(r, v, nv, term, done, g, lam):
    """Per-env, per-step loops: the obviously-correct version."""
    T, N = r.shape
    adv = np.zeros((T, N))
    for n in range(N):
        nxt = 0.0
        for t in reversed(range(T)):
            target = r[t, n] + (0.0 if term[t, n] else g * nv[t, n])
            delta = target - v[t, n]
            nxt = delta + (0.0 if done[t, n] else g * lam * nxt)
            adv[t, n] = nxt
    return adv


def test_gae_terminal_stops_bootstrap_truncation_bootstraps_from_final_value():
    g, lam = 0.9, 0.8
    # One env, 4 steps: episode A ends by truncation at t=1 (time limit), episode B
    # terminates at t=3. V(final obs of A) = 10 must be used; nothing after t=3 may leak.
    r = _t([[1.0], [1.0], [1.0], [1.0]])
    v = _t([[2.0], [3.0], [4.0], [5.0]])
    nv = _t([[3.0], [10.0], [5.0], [99.0]])  # 10 = V(final_obs of A); 99 = V after the terminal (ignored)
    term = _t([[0], [0], [0], [1]])
    done = _t([[0], [1], [0], [1]])
    adv, _ = compute_gae(r, v, nv, term, done, g, lam)
    d3 = 1.0 - 5.0                      # terminal: no bootstrap
    d2 = 1.0 + g * 5.0 - 4.0
    d1 = 1.0 + g * 10.0 - 3.0           # truncated: bootstrap from V(final obs)
    d0 = 1.0 + g * 3.0 - 2.0
    expect = [d0 + g * lam * d1, d1, d2 + g * lam * d3, d3]  # no carry across the episode boundary at t=1
    np.testing.assert_allclose(adv[:, 0].numpy(), expect, rtol=1e-6)


def test_gae_vectorised_matches_per_env_loops():
    rng = np.random.default_rng(0)
    T, N = 37, 5
    r, v, nv = rng.normal(size=(3, T, N))
    term = rng.random((T, N)) < 0.05
    done = term | (rng.random((T, N)) < 0.05)
    adv, ret = compute_gae(*(torch.as_tensor(a, dtype=torch.float64) for a in (r, v, nv, term, done)), 0.99, 0.95)
    np.testing.assert_allclose(adv.numpy(), _reference_gae(r, v, nv, term, done, 0.99, 0.95), rtol=1e-10)
    np.testing.assert_allclose(ret.numpy(), adv.numpy() + v)


# ----------------------------------------------------------------------------- surrogate

@pytest.mark.parametrize("adv_sign", [1.0, -1.0])
def test_clipped_objective_gradient_is_zero_outside_clip_range_in_profitable_direction(adv_sign):
    eps = 0.2
    ratios = _t([0.5, 0.79, 0.9, 1.0, 1.1, 1.21, 1.5, 3.0]).requires_grad_(True)
    adv = torch.full_like(ratios, adv_sign)
    # Per-sample loss: sum instead of mean, so each gradient is the sample's own.
    (clipped_surrogate(ratios, adv, eps) * len(ratios)).backward()
    grad = ratios.grad.numpy()
    for r, gr in zip(ratios.detach().numpy(), grad):
        inside = 1 - eps <= r <= 1 + eps
        profitable_side = (r > 1 + eps) if adv_sign > 0 else (r < 1 - eps)
        if profitable_side:
            assert gr == 0.0, (r, gr)           # no incentive to move further
        else:
            assert gr == pytest.approx(-adv_sign), (r, gr)  # the unclipped (pessimistic) term: -A
        if inside:
            assert gr != 0.0


def test_clipped_objective_values_by_hand():
    # A = +2: ratio 1.5 -> clipped 1.2 * 2 = 2.4. A = -1.5: ratio 0.7 -> min(-1.05, -1.2) = -1.2; ratio 1.3 -> -1.95.
    assert clipped_surrogate(_t([1.5]), _t([2.0]), 0.2).item() == pytest.approx(-2.4)
    assert clipped_surrogate(_t([0.7]), _t([-1.5]), 0.2).item() == pytest.approx(1.2)
    assert clipped_surrogate(_t([1.3]), _t([-1.5]), 0.2).item() == pytest.approx(1.95)


# ----------------------------------------------------------------------------- KL

def test_gaussian_kl_matches_torch_closed_form():
    g = torch.Generator().manual_seed(0)
    mu_p, mu_q = torch.randn(10, 3, generator=g), torch.randn(10, 3, generator=g)
    ls_p, ls_q = 0.3 * torch.randn(10, 3, generator=g), 0.3 * torch.randn(10, 3, generator=g)
    ref = torch.distributions.kl_divergence(torch.distributions.Normal(mu_p, ls_p.exp()),
                                            torch.distributions.Normal(mu_q, ls_q.exp())).sum(-1)
    torch.testing.assert_close(gaussian_kl(mu_p, ls_p, mu_q, ls_q), ref)
    assert torch.all(gaussian_kl(mu_p, ls_p, mu_p, ls_p).abs() < 1e-6)


def test_sample_kl_estimate_converges_to_closed_form():
    g = torch.Generator().manual_seed(1)
    mu_old, ls_old = _t([0.1, -0.3]), _t([-0.2, 0.1])
    mu_new, ls_new = _t([0.25, -0.2]), _t([-0.3, 0.15])
    n = 200_000
    u = mu_old + torch.randn(n, 2, generator=g) * ls_old.exp()
    lp_old = gaussian_log_prob(u, mu_old.expand(n, 2), ls_old)
    lp_new = gaussian_log_prob(u, mu_new.expand(n, 2), ls_new)
    exact = gaussian_kl(mu_old, ls_old, mu_new, ls_new).item()
    assert approx_kl(lp_old, lp_new).item() == pytest.approx(exact, rel=0.03)
    ref_lp = torch.distributions.Normal(mu_old, ls_old.exp()).log_prob(u).sum(-1)
    torch.testing.assert_close(lp_old, ref_lp)


# ----------------------------------------------------------------------------- normalizer

def test_running_mean_std_matches_numpy_over_batches():
    rng = np.random.default_rng(0)
    data = rng.normal(3.0, 2.0, size=(1000, 4))
    rms = RunningMeanStd(4, epsilon=0.0)
    for chunk in np.array_split(data, 7):
        rms.update(torch.as_tensor(chunk))
    np.testing.assert_allclose(rms.mean.numpy(), data.mean(0), rtol=1e-9)
    np.testing.assert_allclose(rms.var.numpy(), data.var(0), rtol=1e-9)


def test_combine_moments_on_floats_equals_the_tensor_update():
    # The runner's reward statistics run the same formula on Python floats (its fast path).
    rng = np.random.default_rng(1)
    rms = RunningMeanStd(1)
    stats = (0.0, 1.0, float(rms.count))
    for _ in range(20):
        x = rng.normal(2.0, 3.0, size=8)
        rms.update(torch.as_tensor(x))
        stats = combine_moments(*stats, float(x.mean()), float(x.var()), x.size)
    assert (float(rms.mean[0]), float(rms.var[0]), float(rms.count)) == stats


def test_obs_normalizer_is_a_running_mean_std_with_sac_state_keys():
    g = torch.Generator().manual_seed(0)
    obs = torch.randn(500, 4, generator=g) * torch.tensor([1.0, 5.0, 0.0, 2.0]) + 3.0
    n = ObsNormalizer(4)
    assert isinstance(n, RunningMeanStd) and list(n.state_dict()) == ["mean", "std"]
    n.fit(obs, min_std=1e-2)
    torch.testing.assert_close(n.mean, obs.mean(0))
    torch.testing.assert_close(n.std, obs.std(0).clamp_min(1e-2))  # sample std, floored (the constant column)
    torch.testing.assert_close(n(obs), ((obs - obs.mean(0)) / obs.std(0).clamp_min(1e-2)).clamp(-10, 10))
    other = ObsNormalizer(4)
    other.load_state_dict({"mean": n.mean.clone(), "std": n.std.clone()})  # a SAC checkpoint's normalizer
    torch.testing.assert_close(other(obs), n(obs))


# ----------------------------------------------------------------------------- update mechanics

def _groups(obs: torch.Tensor, priv: torch.Tensor) -> dict[str, torch.Tensor]:
    return {"policy": obs, **({"critic": priv} if priv.shape[-1] else {})}


def _random_rollout(T: int, N: int, O: int, A: int, P: int, learner: PPO, seed: int = 0) -> Rollout:
    g = torch.Generator().manual_seed(seed)
    obs = torch.randn(T, N, O, generator=g) * 3 + 1
    priv = torch.rand(T, N, P, generator=g) + 0.5
    return _rollout_from(_groups(obs, priv), A, learner)


def _rollout_from(obs: dict[str, torch.Tensor], A: int, learner: PPO) -> Rollout:
    T, N = next(iter(obs.values())).shape[:2]
    acts = [learner.act({k: v[t] for k, v in obs.items()}) for t in range(T)]
    _, u, logp, mu, v = (torch.stack(x) for x in zip(*acts))
    rewards = next(iter(obs.values()))[..., 0] - u[..., 0].abs()
    z = torch.zeros(T, N)
    nv = torch.cat([v[1:], v[-1:]])
    return Rollout(obs=obs, actions=u, logp=logp, mu=mu, values=v, rewards=rewards, next_values=nv,
                   terminated=z, dones=z)


def _flat_obs(batch: Rollout) -> dict[str, torch.Tensor]:
    return {k: v.reshape(-1, v.shape[-1]) for k, v in batch.obs.items()}


@pytest.mark.parametrize("over", [
    {},
    {"loss": "kl"},
    {"clip_value": 0.2, "target_kl": 1e-6, "kl_control": "early_stop", "lr": 1e-2},
    {"target_kl": 0.01, "kl_control": "adaptive_lr", "action_squash": "tanh"},
    {"asymmetric": True},
    {"critic_hidden": [32]},  # actor and critic of different sizes: plain modules, no fast path
])
def test_update_runs_and_first_ratio_is_one(over):
    torch.manual_seed(0)
    cfg = C.build(PPOConfig, {"epochs": 2, "minibatch_size": 32, **over})
    P = 3 if cfg.asymmetric else 0
    learner = PPO({"policy": 5, **({"critic": P} if P else {})}, 2, cfg)
    assert isinstance(learner, OnPolicyLearner)
    assert (learner.model._fused is None) == ("critic_hidden" in over)
    batch = _random_rollout(16, 4, 5, 2, P, learner)
    # Recomputing the log-probs with the frozen normalizer reproduces the stored ones exactly.
    m = learner.model
    mu, _ = m(m.normalize(_flat_obs(batch)))
    torch.testing.assert_close(gaussian_log_prob(batch.actions.reshape(64, -1), mu, m.log_std), batch.logp.reshape(64))
    before = [p.detach().clone() for p in m.parameters()]
    stats = learner.update(batch)
    for k in ("loss/policy", "loss/value", "approx_kl", "clip_frac", "kl", "entropy"):
        assert math.isfinite(stats[k]), k
    assert any(not torch.equal(b, p) for b, p in zip(before, m.parameters()))
    if over.get("kl_control") == "early_stop":
        assert stats["grad_steps"] < 4  # a tiny target stops the epochs early
    if over.get("loss") == "kl":
        assert stats["beta"] == 1.0 and learner.beta in (0.5, 1.0, 2.0)


def test_model_is_encoders_actor_and_critic():
    cfg = C.build(PPOConfig, {"asymmetric": True, "hidden": [16, 8]})
    m = PPO({"policy": 4, "critic": 3}, 2, cfg).model
    assert isinstance(m.actor_encoder, ConcatEncoder) and m.actor_encoder.keys == ("policy",)
    assert m.critic_encoder.keys == ("policy", "critic")
    assert [l.weight.shape for l in m.actor if isinstance(l, torch.nn.Linear)] == [(16, 4), (8, 16), (2, 8)]
    assert [l.weight.shape for l in m.critic if isinstance(l, torch.nn.Linear)] == [(16, 7), (8, 16), (1, 8)]
    obs_n = m.normalize({"policy": torch.randn(5, 4), "critic": torch.randn(5, 3)})
    torch.testing.assert_close(m.actor(m.actor_encoder(obs_n)), m.actor_mean(obs_n))


@pytest.mark.parametrize("over", [{}, {"asymmetric": True}, {"loss": "kl", "clip_value": 0.5, "ent_coef": 0.01},
                                  {"target_kl": 0.01, "kl_control": "adaptive_lr", "activation": "elu"}])
def test_fused_fast_path_equals_plain_modules(over):
    """The fused pair (one baddbmm per layer, parameters re-homed into its layout) trains exactly what the
    plain actor and critic modules train: same outputs, same parameters after K updates from the same seed."""
    cfg = C.build(PPOConfig, {"epochs": 3, "minibatch_size": 32, "lr": 3e-3, **over})
    dims = {"policy": 5, **({"critic": 3} if cfg.asymmetric else {})}
    torch.manual_seed(0)
    fast = PPO(dims, 2, cfg)
    torch.manual_seed(0)
    plain = PPO(dims, 2, cfg, fuse=False)
    assert fast.model._fused is not None and plain.model._fused is None
    for (k, p), (k2, q) in zip(fast.model.state_dict().items(), plain.model.state_dict().items()):
        assert k == k2 and torch.equal(p, q), k  # same initial weights
    for it in range(4):
        batch = _random_rollout(16, 4, 5, 2, 3 if cfg.asymmetric else 0, fast, seed=it)
        torch.manual_seed(100 + it)
        s_fast = fast.update(batch)
        torch.manual_seed(100 + it)
        s_plain = plain.update(batch)
        assert s_fast["grad_steps"] == s_plain["grad_steps"]
        fast.observe(batch.obs)
        plain.observe(batch.obs)
    for (k, p), (_, q) in zip(fast.model.state_dict().items(), plain.model.state_dict().items()):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5, msg=k)
    obs_n = fast.model.normalize(_flat_obs(batch))
    for a, b in zip(fast.model(obs_n), fast.model.plain(obs_n)):  # within one model: fused == plain
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    # The actor padding of the fused layout (privileged columns, the critic-width head) stays zero.
    w0 = fast.model._fused.weights[0]
    assert torch.count_nonzero(w0[0, 5:]) == 0 and torch.count_nonzero(fast.model._fused.weights[-1][1, :, 1:]) == 0


def test_asymmetric_actor_ignores_privileged_input():
    torch.manual_seed(0)
    cfg = C.build(PPOConfig, {"asymmetric": True, "epochs": 3, "minibatch_size": 16})
    learner = PPO({"policy": 4, "critic": 3}, 2, cfg)
    learner.update(_random_rollout(8, 4, 4, 2, 3, learner))
    m = learner.model
    obs = torch.randn(5, 4)
    mu_a, v_a = m(m.normalize({"policy": obs, "critic": torch.zeros(5, 3)}))
    mu_b, v_b = m(m.normalize({"policy": obs, "critic": torch.full((5, 3), 7.0)}))
    torch.testing.assert_close(mu_a, mu_b)           # the actor never sees priv
    assert not torch.allclose(v_a, v_b)              # the critic does


def test_dict_observation_groups_train_and_act():
    """A gymnasium Dict observation (vector groups): the default encoders concatenate the groups; a
    learner trains a few iterations on it and its policy acts on dict observations."""
    import gymnasium as gym

    space = gym.spaces.Dict({"joints": gym.spaces.Box(-1, 1, (3,)), "target": gym.spaces.Box(-1, 1, (2,))})
    dims = {k: int(s.shape[0]) for k, s in space.spaces.items()}
    torch.manual_seed(0)
    cfg = C.build(PPOConfig, {"epochs": 2, "minibatch_size": 16, "lr": 1e-2})
    learner = PPO(dims, 2, cfg)
    assert learner.model.actor_encoder.keys == ("joints", "target") and learner.model._fused is not None
    g = torch.Generator().manual_seed(0)
    for it in range(3):
        obs = {"joints": torch.randn(8, 4, 3, generator=g), "target": torch.randn(8, 4, 2, generator=g) + 2}
        batch = _rollout_from(obs, 2, learner)
        stats = learner.update(batch)
        learner.observe(batch.obs)
        assert math.isfinite(stats["loss/value"])
    torch.testing.assert_close(learner.model.obs_rms["target"].mean.float(), torch.full((2,), 2.0), atol=0.3, rtol=0)
    sample = {k: np.stack([s.sample() for _ in range(6)]) for k, s in space.spaces.items()}
    a = learner.policy().act(sample)
    assert a.shape == (6, 2) and np.all(np.abs(a) <= 1)
    assert learner.policy().act({k: v[0] for k, v in sample.items()}).shape == (2,)


def test_shared_encoder_is_one_module_trained_by_both_losses():
    """A learned encoder shared by actor and critic (one assignment): the plain path runs, both heads read it."""
    cfg = C.build(PPOConfig, {"epochs": 1, "minibatch_size": 16})

    class Trunk(torch.nn.Module):
        out_dim = 8

        def __init__(self) -> None:
            super().__init__()
            self.net = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.Tanh())

        def forward(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
            return self.net(obs["policy"])

    trunk = Trunk()
    torch.manual_seed(0)
    learner = PPO(5, 2, cfg, actor_encoder=trunk, critic_encoder=trunk)
    m = learner.model
    assert m.actor_encoder is m.critic_encoder and m._fused is None
    assert sum(1 for n, _ in m.named_parameters() if "encoder" in n) == 2  # registered once (weight, bias)
    before = trunk.net[0].weight.detach().clone()
    learner.update(_random_rollout(8, 4, 5, 2, 0, learner))
    assert not torch.equal(before, trunk.net[0].weight)


@pytest.mark.parametrize("P", [0, 3])
def test_checkpoint_state_roundtrip_and_policy(tmp_path, P):
    from roborl.checkpoint import load_checkpoint, save_checkpoint

    torch.manual_seed(0)
    cfg = C.build(PPOConfig, {"epochs": 1, "minibatch_size": 32, "asymmetric": bool(P)})
    dims = {"policy": 5, **({"critic": P} if P else {})}
    learner = PPO(dims, 2, cfg)
    batch = _random_rollout(8, 4, 5, 2, P, learner)
    learner.update(batch)
    learner.observe(batch.obs)
    save_checkpoint(tmp_path, 1, {"learner": learner.state_dict()},
                    {"algo": "ppo", "config": {"ppo": C.to_dict(cfg)}, "dims": {"obs": 5, "act": 2, "priv": P}})
    state, meta, _ = load_checkpoint(tmp_path)
    other = PPO(dims, 2, cfg)
    other.load_state_dict(state["learner"])
    obs = np.random.default_rng(0).normal(size=(6, 5)).astype(np.float32) * 4
    pol_a, pol_b = learner.policy(), policy_from_checkpoint(state, meta, "cpu")
    np.testing.assert_array_equal(pol_a.act(obs), pol_b.act(obs))
    assert pol_b.act(obs).shape == (6, 2) and np.all(np.abs(pol_b.act(obs, deterministic=False)) <= 1)
    torch.testing.assert_close(other.model.obs_rms["policy"].mean, learner.model.obs_rms["policy"].mean)
    # Both continue identically (optimizer state restored too).
    torch.manual_seed(5)
    learner.update(batch)
    torch.manual_seed(5)
    other.update(batch)
    for p, q in zip(learner.model.parameters(), other.model.parameters()):
        torch.testing.assert_close(p, q)


def test_checkpoint_of_the_old_pair_layout_is_refused_with_one_line():
    cfg = C.build(PPOConfig, {})
    old_model = {"log_std": torch.zeros(2), "net.weights.0": torch.zeros(2, 5, 64), "obs_rms.mean": torch.zeros(5)}
    meta = {"algo": "ppo", "config": {"ppo": C.to_dict(cfg)}, "dims": {"obs": 5, "act": 2, "priv": 0}}
    with pytest.raises(UsageError, match="old PPO model layout") as e:
        policy_from_checkpoint({"learner": {"model": old_model}}, meta)
    assert "\n" not in str(e.value)
    with pytest.raises(UsageError, match="old PPO model layout"):
        PPO(5, 2, cfg).load_state_dict({"model": old_model, "optim": {}, "lr": 1e-3, "beta": 1.0})


def test_config_rejects_bad_values():
    with pytest.raises(C.ConfigError, match="ppo_clip|clip_eps"):
        C.build(PPOConfig, {"clip_eps": 1.5})
    with pytest.raises(C.ConfigError, match="loss"):
        C.build(PPOConfig, {"loss": "klx"})
    assert isinstance(ActorCritic(3, 1, C.build(PPOConfig, {})), torch.nn.Module)

"""SAC on camera observations: random shift, encoder gradients, target encoder, frozen cache, learning."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from roborl.batch import Batch
from roborl.config import build
from roborl.errors import UsageError
from roborl.learners import encoders as E
from roborl.learners.config import SACConfig
from roborl.learners.sac import SAC, policy_from_checkpoint

SPEC = {"proprio": (3,), "pixels.front": (16, 16, 3), "pixels.wrist": (16, 16, 3)}


def _cfg(**kw: object) -> SACConfig:
    enc = {"channels": 8, "layers": 2, "feature_dim": 16, "pad": 2, **kw.pop("encoder", {})}  # type: ignore[dict-item]
    return build(SACConfig, {"hidden": [32, 32], "batch_size": 16, "encoder": enc, **kw})


def _batch(b: int = 16, seed: int = 0, index: torch.Tensor | None = None) -> Batch:
    g = torch.Generator().manual_seed(seed)

    def obs() -> dict[str, torch.Tensor]:
        return {"proprio": torch.randn(b, 3, generator=g),
                "pixels.front": torch.randint(0, 256, (b, 16, 16, 3), generator=g, dtype=torch.uint8),
                "pixels.wrist": torch.randint(0, 256, (b, 16, 16, 3), generator=g, dtype=torch.uint8)}

    return Batch(obs=obs(), action=torch.rand(b, 2, generator=g) * 2 - 1, reward=torch.randn(b, generator=g),
                 next_obs=obs(), discount=torch.full((b,), 0.99), weight=torch.ones(b),
                 index=torch.arange(b) if index is None else index, is_demo=torch.zeros(b, dtype=torch.bool))


# ---------------------------------------------------------------- random shift
def test_random_shift_equals_per_sample_crop_within_pad() -> None:
    x = torch.rand(64, 3, 12, 12)
    pad = 3
    out = E.random_shift(x, pad, generator=torch.Generator().manual_seed(1))
    offsets = torch.randint(0, 2 * pad + 1, (64, 2), generator=torch.Generator().manual_seed(1))
    assert torch.equal(out, E.random_shift_reference(x, pad, offsets))  # the fast path is the plain crop
    assert int(offsets.min()) >= 0 and int(offsets.max()) <= 2 * pad  # shift (offset - pad) within [-pad, pad]


def test_random_shift_differs_per_sample_and_pad0_is_identity() -> None:
    img = torch.rand(1, 3, 12, 12).expand(32, 3, 12, 12).contiguous()
    out = E.random_shift(img, 4)
    distinct = {out[i].numpy().tobytes() for i in range(32)}
    assert len(distinct) > 8  # the same image, shifted differently per sample
    assert torch.equal(E.random_shift(img, 0), img)
    # A shift moves content by at most pad pixels: the centre pixel comes from within +-pad.
    x = torch.zeros(8, 1, 21, 21)
    x[:, :, 10, 10] = 1.0
    y = E.random_shift(x, 2)
    pos = y[:, 0].flatten(1).argmax(1)
    r, c = pos // 21, pos % 21
    assert bool(((r - 10).abs() <= 2).all()) and bool(((c - 10).abs() <= 2).all())


# ---------------------------------------------------------------- gradients and target encoder
def test_actor_loss_leaves_encoder_and_critic_loss_trains_it() -> None:
    torch.manual_seed(0)
    sac = SAC(SPEC, 2, _cfg(actor_delay=10**6))  # critic-only updates
    assert sac.encoder is not None
    before = [p.detach().clone() for p in sac.encoder.parameters()]
    sac.update(_batch())
    assert any(not torch.equal(a, p) for a, p in zip(before, sac.encoder.parameters()))  # the critic trains it
    mid = [p.detach().clone() for p in sac.encoder.parameters()]
    sac.critic_opt.zero_grad(set_to_none=True)
    b = _batch(seed=1)
    f = sac.features(b.obs, augment=True)["online"]
    sac._actor_step(f.detach(), b.action, b.is_demo)
    assert all(torch.equal(a, p) for a, p in zip(mid, sac.encoder.parameters()))
    assert all(p.grad is None for p in sac.encoder.parameters())


def test_full_update_actor_reads_detached_features() -> None:
    # Same seed, same batch: a critic+actor update moves the encoder exactly as a critic-only one.
    def run(actor_delay: int) -> list[torch.Tensor]:
        torch.manual_seed(0)
        sac = SAC(SPEC, 2, _cfg(actor_delay=actor_delay))
        sac.update(_batch())
        assert sac.encoder is not None
        return [p.detach().clone() for p in sac.encoder.parameters()]

    assert all(torch.equal(a, b) for a, b in zip(run(0), run(10**6)))


def test_target_encoder_polyak() -> None:
    torch.manual_seed(0)
    sac = SAC(SPEC, 2, _cfg(encoder={"tau": 0.3}))
    assert sac.encoder is not None and sac.encoder_target is not None
    old_t = [p.detach().clone() for p in sac.encoder_target.parameters()]
    assert all(torch.equal(a, p) for a, p in zip(old_t, sac.encoder.parameters()))  # starts as a copy
    sac.update(_batch())
    for t0, t1, o in zip(old_t, sac.encoder_target.parameters(), sac.encoder.parameters()):
        torch.testing.assert_close(t1, t0 + 0.3 * (o - t0))
    assert not any(p.requires_grad for p in sac.encoder_target.parameters())


def test_shared_encoder_and_bf16_update() -> None:
    sac = SAC(SPEC, 2, _cfg(encoder={"shared": True}, precision="bf16"))
    assert sac.encoder is not None and list(sac.encoder.convs) == ["shared"]
    m, td = sac.update(_batch())
    assert td.shape == (16,) and torch.isfinite(m["critic_loss"])


# ---------------------------------------------------------------- frozen encoder + cache
def _frozen(tmp_path, **kw: object) -> SAC:
    enc = E.PixelEncoder(SPEC, channels=8, layers=2, feature_dim=16)
    E.save_encoder(tmp_path / "enc.safetensors", enc)
    return SAC(SPEC, 2, _cfg(encoder={"weights": str(tmp_path / "enc.safetensors")}, **kw))


def test_frozen_encoder_embeds_once_per_frame_not_per_sample(tmp_path) -> None:
    sac = _frozen(tmp_path)
    enc0 = [p.detach().clone() for p in sac.encoder.parameters()]  # type: ignore[union-attr]
    base = _batch(b=8)
    rows = torch.arange(8)
    for i in range(20):  # 20 batches of 16 samples drawn from the same 8 stored rows
        pick = torch.randint(0, 8, (16,), generator=torch.Generator().manual_seed(i))
        b = Batch(obs={k: v[pick] for k, v in base.obs.items()}, action=base.action[pick], reward=base.reward[pick],
                  next_obs={k: v[pick] for k, v in base.next_obs.items()}, discount=base.discount[pick],
                  weight=base.weight[pick], index=rows[pick], is_demo=base.is_demo[pick])
        sac.update(b)
    seen = len(set(torch.cat([torch.randint(0, 8, (16,), generator=torch.Generator().manual_seed(i))
                              for i in range(20)]).tolist()))
    assert sac.cache_obs.encoded == seen and sac.cache_next.encoded == seen  # 320 samples, <= 8 encodes each
    assert all(torch.equal(a, p) for a, p in zip(enc0, sac.encoder.parameters()))  # type: ignore[union-attr]
    # The cached path equals the plain formula (encode every sample).
    f_cached = sac.features(base.obs, index=rows)["online"]
    f_plain = sac.features(base.obs)["online"]
    torch.testing.assert_close(f_cached, f_plain)


def test_next_obs_cache_recomputes_when_a_row_has_another_next_frame(tmp_path) -> None:
    # A row's next frame can change under its id (the n-step successor of a row of the open episode):
    # the next-obs cache checks a fingerprint. A row's own frame cannot: that cache is keyed by id alone.
    sac = _frozen(tmp_path)
    assert sac.cache_next.verify and not sac.cache_obs.verify
    b1, b2 = _batch(b=4, seed=1), _batch(b=4, seed=2)
    sac.features(b1.next_obs, index=torch.arange(4), next_obs=True)
    f = sac.features(b2.next_obs, index=torch.arange(4), next_obs=True)["online"]  # same ids, other frames
    torch.testing.assert_close(f, sac.features(b2.next_obs)["online"])
    assert sac.cache_next.encoded == 8


def test_frozen_cache_over_a_real_store_equals_encoding_every_sample(tmp_path) -> None:
    """The fast path (row-id cache for obs, verified cache for next obs) against the plain formula
    (encode every sampled frame), on a real store and sampler with 3-step returns over terminated and
    truncated episode ends."""
    import gymnasium as gym

    from roborl.store import ReplayStore, Sampler
    from roborl.store.config import SamplerConfig

    img = gym.spaces.Box(0, 255, (16, 16, 3), np.uint8)
    space = gym.spaces.Dict({"proprio": gym.spaces.Box(-np.inf, np.inf, (3,), np.float32),
                             "pixels": gym.spaces.Dict({"front": img, "wrist": img})})
    st = ReplayStore.open_or_create(tmp_path / "s", env_id="test/pix", observation_space=space,
                                    action_space=gym.spaces.Box(-1, 1, (2,), np.float32), online_capacity=500)
    rng = np.random.default_rng(0)

    def o() -> dict:
        return {"proprio": rng.standard_normal(3).astype(np.float32),
                "pixels": {"front": rng.integers(0, 256, (16, 16, 3), np.uint8),
                           "wrist": rng.integers(0, 256, (16, 16, 3), np.uint8)}}

    for ep in range(4):
        st.start_episode(o(), "demo" if ep == 0 else "online")
        for t in range(10):
            st.add_step(action=rng.uniform(-1, 1, 2).astype(np.float32), reward=1.0, next_obs=o(),
                        terminated=ep == 1 and t == 9, truncated=ep != 1 and t == 9)
    sac = _frozen(tmp_path)
    sampler = Sampler(st, build(SamplerConfig, {"n_step": 3}), seed=0)
    for _ in range(12):
        b = sampler.sample(32, gamma=0.9)
        for nxt, frames in ((False, b.obs), (True, b.next_obs)):
            fast = sac.features(frames, index=b.index, next_obs=nxt)["online"]
            torch.testing.assert_close(fast, sac.features(frames)["online"])
    # 384 samples of 40 stored rows: each frame encoded once per role, not once per sample.
    assert 30 <= sac.cache_obs.encoded <= 40 and 30 <= sac.cache_next.encoded <= 40
    st.close()


def test_frozen_weights_shape_mismatch_is_one_line(tmp_path) -> None:
    other = {"proprio": (3,), "pixels.front": (32, 32, 3), "pixels.wrist": (32, 32, 3)}
    E.save_encoder(tmp_path / "big.safetensors", E.PixelEncoder(other, channels=8, layers=2, feature_dim=16))
    with pytest.raises(UsageError, match=r"sac.encoder.weights: .* encodes inputs") as e:
        SAC(SPEC, 2, _cfg(encoder={"weights": str(tmp_path / "big.safetensors")}))
    assert "\n" not in str(e.value)
    with pytest.raises(UsageError, match="no such file"):
        SAC(SPEC, 2, _cfg(encoder={"weights": str(tmp_path / "missing.safetensors")}))


# ---------------------------------------------------------------- BC, residual, checkpoints
@pytest.mark.parametrize("frozen", [False, True])
def test_residual_bc_and_checkpoint_policy_roundtrip(tmp_path, frozen: bool) -> None:
    torch.manual_seed(0)
    sac = _frozen(tmp_path, residual=True, bc_pretrain_steps=3) if frozen else \
        SAC(SPEC, 2, _cfg(residual=True, bc_pretrain_steps=3))

    def sample(n: int, **kw: object) -> Batch:
        return _batch(b=n, seed=int(torch.randint(0, 1000, ())))

    sac.start_learning(sample, num_steps=64, num_demo_steps=64)
    sac.update(_batch())
    obs = {k: v[:3].numpy() for k, v in _batch(seed=5).obs.items()}
    a = sac.as_policy().act(obs)
    assert a.shape == (3, 2) and np.abs(a).max() <= 1.0
    cfg_dict = dataclasses.asdict(sac.cfg)
    meta = {"config": {"sac": cfg_dict}, "obs_shape": [3], "obs_spec": {k: list(v) for k, v in SPEC.items()},
            "act_shape": [2]}
    (tmp_path / "enc.safetensors").unlink(missing_ok=True)  # eval does not need the encoder file
    pol = policy_from_checkpoint({"learner": sac.full_state()}, meta)
    np.testing.assert_allclose(pol.act(obs), a, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- learning from pixels
def _dot_task(n: int, rng: np.random.Generator) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Images with a bright column at x in [-1, 1]; the best action is x (seen only in the image)."""
    x = rng.uniform(-1, 1, n).astype(np.float32)
    img = np.zeros((n, 16, 16, 3), np.uint8)
    col = np.clip(np.round((x + 1) / 2 * 15), 0, 15).astype(int)
    img[np.arange(n), :, col, :] = 255
    return {"proprio": torch.zeros(n, 1), "pixels.front": torch.from_numpy(img)}, torch.from_numpy(x)


@pytest.mark.slow  # ~60 s of CPU (300 conv updates)
def test_pixel_sac_learns_an_image_only_task() -> None:
    """A one-step task (discount 0) whose reward -(a - x)^2 depends on x seen only in the image."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    spec = {"proprio": (1,), "pixels.front": (16, 16, 3)}
    sac = SAC(spec, 1, build(SACConfig, {"hidden": [64, 64], "lr": 1e-3, "init_alpha": 0.05, "target_entropy": -3.0,
                                         "encoder": {"channels": 8, "layers": 2, "feature_dim": 16, "pad": 1}}))
    test_obs, test_x = _dot_task(256, rng)

    def score() -> float:
        a = sac.act(test_obs, deterministic=True)[:, 0]
        return float(-(a - test_x).pow(2).mean())

    before = score()
    for _ in range(300):
        obs, x = _dot_task(64, rng)
        a = torch.rand(64, 1) * 2 - 1
        b = Batch(obs=obs, action=a, reward=-(a[:, 0] - x).pow(2), next_obs=obs, discount=torch.zeros(64),
                  weight=torch.ones(64), index=torch.arange(64), is_demo=torch.zeros(64, dtype=torch.bool))
        sac.update(b)
    after = score()
    assert after > before + 0.2 and after > -0.15, (before, after)

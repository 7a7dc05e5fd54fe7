"""PPO on Dict observations with a camera, through the same encoder modules as SAC (encoders.GroupPixelEncoder)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from roborl.config import build
from roborl.learners import encoders as E
from roborl.learners.base import Rollout
from roborl.learners.config import PPOConfig
from roborl.learners.ppo import PPO

SIZE = 12
# Groups are PPO observation groups (names without dots: they key its per-group normalisers).
SPEC = {"proprio": (2,), "front": (SIZE, SIZE, 3)}


def _obs(n: int, rng: np.random.Generator) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """A one-step task: a bright column at x in [-1, 1] (seen only in the image); the best action is x."""
    x = rng.uniform(-1, 1, n).astype(np.float32)
    img = np.zeros((n, SIZE, SIZE, 3), np.uint8)
    img[np.arange(n), :, np.round((x + 1) / 2 * (SIZE - 1)).astype(int), :] = 255
    return ({"proprio": torch.from_numpy(rng.standard_normal((n, 2)).astype(np.float32)),
             "front": torch.from_numpy(img)}, torch.from_numpy(x))


def _ppo(seed: int = 0) -> tuple[PPO, E.GroupPixelEncoder]:
    torch.manual_seed(seed)
    enc = E.GroupPixelEncoder(SPEC, channels=8, layers=2, feature_dim=16, pad=1)
    cfg = build(PPOConfig, {"hidden": [64, 64], "lr": 1e-3, "epochs": 4, "minibatch_size": 64, "init_log_std": -0.5})
    dims = {k: int(np.prod(v)) for k, v in SPEC.items()}
    return PPO(dims, 1, cfg, actor_encoder=enc, critic_encoder=enc), enc


def _rollout(ppo: PPO, rng: np.random.Generator, t: int = 16, n: int = 16) -> tuple[Rollout, dict, float]:
    obs, x = _obs(t * n, rng)
    a, u, logp, mu, v = ppo.act(obs)
    r = -(a[:, 0] - x).pow(2)
    shape = (t, n)
    ro = Rollout(obs={k: o.reshape(t, n, *o.shape[1:]) for k, o in obs.items()}, actions=u.reshape(t, n, -1),
                 logp=logp.reshape(shape), mu=mu.reshape(t, n, -1), values=v.reshape(shape), rewards=r.reshape(shape),
                 next_values=torch.zeros(shape), terminated=torch.ones(shape), dones=torch.ones(shape))
    return ro, obs, float(r.mean())


def test_ppo_update_trains_the_shared_pixel_encoder_and_skips_image_normalisation() -> None:
    ppo, enc = _ppo()
    assert enc.raw_keys == ("front",) and ppo.model.raw_keys == {"front"}
    assert ppo.model.actor_encoder is ppo.model.critic_encoder is enc and not ppo.model.fusable()
    before = [p.detach().clone() for p in enc.parameters()]
    count0 = {k: float(ppo.model.obs_rms[k].count) for k in SPEC}
    ro, obs, _ = _rollout(ppo, np.random.default_rng(0))
    ppo.update(ro)
    ppo.observe(obs)
    moved = [not torch.equal(a, p) for a, p in zip(before, enc.parameters())]
    assert all(moved)  # every encoder tensor got a gradient step (actor and critic losses both reach it)
    assert float(ppo.model.obs_rms["front"].count) == count0["front"]  # images are read raw
    assert float(ppo.model.obs_rms["proprio"].count) > count0["proprio"]
    # Acting on one env's Dict obs without the flattened batch layout works too.
    a, *_ = ppo.act({k: v[:3] for k, v in obs.items()})
    assert a.shape == (3, 1)


@pytest.mark.slow  # ~80 s of CPU (160 PPO minibatch steps through the conv encoder)
def test_short_ppo_on_an_image_task_improves() -> None:
    ppo, enc = _ppo()
    rng = np.random.default_rng(1)
    test_obs, test_x = _obs(256, np.random.default_rng(99))

    def score() -> float:
        enc.eval()
        with torch.no_grad():
            err = float((ppo.model.deterministic(test_obs)[:, 0] - test_x).pow(2).mean())
        enc.train()
        return err

    before = score()
    for _ in range(40):
        ro, obs, _ = _rollout(ppo, rng)
        ppo.update(ro)
        ppo.observe(obs)
    after = score()
    assert after < 0.5 * before and after < 0.12, (before, after)

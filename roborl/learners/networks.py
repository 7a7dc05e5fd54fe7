"""Networks shared by the learners: MLPs, a vectorised critic ensemble, a tanh-Gaussian actor.

The critic ensemble keeps the weights of all N critics in one ``[N, in, out]`` tensor and
runs them with one batched matmul per layer (``torch.baddbmm``). On a 2-core CPU this
is what makes a twin/REDQ critic update cost about one network's worth of Python
overhead instead of N (SB3 and CleanRL loop over separate critics).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

LOG_STD_MIN, LOG_STD_MAX = -5.0, 2.0


def mlp(inp: int, hidden: tuple[int, ...], out: int, layer_norm: bool = False, out_gain: float | None = None) -> nn.Sequential:
    """``inp -> hidden... -> out`` with ReLU (and optional LayerNorm after each hidden Linear)."""
    layers: list[nn.Module] = []
    last = inp
    for h in hidden:
        layers.append(nn.Linear(last, h))
        if layer_norm:
            layers.append(nn.LayerNorm(h))
        layers.append(nn.ReLU())
        last = h
    head = nn.Linear(last, out)
    if out_gain is not None:
        nn.init.uniform_(head.weight, -out_gain, out_gain)
        nn.init.zeros_(head.bias)
    layers.append(head)
    return nn.Sequential(*layers)


def fp32_head(head: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Apply an output layer in float32, also under bfloat16 autocast (``SACConfig.precision``).

    Hidden layers may run in bf16 (most of the FLOPs), but Q values feed TD errors whose useful
    part is ~1e-3 of |Q|, below bf16's 8-bit mantissa, and the actor's mean/log-std feed log-probs;
    the output layers are a tiny share of the work, so they stay exact.
    """
    if x.dtype == torch.float32:
        return head(x)
    with torch.autocast(x.device.type, enabled=False):
        return head(x.float())


class EnsembleLinear(nn.Module):
    """N independent linear layers applied with one batched matmul. x: [N, B, in] -> [N, B, out]."""

    def __init__(self, n: int, inp: int, out: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n, inp, out))
        self.bias = nn.Parameter(torch.empty(n, 1, out))
        # Same init as nn.Linear (Kaiming-uniform with a=sqrt(5)), per member.
        bound = 1.0 / math.sqrt(inp)
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.baddbmm(self.bias, x, self.weight)


class EnsembleLayerNorm(nn.Module):
    """LayerNorm over the last dim with separate affine parameters per member. x: [N, B, d]."""

    def __init__(self, n: int, d: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(n, 1, d))
        self.bias = nn.Parameter(torch.zeros(n, 1, d))
        self.d = d

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addcmul(self.bias, F.layer_norm(x, (self.d,)), self.weight)  # one fused op for the affine


class CriticEnsemble(nn.Module):
    """N Q-functions Q_i(s, a). forward(obs [B, O], act [B, A]) -> q [N, B]."""

    def __init__(self, n: int, obs_dim: int, act_dim: int, hidden: tuple[int, ...], layer_norm: bool = False) -> None:
        super().__init__()
        self.n = n
        layers: list[nn.Module] = []
        last = obs_dim + act_dim
        for h in hidden:
            layers.append(EnsembleLinear(n, last, h))
            if layer_norm:
                layers.append(EnsembleLayerNorm(n, h))
            layers.append(nn.ReLU())
            last = h
        layers.append(EnsembleLinear(n, last, 1))
        self.net = nn.Sequential(*layers)
        # A plain tuple (not registered again) so forward doesn't rebuild a Sequential per call.
        self._layers = tuple(self.net)

    def forward(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        x = torch.cat([obs, act], dim=-1)
        x = x.unsqueeze(0).expand(self.n, *x.shape)
        for layer in self._layers[:-1]:
            x = layer(x)
        return fp32_head(self._layers[-1], x).squeeze(-1)


class TanhGaussianActor(nn.Module):
    """pi(a|s) = tanh(N(mu(s), sigma(s))). Actions in [-1, 1]^A.

    ``forward(obs [B, O]) -> (action [B, A], log_prob [B], mean_action [B, A])`` where
    log_prob includes the tanh change-of-variables correction (Haarnoja et al. 2018, appendix C):
    log pi(a|s) = log N(u; mu, sigma) - sum_i log(1 - tanh(u_i)^2),
    computed in the numerically stable form 2 (log 2 - u - softplus(-2u)).
    """

    def __init__(self, obs_dim: int, act_dim: int, hidden: tuple[int, ...]) -> None:
        super().__init__()
        self.trunk = mlp(obs_dim, hidden[:-1], hidden[-1]) if len(hidden) > 1 else nn.Linear(obs_dim, hidden[0])
        self.head = nn.Linear(hidden[-1], 2 * act_dim)
        self.act_dim = act_dim

    def dist_params(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = F.relu(self.trunk(obs))
        mu, log_std = fp32_head(self.head, h).chunk(2, dim=-1)
        # Soft clamp keeps gradients alive at the bounds (as in SAC implementations since Haarnoja 2018).
        log_std = LOG_STD_MIN + 0.5 * (LOG_STD_MAX - LOG_STD_MIN) * (torch.tanh(log_std) + 1.0)
        return mu, log_std

    def forward(self, obs: torch.Tensor, deterministic: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mu, log_std = self.dist_params(obs)
        std = log_std.exp()
        u = mu if deterministic else mu + std * torch.randn_like(mu)
        log_prob = squashed_log_prob(u, mu, log_std)
        return torch.tanh(u), log_prob, torch.tanh(mu)


def squashed_log_prob(u: torch.Tensor, mu: torch.Tensor, log_std: torch.Tensor) -> torch.Tensor:
    """log density of a = tanh(u), u ~ N(mu, exp(log_std)^2). Shapes [B, A] -> [B]."""
    gauss = (-0.5 * ((u - mu) / log_std.exp()) ** 2 - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
    # log(1 - tanh(u)^2) = 2 * (log 2 - u - softplus(-2u)), exact and stable for large |u|.
    correction = (2.0 * (math.log(2.0) - u - F.softplus(-2.0 * u))).sum(-1)
    return gauss - correction


class DeterministicPolicy(nn.Module):
    """a = tanh(MLP(s)): the behaviour-cloning base policy of residual mode. [B, O] -> [B, A]."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: tuple[int, ...]) -> None:
        super().__init__()
        self.net = mlp(obs_dim, hidden, act_dim)
        self._layers = tuple(self.net)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        x = obs
        for layer in self._layers[:-1]:
            x = layer(x)
        return torch.tanh(fp32_head(self._layers[-1], x))


class ObsNormalizer(nn.Module):
    """Fixed affine observation normalisation (mean/std buffers, saved in state_dict). [B, O] -> [B, O].

    SAC fits it once on the data available when learning starts (demos + warmup) and
    keeps it fixed: a moving normaliser would silently change what the critic's inputs
    mean for data already in the replay store.
    """

    def __init__(self, obs_dim: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(obs_dim))
        self.register_buffer("std", torch.ones(obs_dim))

    def fit(self, obs: torch.Tensor, min_std: float = 1e-2) -> None:
        self.mean.copy_(obs.mean(0))
        self.std.copy_(obs.std(0).clamp_min(min_std))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return ((obs - self.mean) / self.std).clamp(-10.0, 10.0)

"""Networks shared by the learners: MLPs, a vectorised critic ensemble, a tanh-Gaussian actor,
the torch running mean/std normaliser and the observation encoders.

The critic ensemble keeps the weights of all N critics in one ``[N, in, out]`` tensor and
runs them with one batched matmul per layer (``torch.baddbmm``). On a 2-core CPU this
is what makes a twin/REDQ critic update cost about one network's worth of Python
overhead instead of N (SB3 and CleanRL loop over separate critics).
"""

from __future__ import annotations

import math
from typing import Any

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


def fp32_head(head: nn.Module, x: torch.Tensor, *args: Any) -> torch.Tensor:
    """Apply an output layer in float32, also under bfloat16 autocast (``SACConfig.precision``).

    Hidden layers may run in bf16 (most of the FLOPs), but Q values feed TD errors whose useful
    part is ~1e-3 of |Q|, below bf16's 8-bit mantissa, and the actor's mean/log-std feed log-probs;
    the output layers are a tiny share of the work, so they stay exact.
    """
    # Test autocast itself, not x's dtype: LayerNorm's output is float32 under autocast, and autocast
    # would still cast the head's matmul to bf16.
    if x.dtype == torch.float32 and not torch.is_autocast_enabled(x.device.type):
        return head(x, *args)
    with torch.autocast(x.device.type, enabled=False):
        return head(x.float(), *args)


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

    def forward(self, x: torch.Tensor, members: torch.Tensor | None = None) -> torch.Tensor:
        """members: indices [k] of the members to run (x is then [k, B, in]); None runs all N."""
        if members is None:
            return torch.baddbmm(self.bias, x, self.weight)
        return torch.baddbmm(self.bias.index_select(0, members), x, self.weight.index_select(0, members))


class EnsembleLayerNorm(nn.Module):
    """LayerNorm over the last dim with separate affine parameters per member. x: [N, B, d]."""

    def __init__(self, n: int, d: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(n, 1, d))
        self.bias = nn.Parameter(torch.zeros(n, 1, d))
        self.d = d

    def forward(self, x: torch.Tensor, members: torch.Tensor | None = None) -> torch.Tensor:
        """members: as in :class:`EnsembleLinear`."""
        w, b = self.weight, self.bias
        if members is not None:
            w, b = w.index_select(0, members), b.index_select(0, members)
        return torch.addcmul(b, F.layer_norm(x, (self.d,)), w)  # one fused op for the affine


class CriticEnsemble(nn.Module):
    """N Q-functions Q_i(s, a). forward(obs [B, O], act [B, A]) -> q [N, B].

    ``forward(..., members=idx)`` runs only the members ``idx`` [k] and returns q [k, B], equal to
    ``forward(obs, act).index_select(0, idx)``: REDQ/RLPD's target needs 2 of 10 critics, and running
    the other 8 only to drop them was about a tenth of an update's critic work (counted in BENCHMARKS.md).
    """

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

    def forward(self, obs: torch.Tensor, act: torch.Tensor, members: torch.Tensor | None = None) -> torch.Tensor:
        x = torch.cat([obs, act], dim=-1)
        x = x.unsqueeze(0).expand(self.n if members is None else members.shape[0], *x.shape)
        for layer in self._layers[:-1]:
            x = layer(x, members) if isinstance(layer, (EnsembleLinear, EnsembleLayerNorm)) else layer(x)
        return fp32_head(self._layers[-1], x, members).squeeze(-1)


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


def combine_moments(mean: Any, var: Any, count: Any, b_mean: Any, b_var: Any, b: Any) -> tuple[Any, Any, Any]:
    """Merge running (mean, population var, count) with a batch's (mean, var, size): the parallel
    formula of Chan, Golub & LeVeque (1979). Pure arithmetic, so it runs on Python floats and on
    tensors alike (the PPO runner's per-step reward statistics use floats: a dozen torch ops on a
    1-element tensor per env step cost more than the env's numpy side). Shapes: any, broadcast.
    """
    delta = b_mean - mean
    tot = count + b
    new_mean = mean + delta * b / tot
    m2 = var * count + b_var * b + delta * delta * count * b / tot
    return new_mean, m2 / tot, tot


class RunningMeanStd(nn.Module):
    """Running mean / population variance as module buffers (saved in state_dicts). x: [..., D] -> [..., D].

    The torch twin of :class:`roborl.envs.wrappers.RunningMeanStd` (numpy, env side): PPO's
    observation and reward statistics, and the base of SAC's :class:`ObsNormalizer`. Batches merge
    with :func:`combine_moments`, computed in the buffers' dtype (float64 by default). ``count``
    starts at ``epsilon`` so the first division is safe; ``dim == 0`` is allowed (a no-op).
    ``forward`` normalises: ``clamp((x - mean) / std, -clip, clip)`` with ``std = sqrt(var + 1e-8)``.
    """

    def __init__(self, dim: int, clip: float = 10.0, epsilon: float = 1e-4, dtype: torch.dtype = torch.float64) -> None:
        super().__init__()
        self.clip = clip
        self.epsilon = epsilon
        self.register_buffer("mean", torch.zeros(dim, dtype=dtype))
        self.register_buffer("var", torch.ones(dim, dtype=dtype))
        self.register_buffer("count", torch.tensor(epsilon, dtype=dtype))
        self._cache: tuple | None = None

    @torch.no_grad()
    def reset(self) -> None:
        """Forget everything seen: mean 0, var 1, count epsilon."""
        self.mean.zero_()
        self.var.fill_(1.0)
        self.count.fill_(self.epsilon)

    @torch.no_grad()
    def update(self, x: torch.Tensor) -> None:
        """Fold a batch ``x: [B, D]`` (any leading dims) into the statistics."""
        x = x.reshape(-1, self.mean.shape[0]).to(self.mean.dtype)
        if x.shape[0] == 0 or x.shape[1] == 0:
            return
        b_mean, b_var, b = x.mean(0), x.var(0, unbiased=False), x.shape[0]
        if float(self.count) == 0.0:
            # An empty accumulator takes the batch moments as they are: the formula with count 0,
            # without the rounding of its mean + delta * b / b.
            mean, var, tot = b_mean, b_var, torch.tensor(float(b), dtype=self.count.dtype)
        else:
            mean, var, tot = combine_moments(self.mean, self.var, self.count, b_mean, b_var, b)
        self.mean.copy_(mean)
        self.var.copy_(var)
        self.count.copy_(tot)

    def _scale(self) -> torch.Tensor:
        """The divisor of :meth:`forward`, [D] in the buffers' dtype."""
        return (self.var + 1e-8).sqrt()

    def _sources(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The buffers :meth:`_scale` reads (their versions key the cache)."""
        return self.mean, self.var

    def affine(self, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor, float]:
        """(mean [D], divisor [D]) in ``dtype`` as :meth:`forward` applies them, and the clip.

        Cached until the buffers change (update / load_state_dict bump their version counters; .to()
        makes new storage): the per-step inference path then runs 3 ops instead of 7. Same arithmetic
        as without the cache, so results are identical.
        """
        a, b = self._sources()
        key = (a._version, b._version, a.data_ptr(), b.data_ptr(), dtype)
        c = self._cache
        if c is None or c[0] != key:
            with torch.no_grad():
                c = self._cache = (key, self.mean.to(dtype), self._scale().to(dtype))
        return c[1], c[2], self.clip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean, scale, clip = self.affine(x.dtype)
        return ((x - mean) / scale).clamp(-clip, clip)


class ObsNormalizer(RunningMeanStd):
    """Fixed affine observation normalisation (mean/std buffers, saved in state_dict). [B, O] -> [B, O].

    SAC fits it once on the data available when learning starts (demos + warmup) and
    keeps it fixed: a moving normaliser would silently change what the critic's inputs
    mean for data already in the replay store. A :class:`RunningMeanStd` (float32, one batch)
    whose divisor is the sample std, floored at ``min_std``; its state_dict holds ``mean`` and
    ``std`` only (var and count are working state of :meth:`fit`).
    """

    def __init__(self, obs_dim: int) -> None:
        super().__init__(obs_dim, clip=10.0, epsilon=0.0, dtype=torch.float32)
        self.register_buffer("var", self.var, persistent=False)
        self.register_buffer("count", self.count, persistent=False)
        self.register_buffer("std", torch.ones(obs_dim))

    @torch.no_grad()
    def fit(self, obs: torch.Tensor, min_std: float = 1e-2) -> None:
        """Statistics of ``obs: [B, O]`` alone (earlier fits are forgotten)."""
        self.reset()
        self.update(obs)
        n = int(obs.shape[0])
        # The sample (Bessel-corrected) std, as torch.std; a floor keeps constant features finite.
        self.std.copy_((self.var * (n / max(n - 1, 1))).sqrt().clamp_min(min_std))

    def _scale(self) -> torch.Tensor:
        return self.std

    def _sources(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.mean, self.std


class ConcatEncoder(nn.Module):
    """Observation groups -> one feature vector: ``{k: [B, O_k]} -> [B, sum_k O_k]`` (``keys`` in order).

    The parameter-free encoder of vector observations. An encoder is any module with an ``out_dim``
    and this call signature (a CNN over an image group, an MLP trunk shared by actor and critic).
    """

    def __init__(self, dims: dict[str, int], keys: tuple[str, ...]) -> None:
        super().__init__()
        self.keys = tuple(keys)
        self.out_dim = int(sum(dims[k] for k in self.keys))

    def forward(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        if len(self.keys) == 1:
            return obs[self.keys[0]]
        return torch.cat([obs[k] for k in self.keys], -1)

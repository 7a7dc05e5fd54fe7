"""Retrace (Munos et al. 2016): truncated importance-weighted multi-step returns, the correction
``store.sampler.nstep_correction: retrace`` applies to the off-policy sampler's n-step traces
(``roborl.store.sampler.TraceBatch``). Pure tensor math: no store, env or file."""
from __future__ import annotations

import torch

__all__ = ["retrace_traces", "retrace_return"]


def retrace_traces(pi_logp: torch.Tensor, mu_logp: torch.Tensor, lam: float) -> torch.Tensor:
    """Retrace's truncated importance weights c = lam * min(1, pi/mu), [B, n] -> [B, n]; 0 where mu is
    unknown (NaN): cutting a trace (any 0 <= c <= pi/mu) keeps Retrace's fixed point (Munos et al. 2016)."""
    c = lam * torch.exp(torch.clamp(pi_logp - mu_logp, max=0.0))
    return torch.nan_to_num(c, nan=0.0)


def retrace_return(reward: torch.Tensor, valid: torch.Tensor, terminal: torch.Tensor, c: torch.Tensor,
                   q: torch.Tensor, v_next: torch.Tensor, gamma: float) -> torch.Tensor:
    """The Retrace target of the first step of each trace (Munos et al. 2016), backwards over k = n-1..0:

        G_k = r_k + gamma (1 - terminal_k) [V(s_{k+1}) + valid_{k+1} c_{k+1} (G_{k+1} - Q(s_{k+1}, a_{k+1}))]

    Args (all [B, n], step k of the trace): reward r_k; valid (step inside the episode); terminal
    (s_{k+1} terminal); c the traces (c_0 unused); q = Q(s_k, a_k) (q_0 unused); v_next = V(s_{k+1}) =
    E_pi Q(s_{k+1}, .). A time-limit end or the window's end bootstraps from V; a terminal does not.
    With c = 1 and q_k = v_next_{k-1} (V estimated by the taken action, what the plain n-step return
    does), G_0 is the uncorrected n-step return sum_k gamma^k r_k + gamma^K V(s_K). Returns [B].
    """
    B, n = reward.shape
    g = torch.zeros(B, dtype=reward.dtype, device=reward.device)
    for k in range(n - 1, -1, -1):
        carry = torch.zeros_like(g)
        if k + 1 < n:
            carry = torch.where(valid[:, k + 1], c[:, k + 1] * (g - q[:, k + 1]), carry)
        gk = reward[:, k] + gamma * (~terminal[:, k]).to(g.dtype) * (v_next[:, k] + carry)
        g = torch.where(valid[:, k], gk, torch.zeros_like(g))
    return g

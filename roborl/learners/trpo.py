"""Natural policy gradient and TRPO's step (Kakade 2001; Schulman et al. 2015): the pieces, read top to bottom.

One TRPO update from the surrogate L(theta) = E[pi_theta(a|s) / pi_old(a|s) A(s, a)] and the mean
KL(pi_old || pi_theta) over the batch's states:

1. g = grad L at theta_old;
2. x ~= F^-1 g by conjugate gradient, using only Fisher-vector products F v = grad (grad KL . v)
   (the KL's Hessian at theta_old is the Fisher matrix), never forming F;
3. the largest step along x with quadratic KL model 0.5 s^T F s = delta: s = sqrt(2 delta / x^T F x) x;
4. backtracking line search: accept theta_old + beta^k s once the exact mean KL <= delta and the
   surrogate improves; if no k does, keep theta_old (the step is rejected).

Parameters move as one flat vector (``torch.nn.utils.parameters_to_vector``).
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch.nn.utils import parameters_to_vector, vector_to_parameters


def flat_grad(y: torch.Tensor, params: Sequence[torch.Tensor], create_graph: bool = False) -> torch.Tensor:
    """dy/dparams as one flat vector [P]."""
    grads = torch.autograd.grad(y, list(params), create_graph=create_graph)
    return torch.cat([g.reshape(-1) for g in grads])


def fisher_vector_product(kl_fn: Callable[[], torch.Tensor], params: Sequence[torch.Tensor], v: torch.Tensor,
                          damping: float = 0.0) -> torch.Tensor:
    """(F + damping I) v [P], F the Hessian of the mean KL(pi_old || pi_theta) at theta = theta_old.

    ``kl_fn()`` must evaluate the KL with pi_old detached, at the current parameters (= theta_old).
    Two backward passes (Pearlmutter's trick), O(P) memory.
    """
    g = flat_grad(kl_fn(), params, create_graph=True)
    return flat_grad((g * v.detach()).sum(), params) + damping * v


def conjugate_gradient(avp: Callable[[torch.Tensor], torch.Tensor], b: torch.Tensor, iters: int = 10,
                       tol: float = 1e-10) -> torch.Tensor:
    """Solve A x = b for symmetric positive-definite A given only x -> A x: b [P] -> x [P] (Shewchuk 1994)."""
    x = torch.zeros_like(b)
    r = b.clone()
    p = b.clone()
    rr = r @ r
    for _ in range(iters):
        if rr <= tol:
            break
        ap = avp(p)
        step = rr / (p @ ap)
        x = x + step * p
        r = r - step * ap
        rr_new = r @ r
        p = r + (rr_new / rr) * p
        rr = rr_new
    return x


def natural_step(x: torch.Tensor, fx: torch.Tensor, max_kl: float) -> torch.Tensor:
    """s = sqrt(2 delta / x^T F x) x: the step along x whose quadratic KL model 0.5 s^T F s equals delta."""
    return torch.sqrt(2.0 * max_kl / (x @ fx).clamp_min(1e-12)) * x


@torch.no_grad()
def line_search(params: Sequence[torch.Tensor], surrogate_fn: Callable[[], torch.Tensor],
                kl_fn: Callable[[], torch.Tensor], full_step: torch.Tensor, max_kl: float,
                backtrack: float = 0.5, max_backtracks: int = 10) -> tuple[bool, int]:
    """Try theta_old + backtrack^k * full_step for k = 0.. until mean KL <= max_kl and the surrogate
    improves; leave the parameters there and return (True, k). None passes: restore theta_old, return (False, -1)."""
    old = parameters_to_vector(params).clone()
    base = float(surrogate_fn())
    for k in range(max_backtracks):
        vector_to_parameters(old + backtrack ** k * full_step, params)
        if float(kl_fn()) <= max_kl and float(surrogate_fn()) > base:
            return True, k
    vector_to_parameters(old, params)
    return False, -1

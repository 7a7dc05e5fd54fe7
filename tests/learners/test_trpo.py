"""NPG/TRPO pieces on a tiny linear softmax policy: FVP == explicit Fisher v, CG solves F x = g,
the natural step hits the KL model, and the line search accepts only steps within the trust region."""
from __future__ import annotations

import math

import torch
from torch.nn.utils import parameters_to_vector

from roborl.learners.trpo import conjugate_gradient, fisher_vector_product, flat_grad, line_search, natural_step

S, A, O = 64, 3, 4  # states, actions, obs features


def _setup(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    obs = torch.randn(S, O, generator=g, dtype=torch.float64)
    pol = torch.nn.Linear(O, A).double()
    with torch.no_grad():
        for p in pol.parameters():
            p.copy_(0.5 * torch.randn(p.shape, generator=g, dtype=torch.float64))
    logp_old = torch.log_softmax(pol(obs), -1).detach()  # [S, A]
    act = torch.multinomial(logp_old.exp(), 1, generator=g).squeeze(1)  # [S]
    adv = torch.randn(S, generator=g, dtype=torch.float64)

    def kl() -> torch.Tensor:  # mean_s KL(pi_old(.|s) || pi_theta(.|s))
        logp = torch.log_softmax(pol(obs), -1)
        return (logp_old.exp() * (logp_old - logp)).sum(-1).mean()

    def surrogate() -> torch.Tensor:  # mean_s pi_theta(a|s) / pi_old(a|s) A
        logp = torch.log_softmax(pol(obs), -1).gather(1, act[:, None]).squeeze(1)
        return ((logp - logp_old.gather(1, act[:, None]).squeeze(1)).exp() * adv).mean()

    return pol, obs, logp_old, kl, surrogate


def _explicit_fisher(pol: torch.nn.Linear, obs: torch.Tensor, logp_old: torch.Tensor) -> torch.Tensor:
    """F = mean_s sum_a pi(a|s) grad log pi(a|s) grad log pi(a|s)^T, built entry by entry: [P, P]."""
    params = list(pol.parameters())
    P = sum(p.numel() for p in params)
    F = torch.zeros(P, P, dtype=torch.float64)
    for s in range(S):
        logp = torch.log_softmax(pol(obs[s]), -1)
        for a in range(A):
            gl = torch.cat([g.reshape(-1) for g in torch.autograd.grad(logp[a], params, retain_graph=True)])
            F += logp_old[s, a].exp() * torch.outer(gl, gl)
    return F / S


def test_fvp_equals_explicit_fisher_times_v_and_cg_solves_fx_eq_g() -> None:
    pol, obs, logp_old, kl, surrogate = _setup()
    params = list(pol.parameters())
    F = _explicit_fisher(pol, obs, logp_old)
    v = torch.randn(F.shape[0], dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(fisher_vector_product(kl, params, v), F @ v, rtol=1e-8, atol=1e-10)
    torch.testing.assert_close(fisher_vector_product(kl, params, v, damping=0.1), F @ v + 0.1 * v, rtol=1e-8, atol=1e-10)
    # CG with damping (F of a softmax is singular: logits shifted together change nothing).
    damp = 1e-3
    g = flat_grad(surrogate(), params)
    x = conjugate_gradient(lambda p: fisher_vector_product(kl, params, p, damp), g, iters=50, tol=1e-20)
    torch.testing.assert_close((F + damp * torch.eye(F.shape[0], dtype=torch.float64)) @ x, g, rtol=1e-6, atol=1e-9)
    # Step size: the quadratic KL model of the natural step is exactly delta.
    delta = 0.01
    s = natural_step(x, fisher_vector_product(kl, params, x, damp), delta)
    assert math.isclose(0.5 * float(s @ (F + damp * torch.eye(F.shape[0], dtype=torch.float64)) @ s), delta, rel_tol=1e-8)
    assert math.isclose(float(s.norm() / x.norm()), math.sqrt(2 * delta / float(x @ (F @ x + damp * x))), rel_tol=1e-8)


def test_line_search_accepts_within_kl_with_improvement_else_rejects() -> None:
    pol, obs, logp_old, kl, surrogate = _setup(2)
    params = list(pol.parameters())
    delta = 0.01
    g = flat_grad(surrogate(), params)
    x = conjugate_gradient(lambda p: fisher_vector_product(kl, params, p, 1e-3), g, iters=20)
    step = natural_step(x, fisher_vector_product(kl, params, x, 1e-3), delta)
    old = parameters_to_vector(params).clone()
    with torch.no_grad():
        before = float(surrogate())
    ok, k = line_search(params, surrogate, kl, step, delta)
    assert ok and k >= 0
    with torch.no_grad():
        assert float(kl()) <= delta and float(surrogate()) > before
    # A step 100x too large in the wrong direction is rejected after every backtrack: parameters restored.
    torch.nn.utils.vector_to_parameters(old, params)
    ok, k = line_search(params, surrogate, kl, -100 * step, delta, max_backtracks=5)
    assert not ok and k == -1
    torch.testing.assert_close(parameters_to_vector(params), old, rtol=0, atol=0)

"""TRPO (Schulman et al. 2015): the natural policy gradient step (Kakade 2001) inside a trust region, read top to bottom.

One TRPO update from the surrogate L(theta) = E[pi_theta(a|s) / pi_old(a|s) A(s, a)] and the mean
KL(pi_old || pi_theta) over the batch's states:

1. g = grad L at theta_old;
2. x ~= F^-1 g by conjugate gradient, using only Fisher-vector products F v = grad (grad KL . v)
   (the KL's Hessian at theta_old is the Fisher matrix), never forming F;
3. the largest step along x with quadratic KL model 0.5 s^T F s = delta: s = sqrt(2 delta / x^T F x) x;
4. backtracking line search: accept theta_old + beta^k s once the exact mean KL <= delta and the
   surrogate improves; if no k does, keep theta_old (the step is rejected).

Parameters move as one flat vector (``torch.nn.utils.parameters_to_vector``). :class:`TRPO` is the
learner ``train.algo=trpo`` trains (config :class:`roborl.learners.config.TRPOConfig`): NPG's update
(:mod:`roborl.learners.npg`) with step 4 in place of NPG's plain step.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
from torch.nn.utils import parameters_to_vector, vector_to_parameters

from roborl.learners.actor_critic import load_policy
from roborl.learners.config import TRPOConfig
# Steps 1-3 are the natural policy gradient's (roborl.learners.npg); re-exported here with step 4.
from roborl.learners.npg import NPG, conjugate_gradient, fisher_vector_product, flat_grad, natural_step

__all__ = ["TRPO", "line_search", "conjugate_gradient", "fisher_vector_product", "flat_grad", "natural_step",
           "policy_from_checkpoint"]


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


class TRPO(NPG):
    """TRPO learner: NPG's natural step, accepted only through :func:`line_search`."""

    cfg: TRPOConfig

    def policy_step(self, params: list[torch.nn.Parameter], step: torch.Tensor, surrogate: Any,
                    kl: Any) -> dict[str, float]:
        ok, k = line_search(params, surrogate, kl, step, self.cfg.max_kl, self.cfg.backtrack, self.cfg.max_backtracks)
        return {"accepted": float(ok), "backtracks": float(k)}


def policy_from_checkpoint(state: dict[str, Any], meta: dict[str, Any], device: str = "cpu") -> Any:
    return load_policy(state, meta, device, "trpo", TRPOConfig)

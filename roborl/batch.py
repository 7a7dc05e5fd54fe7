"""The one transition batch type: what the replay sampler produces and off-policy learners consume.

It lives below both the store and the learners (it imports neither), so a learner can name it
without knowing about zarr, and the store can build it without knowing about learners.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # annotations only: importing this module never imports torch
    import torch

__all__ = ["Batch"]


@dataclass
class Batch:
    """A batch of B transitions (torch tensors on the sampler's device).

    obs / next_obs: [B, *obs_shape] (a dict of such tensors for Dict spaces);
    action: [B, *act_shape] the EXECUTED action; reward: [B] n-step discounted sum;
    discount: [B] gamma^k, 0 after a terminal; weight: [B] importance weights (ones
    unless kind=per); index: [B] int64 row ids for update_priorities; is_demo: [B] bool.
    """

    obs: torch.Tensor | dict[str, torch.Tensor]
    action: torch.Tensor
    reward: torch.Tensor
    next_obs: torch.Tensor | dict[str, torch.Tensor]
    discount: torch.Tensor
    weight: torch.Tensor
    index: torch.Tensor
    is_demo: torch.Tensor

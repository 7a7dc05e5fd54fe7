"""Goal relabelling for hindsight experience replay (HER; Andrychowicz et al. 2017).

Reach, Push and PickPlace are goal-conditioned: the goal is part of the flat state observation,
and the reward is a function of the next observation and the goal. A :class:`GoalRelabeler`
describes that structure for one task (which observation slices hold the achieved goal, the
goal and the goal-minus-achieved feature, and how the reward is computed), so that the
replay sampler can replace a stored transition's goal with a goal the episode actually
reached later and recompute the reward exactly as the env would have. Nair et al. (2018)
combine HER with demonstrations on the same block-pushing tasks; for us it turns every
imperfect push (the cube ending 4 cm off) into a successful example for the goal it did reach,
which is precisely the data the near-miss failures lack (BENCHMARKS.md, SAC section).

The relabeler works on torch tensors [B, O] on any device (the sampler's RAM/GPU mirror).
Tasks expose it as ``env.unwrapped.goal_relabeler()`` (None where there is no goal to relabel,
e.g. PegInsert's fixed hole).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["GoalRelabeler"]


@dataclass(frozen=True)
class GoalRelabeler:
    """The goal structure of a flat observation and its reward (our arm tasks' convention).

    Reward for next observation ``o'`` and goal ``g`` (``a`` = achieved goal in ``o'``)::

        d       = |g - a| over the first ``distance_dims`` coordinates (2 = table plane, 3 = 3-D)
        success = d < threshold
        dense   = -d - shaping_weight * |o'[shaping]| + success_bonus * success
        sparse  = 0 if success else -1
    """

    achieved: tuple[int, int]         # [start, stop) of the achieved goal in the observation (e.g. cube position)
    goal: tuple[int, int]             # [start, stop) of the desired goal
    goal_minus_achieved: tuple[int, int] | None  # [start, stop) of the feature goal - achieved, if the obs has it
    distance_dims: int                # coordinates the success distance uses (2: xy, 3: xyz)
    threshold: float                  # success distance (m)
    sparse: bool = False              # reward_type == "sparse"
    shaping: tuple[int, int] | None = None  # [start, stop) of a vector whose norm is a dense penalty (object - ee)
    shaping_weight: float = 0.0
    success_bonus: float = 0.0

    def achieved_goal(self, obs: torch.Tensor) -> torch.Tensor:
        """obs [..., O] -> achieved goal [..., G]."""
        return obs[..., self.achieved[0]:self.achieved[1]]

    def with_goal(self, obs: torch.Tensor, goal: torch.Tensor) -> torch.Tensor:
        """A copy of obs [..., O] whose goal (and goal - achieved feature) is ``goal`` [..., G]."""
        out = obs.clone()
        out[..., self.goal[0]:self.goal[1]] = goal
        if self.goal_minus_achieved is not None:
            out[..., self.goal_minus_achieved[0]:self.goal_minus_achieved[1]] = goal - self.achieved_goal(obs)
        return out

    def success(self, next_obs: torch.Tensor, goal: torch.Tensor) -> torch.Tensor:
        """[...] bool: the achieved goal of next_obs [..., O] is within ``threshold`` of goal [..., G] (broadcast)."""
        return self._distance(next_obs, goal) < self.threshold

    def reward(self, next_obs: torch.Tensor, goal: torch.Tensor) -> torch.Tensor:
        """The env's reward [...] (float32) for reaching next_obs [..., O] under goal [..., G] (broadcast)."""
        d = self._distance(next_obs, goal)
        ok = (d < self.threshold).to(torch.float32)
        if self.sparse:
            return ok - 1.0
        r = -d
        if self.shaping is not None and self.shaping_weight:
            r = r - self.shaping_weight * torch.linalg.vector_norm(next_obs[..., self.shaping[0]:self.shaping[1]].float(), dim=-1)
        return r + self.success_bonus * ok

    def _distance(self, next_obs: torch.Tensor, goal: torch.Tensor) -> torch.Tensor:
        k = self.distance_dims
        diff = goal[..., :k].float() - self.achieved_goal(next_obs)[..., :k].float()
        return torch.linalg.vector_norm(diff, dim=-1)

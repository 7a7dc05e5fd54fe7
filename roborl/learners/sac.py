"""Soft Actor-Critic (issue 4). Config first; learner below."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from roborl.config import field, non_negative, open_unit_interval, positive, unit_interval


@dataclass(frozen=True)
class SACConfig:
    """SAC / RLPD hyperparameters (Haarnoja 2018; Ball 2023 for the ensemble and demo mix)."""

    hidden: tuple[int, ...] = field((256, 256), doc="Hidden layer sizes of actor and critics.")
    lr: float = field(3e-4, doc="Adam learning rate for actor and critics.", check=positive)
    alpha_lr: float = field(3e-4, doc="Adam learning rate for the temperature.", check=positive)
    batch_size: int = field(256, doc="Transitions per update.", check=positive)
    gamma: float = field(0.99, doc="Discount.", check=open_unit_interval)
    tau: float = field(0.005, doc="Polyak rate of the target critics.", check=unit_interval)
    n_critics: int = field(2, doc="Critic ensemble size (2 = twin min; >2 = REDQ/RLPD random subset).", check=positive)
    critic_subset: int = field(2, doc="Critics in the min for the target when n_critics > 2.", check=positive)
    layer_norm: bool = field(False, doc="LayerNorm in the critics (RLPD).")
    init_alpha: float = field(1.0, doc="Initial temperature.", check=positive)
    learn_alpha: bool = field(True, doc="Tune the temperature toward target_entropy.")
    target_entropy: float | None = field(None, doc="Target entropy; null = -|A|.")
    utd: int = field(1, doc="Gradient updates per env step (update-to-data ratio).", check=positive)
    actor_every: int = field(1, doc="Critic updates per actor/temperature update.", check=positive)
    grad_clip: float | None = field(None, doc="Max global grad norm (null = off).", check=positive)
    warmup_steps: int = field(1_000, doc="Random-action env steps before learning starts.", check=non_negative)
    # Demos (issue 4, "Demos")
    bc_pretrain_steps: int = field(0, doc="BC gradient steps on the demo partition before RL.", check=non_negative)
    bc_weight: float = field(0.0, doc="Weight of a BC term on demo samples in the actor loss (0 = off).", check=non_negative)
    residual: bool = field(False, doc="Residual mode: act = clip(a_base + beta*a_res) over a frozen BC base policy.")
    residual_beta: float = field(0.2, doc="Residual scale beta (Policy Decorator / ResiP use 0.1-0.3).", check=positive)
    residual_beta_final: float | None = field(None, doc="If set, beta ramps linearly to this value (progressive schedule).", check=positive)
    residual_ramp_steps: int = field(10_000, doc="Env steps over which beta ramps to residual_beta_final.", check=positive)
    compile: bool = field(False, doc="torch.compile the update (GPU only pays).")
    policy_kind: Literal["gaussian"] = field("gaussian", doc="Actor family (tanh-squashed Gaussian).")

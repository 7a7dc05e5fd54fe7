"""Configuration of the learned success reward (torch-free, so ``roborl config show`` stays light).

- :class:`RewardConfig`: the ``reward`` section of a run config: which classifier gives the
  reward during training, its threshold, how many consecutive positive frames end an episode,
  and how often it is fine-tuned from operator labels.
- :class:`ClassifierTrainConfig`: how ``roborl reward train`` fits a classifier on store frames.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from roborl.config import field, non_negative, open_unit_interval, positive, unit_interval

__all__ = ["RewardConfig", "ClassifierTrainConfig", "POSITIVE_RULES"]

# How store steps become positives (see roborl.reward.data.label_steps).
POSITIVE_RULES: tuple[str, ...] = ("step", "final", "both")


def _threshold_ok(v: float) -> str | None:
    return None if 0.0 < v < 1.0 else "must be in (0, 1)"


@dataclass(frozen=True)
class RewardConfig:
    """The learned success reward of a run (HIL-SERL, Luo et al. 2024: a binary classifier on camera
    frames gives reward 1 and ends the episode)."""

    classifier: str | None = field(None, doc="Model directory written by `roborl reward train`; null = the env's own "
                                             "reward (no classifier).")
    threshold: float = field(0.5, doc="A frame is positive when the classifier's probability is above this (the "
                                      "threshold recorded in the model is only its training default).",
                             check=_threshold_ok)
    confirm_steps: int = field(1, doc="Consecutive positive frames needed before reward 1 and the episode ends; "
                                      "2-3 hold back a single spurious positive frame.", check=positive)
    terminate: bool = field(True, doc="End the episode (terminated) when the classifier fires, as HIL-SERL does.")
    finetune_every: int = field(0, doc="Fine-tune the classifier from operator-labelled frames every this many "
                                       "episodes (0 = never).", check=non_negative)
    finetune_steps: int = field(100, doc="Gradient steps per fine-tuning round.", check=positive)
    finetune_lr: float = field(1e-4, doc="Learning rate of fine-tuning (lower than training: a few labelled frames "
                                         "must not undo what the model learned).", check=positive)


@dataclass(frozen=True)
class ClassifierTrainConfig:
    """Fitting a success classifier on camera frames of one or more replay stores."""

    cameras: tuple[str, ...] = field((), doc="Image observation keys (store fields obs.<key>, uint8 HxWx3); "
                                             "empty = every image field of the store.")
    image_size: int | None = field(None, doc="Resize frames to image_size x image_size before the encoder; "
                                             "null = the store's size.", check=positive)
    proprio: bool = field(False, doc="Also feed proprioception (non-image observation fields) through a small MLP.")
    proprio_keys: tuple[str, ...] = field((), doc="Proprio observation keys when proprio is on; empty = every "
                                                  "non-image observation field.")
    positives: Literal["step", "final", "both"] = field(
        "both", doc="Which steps are positive: 'step' = steps whose is_success flag is set; 'final' = the last "
                    "final_k steps of episodes whose last step has is_success (teleop success labels); 'both'. "
                    "Operator-marked steps (field label_field) always count.")
    final_k: int = field(3, doc="Steps at the end of a successful episode counted positive by the 'final' rule.",
                         check=positive)
    label_field: str = field("operator_label", doc="Optional int8 store field with operator labels per step "
                                                   "(1 = success, 0 = failure, -1 = none); used when the store has it.")
    steps: int = field(1500, doc="Gradient steps.", check=positive)
    batch_size: int = field(64, doc="Frames per batch (half positives, half negatives: balanced sampling).",
                            check=positive)
    lr: float = field(3e-4, doc="Adam learning rate.", check=positive)
    weight_decay: float = field(1e-4, doc="AdamW weight decay.", check=non_negative)
    pad: int = field(4, doc="Random-shift augmentation: pad each frame by this many pixels (edge replicate) and "
                            "crop back at a random offset per sample (DrQ, Kostrikov et al. 2020). 0 = off.",
                     check=non_negative)
    channels: int = field(32, doc="Channels of each conv layer of the DrQ-style encoder.", check=positive)
    conv_layers: int = field(4, doc="3x3 conv layers of the encoder.",
                             check=lambda v: None if 1 <= v <= 6 else "must be in [1, 6]")
    downsample: int = field(2, doc="How many of the first conv layers have stride 2 (DrQ: 1; 2 is ~4x cheaper at "
                                   "84x84, for CPU training and per-frame inference).", check=non_negative)
    feature_dim: int = field(50, doc="Encoder output features per camera (Linear + LayerNorm + tanh).", check=positive)
    shared_encoder: bool = field(False, doc="One encoder for all cameras (same image size) instead of one per camera.")
    encoder: str | None = field(None, doc="A frozen pretrained encoder: a local safetensors file written by "
                                          "roborl.reward.model.save_encoder; null = train the encoder.")
    label_smoothing: float = field(0.0, doc="Targets become eps/2 and 1 - eps/2.", check=unit_interval)
    val_fraction: float = field(0.2, doc="Fraction of episodes held out for validation metrics (split by episode).",
                                check=lambda v: None if 0.0 <= v < 1.0 else "must be in [0, 1)")
    threshold: float = field(0.5, doc="Decision threshold recorded in the model (RewardConfig.threshold is used "
                                      "by a run).", check=open_unit_interval)
    target_fpr: float | None = field(None, doc="Calibrate the threshold on the held-out episodes: the lowest "
                                               "threshold (never below `threshold`) whose validation false-positive "
                                               "rate is <= this; null = keep `threshold`. Needs val_fraction > 0.",
                                     check=lambda v: None if v is None or 0.0 <= v < 1.0 else "must be in [0, 1)")
    calibrate_on: Literal["negatives", "failed_episodes"] = field(
        "negatives", doc="Which held-out frames `target_fpr` is measured on: every negative frame, or only the frames "
                         "of held-out episodes with no positive frame at all (operator-labelled failures). With "
                         "positives=final, frames of a successful episode before its labelled tail can already show "
                         "success (the scene sits at the goal while the operator waits to press SUCCESS): counted as "
                         "negatives they push the threshold up and cost recall.")
    ensemble: int = field(1, doc="Classifiers trained independently (member k: seed + k for its initialisation, "
                                 "batches and augmentation) whose mean probability is the reward's; 3-5 damp the "
                                 "spread between trainings on a few hundred frames, at that many times the training "
                                 "and inference cost.", check=lambda v: None if 1 <= v <= 16 else "must be in [1, 16]")
    seed: int = field(0, doc="Seed of the split, the initialisation and the sampling.", check=non_negative)
    threads: int = field(1, doc="torch CPU threads.", check=positive)

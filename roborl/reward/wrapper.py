"""The learned success reward as a gymnasium wrapper (HIL-SERL, Luo et al. 2024).

Each step the classifier reads the cameras of the observation ``env.step`` returned. When its
probability is above ``threshold`` for ``confirm_steps`` consecutive steps the step gets reward 1
and (``terminate``) ends the episode as terminated; every other step gets reward 0. The env's own
reward is replaced (a robot has none); ``info`` keeps it as ``env_reward``.

Operator labels win over the classifier: the loop calls :meth:`ClassifierReward.label` when the
device sends ``Event.SUCCESS`` / ``Event.FAILURE``, *before* stepping; that step is then terminal
with reward 1 / 0. A label after the episode ended (the classifier fired and the operator
disagrees) does not change a stored step but is kept as a correction for :meth:`finetune`.

``info`` on every step: ``classifier_prob`` (float), ``classifier_reward`` (0/1: what the
classifier alone decided), ``operator_label`` (1 success, 0 failure, -1 none), ``env_reward``;
``is_success`` is set from the reward when the env reports none (a real robot), and forced true on
an operator success label.
"""
from __future__ import annotations

from collections import deque
from pathlib import Path
from typing import Any, SupportsFloat

import gymnasium as gym
import numpy as np

from roborl.errors import UsageError
from roborl.reward.model import RewardClassifier, obs_value

__all__ = ["ClassifierReward", "check_cameras", "wrap_reward", "STORE_FIELDS", "STORE_FIELD_FILL"]

# Extra replay-store fields for what this wrapper puts in ``info`` (ReplayStore.create(extra_fields=...));
# roborl.reward.data reads ``operator_label`` back as labels for training and fine-tuning.
STORE_FIELDS: dict[str, tuple[str, tuple[int, ...]]] = {
    "classifier_prob": ("float32", ()),
    "classifier_reward": ("float32", ()),
    "operator_label": ("int8", ()),
}
# What those fields hold on steps recorded without the classifier (demos merged into a run's store):
# no probability, no classifier reward, no operator label.
STORE_FIELD_FILL: dict[str, float | int] = {"classifier_prob": float("nan"), "classifier_reward": 0.0,
                                            "operator_label": -1}


def _space_at(space: gym.Space, key: str) -> gym.Space | None:
    s: Any = space
    for part in key.split("."):
        if not isinstance(s, gym.spaces.Dict) or part not in s.spaces:
            return None
        s = s.spaces[part]
    return s


def _leaf_keys(space: gym.Space, prefix: str = "") -> list[str]:
    if isinstance(space, gym.spaces.Dict):
        out: list[str] = []
        for k, s in space.spaces.items():
            out += _leaf_keys(s, f"{prefix}{k}.")
        return out
    return [prefix.rstrip(".")] if prefix else ["<not a Dict>"]


def check_cameras(observation_space: gym.Space, meta: dict[str, Any], model_dir: str | Path) -> None:
    """UsageError (one line) when the space lacks a camera / proprio key of the model or a camera's
    shape differs from the frames it was trained on."""
    need = list(meta.get("cameras", [])) + list(meta.get("proprio_keys", []))
    missing = [k for k in need if _space_at(observation_space, k) is None]
    if missing:
        raise UsageError(f"reward.classifier {model_dir}: the env's observation has no {', '.join(map(repr, missing))} "
                         f"(it has: {', '.join(_leaf_keys(observation_space))})")
    for c, shape in (meta.get("camera_shapes") or {}).items():
        sp = _space_at(observation_space, c)
        if sp is not None and np.dtype(sp.dtype) != np.uint8:
            raise UsageError(f"reward.classifier {model_dir}: camera {c!r} is {np.dtype(sp.dtype).name} in the env, the "
                             f"classifier reads raw uint8 frames (keep image keys out of observation normalization)")
        if sp is not None and list(sp.shape or ()) != list(shape):
            raise UsageError(f"reward.classifier {model_dir}: camera {c!r} is {list(sp.shape or ())} in the env but the "
                             f"classifier was trained on {list(shape)}")


class ClassifierReward(gym.Wrapper):
    """Reward 1 (and the end of the episode) when a success classifier fires; see the module docstring.

    Args:
        env: an env with a Dict observation holding the classifier's cameras.
        model_dir: a directory written by ``roborl reward train``.
        threshold: P(success) above which a frame is positive; None = the model's recorded threshold.
        confirm_steps: consecutive positive frames needed (>= 1).
        terminate: end the episode when the classifier fires.
        max_corrections: labelled frames kept for :meth:`finetune` (oldest dropped first).
    """

    def __init__(self, env: gym.Env, model_dir: str | Path, threshold: float | None = None, confirm_steps: int = 1,
                 terminate: bool = True, threads: int | None = None, max_corrections: int = 2000) -> None:
        super().__init__(env)
        if int(confirm_steps) < 1:
            raise UsageError(f"reward.confirm_steps: must be >= 1, got {confirm_steps}")
        self.model_dir = Path(model_dir)
        self.classifier = RewardClassifier(model_dir, threads=threads)
        check_cameras(env.observation_space, self.classifier.meta, model_dir)
        self.threshold = float(self.classifier.threshold if threshold is None else threshold)
        if not 0.0 < self.threshold < 1.0:
            raise UsageError(f"reward.threshold: must be in (0, 1), got {self.threshold}")
        self.confirm_steps = int(confirm_steps)
        self.terminate = bool(terminate)
        self._streak = 0
        self._pending: bool | None = None
        self._ended = True
        self._fired: list[tuple[dict[str, np.ndarray], np.ndarray | None]] = []  # positive frames of this episode
        self._last: tuple[dict[str, np.ndarray], np.ndarray | None] | None = None
        self._corrections: deque[tuple[dict[str, np.ndarray], np.ndarray | None, bool]] = deque(maxlen=max_corrections)

    # ------------------------------------------------------------------ gym API
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        obs, info = self.env.reset(seed=seed, options=options)
        self._streak = 0
        self._pending = None
        self._ended = False
        self._fired = []
        self._last = None
        return obs, info

    def step(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
        obs, env_reward, terminated, truncated, info = self.env.step(action)
        prob = self.classifier.prob(obs)
        positive = prob > self.threshold
        self._streak = self._streak + 1 if positive else 0
        fired = self._streak >= self.confirm_steps
        frame = self._frame(obs)
        self._last = frame
        if positive:
            self._fired.append(frame)
        label, self._pending = self._pending, None
        if label is not None:
            success = label
            terminated = True
            self._record(label)
        else:
            success = fired
            terminated = bool(terminated) or (fired and self.terminate)
        info = dict(info)
        info["classifier_prob"] = prob
        info["classifier_reward"] = 1.0 if fired else 0.0
        info["operator_label"] = -1 if label is None else int(label)
        info["env_reward"] = float(env_reward)
        if label:
            info["is_success"] = True
        else:
            info.setdefault("is_success", success)
        if terminated or truncated:
            self._ended = True
        return obs, (1.0 if success else 0.0), bool(terminated), bool(truncated), info

    # ------------------------------------------------------------------ operator labels
    def label(self, success: bool) -> bool:
        """The operator's verdict (Event.SUCCESS -> True, Event.FAILURE -> False).

        During an episode: the next :meth:`step` becomes terminal with reward 1 / 0 (call it before
        stepping, as the loop reads the device before acting); returns True. After the episode ended:
        only kept as a fine-tuning correction (a success the classifier missed, or its false positives);
        returns False.
        """
        if not self._ended:
            self._pending = bool(success)
            return True
        self._record(bool(success))
        return False

    def _record(self, success: bool) -> None:
        if success:
            if self._last is not None:
                self._corrections.append((*self._last, True))
        else:
            # A failure: every frame the classifier called positive in this episode was wrong.
            for f in self._fired:
                self._corrections.append((*f, False))
            if self._last is not None and not any(f is self._last for f in self._fired):
                self._corrections.append((*self._last, False))
        self._fired = []

    def _frame(self, obs: Any) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
        imgs = {c: np.array(obs_value(obs, c), dtype=np.uint8, copy=True) for c in self.classifier.cameras}
        p = None
        if self.classifier.proprio_keys:
            p = np.concatenate([np.asarray(obs_value(obs, k), np.float32).reshape(-1) for k in self.classifier.proprio_keys])
        return imgs, p

    # ------------------------------------------------------------------ fine-tuning
    @property
    def num_corrections(self) -> int:
        return len(self._corrections)

    def labelled_frames(self) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray | None]:
        """(frames camera -> uint8 [N, H, W, 3], labels bool [N], proprio float [N, P] | None) of the
        operator corrections kept so far."""
        cams = self.classifier.cameras
        items = list(self._corrections)
        if not items:
            return {c: np.zeros((0, 0, 0, 3), np.uint8) for c in cams}, np.zeros(0, bool), None
        frames = {c: np.stack([it[0][c] for it in items]) for c in cams}
        prop = np.stack([it[1] for it in items]) if items[0][1] is not None else None
        return frames, np.array([it[2] for it in items], bool), prop

    def finetune(self, steps: int = 100, lr: float = 1e-4, out: str | Path | None = None) -> dict[str, Any] | None:
        """Fine-tune on the corrections (between episodes), save to ``out`` (default: in place) and
        reload. Returns the model's new metadata, or None when there are no corrections."""
        from roborl.reward.train import finetune

        frames, labels, prop = self.labelled_frames()
        if len(labels) == 0:
            return None
        meta = finetune(self.model_dir, frames, labels, steps, proprio=prop, lr=lr, out=out)
        self.model_dir = Path(out or self.model_dir)
        self.classifier = RewardClassifier(self.model_dir)
        self._corrections.clear()
        return meta


def wrap_reward(env: gym.Env, cfg: Any, model_dir: str | Path | None = None) -> gym.Env:
    """Apply a run's ``reward`` section (:class:`roborl.reward.config.RewardConfig`): ``env`` unchanged when
    ``cfg.classifier`` is null, else wrapped in :class:`ClassifierReward` (reading ``model_dir`` instead of
    ``cfg.classifier`` when given: a run's fine-tuned copy)."""
    if not cfg.classifier:
        return env
    return ClassifierReward(env, model_dir or cfg.classifier, threshold=cfg.threshold,
                            confirm_steps=cfg.confirm_steps, terminate=cfg.terminate)

"""Fit, evaluate and fine-tune the success classifier.

- :func:`train_classifier`: frames of replay stores -> a model directory (``roborl reward train``);
- :func:`evaluate`: a model directory on held-out stores -> metrics (``roborl reward eval``);
- :func:`finetune`: a model directory + operator-labelled frames -> the same directory, updated
  between episodes (``RewardConfig.finetune_every``).

Batches are class-balanced (half positives, half negatives, drawn with replacement): success
frames are a small share of a robot's episodes, and an unbalanced classifier learns to say "no".
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch.nn import functional as F

from roborl.config import to_dict
from roborl.errors import UsageError
from roborl.reward.config import ClassifierTrainConfig
from roborl.reward.data import FrameSet, load_frames
from roborl.reward.metrics import binary_metrics
from roborl.reward.model import (RewardClassifier, SuccessClassifier, SuccessEnsemble, load_encoder, load_model,
                                 read_meta, save_model)

__all__ = ["train_classifier", "evaluate", "finetune", "split_episodes", "calibrate_threshold"]


def calibrate_threshold(neg_probs: np.ndarray, target_fpr: float, floor: float) -> float:
    """The lowest threshold ``t >= floor`` with ``mean(neg_probs > t) <= target_fpr``.

    With the negatives' probabilities sorted in descending order, at most ``k = floor(target_fpr * n)``
    may lie above ``t``, so ``t`` is the (k+1)-th largest (ties can only lower the false-positive rate).
    """
    p = np.sort(np.asarray(neg_probs, dtype=np.float64))[::-1]
    if p.size == 0:
        return floor
    k = int(np.floor(target_fpr * p.size + 1e-9))
    t = float(p[k]) if k < p.size else floor
    return float(min(max(t, floor), 1.0 - 1e-6))


def calibration_negatives(fs: FrameSet, on: str) -> np.ndarray:
    """bool [N]: the frames ``target_fpr`` is calibrated on. ``negatives``: every negative frame;
    ``failed_episodes``: the frames of episodes with no positive frame at all (see
    ClassifierTrainConfig.calibrate_on)."""
    neg = ~fs.labels
    if on == "failed_episodes":
        neg &= ~np.isin(fs.episode, fs.episode[fs.labels])
    return neg


def split_episodes(episode: np.ndarray, labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train mask, val mask) bool [N]: a random ``fraction`` of the episodes is held out (frames of one
    episode are strongly correlated, so a frame-level split would overstate accuracy). The held-out
    episodes are drawn separately from episodes with and without a positive frame, so both sides
    keep both classes when they can."""
    val = np.zeros(len(episode), dtype=bool)
    if fraction <= 0:
        return ~val, val
    rng = np.random.default_rng(seed)
    eps = np.unique(episode)
    has_pos = np.array([labels[episode == e].any() for e in eps])
    held: list[int] = []
    for group in (eps[has_pos], eps[~has_pos]):
        k = int(round(fraction * len(group)))
        if 0 < k < len(group) or (k == 0 and len(group) > 2 and fraction > 0):
            k = max(k, 1)
            held.extend(rng.choice(group, size=k, replace=False).tolist())
    val = np.isin(episode, held)
    return ~val, val


def _batch(fs: FrameSet, idx: np.ndarray, cameras: Sequence[str]) -> tuple[list[torch.Tensor], torch.Tensor | None]:
    imgs = [torch.from_numpy(np.ascontiguousarray(fs.images[c][idx])) for c in cameras]
    p = None if fs.proprio is None else torch.as_tensor(fs.proprio[idx], dtype=torch.float32)
    return imgs, p


def _fit(model: SuccessClassifier | SuccessEnsemble, fs: FrameSet, *, steps: int, batch_size: int, lr: float, weight_decay: float,
         pad: int, label_smoothing: float, seed: int, replay: FrameSet | None = None,
         log: Callable[[str], None] | None = None) -> dict[str, float]:
    """Balanced-batch BCE training. With ``replay``, half of each batch comes from it (fine-tuning keeps
    what the model knew). Returns the final smoothed loss."""
    gen = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    sources = [fs] if replay is None else [fs, replay]
    model.train()
    ema = None
    for step in range(steps):
        losses = []
        opt.zero_grad(set_to_none=True)
        for src_i, src in enumerate(sources):
            n = batch_size // len(sources) if src_i < len(sources) - 1 else batch_size - (len(sources) - 1) * (batch_size // len(sources))
            pos, neg = np.flatnonzero(src.labels), np.flatnonzero(~src.labels)
            if len(pos) and len(neg):
                idx = np.concatenate([rng.choice(pos, n // 2), rng.choice(neg, n - n // 2)])
            else:  # one class only (fine-tuning corrections): take what there is
                idx = rng.choice(len(src), n)
            imgs, prop = _batch(src, idx, model.cameras)
            target = torch.as_tensor(src.labels[idx], dtype=torch.float32)
            target = target * (1.0 - label_smoothing) + 0.5 * label_smoothing
            # Each member's own BCE (an ensemble's mean-probability logit is not trained directly: members that
            # learn to cancel each other out would make a fine mean from useless members).
            logits = model.member_logits(imgs, prop, pad=pad, generator=gen)  # [K, n]
            losses.append(F.binary_cross_entropy_with_logits(logits, target.expand_as(logits)) * (n / batch_size))
        loss = torch.stack(losses).sum()
        loss.backward()
        opt.step()
        v = float(loss.detach())
        ema = v if ema is None else 0.98 * ema + 0.02 * v
        if log and (step + 1) % max(1, steps // 10) == 0:
            log(f"step {step + 1}/{steps}  loss {ema:.4f}")
    model.eval()
    return {"final_loss": float(ema if ema is not None else float("nan"))}


def _probs(model: SuccessClassifier | SuccessEnsemble, fs: FrameSet, batch: int = 256) -> np.ndarray:
    out = np.empty(len(fs), dtype=np.float32)
    model.eval()
    with torch.inference_mode():
        for a in range(0, len(fs), batch):
            idx = np.arange(a, min(len(fs), a + batch))
            imgs, p = _batch(fs, idx, model.cameras)
            out[idx] = torch.sigmoid(model(imgs, p)).numpy()
    return out


def train_classifier(stores: Sequence[str | Path], out: str | Path, cfg: ClassifierTrainConfig | None = None,
                     log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Train on the frames of ``stores`` and save to ``out``. Returns the saved metadata."""
    cfg = cfg or ClassifierTrainConfig()
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    out_p = Path(out)
    if out_p.exists() and not out_p.is_dir():
        raise UsageError(f"reward: --out {out_p} exists and is not a directory")
    fs = load_frames(stores, cfg.cameras, proprio=cfg.proprio, proprio_names=cfg.proprio_keys, rule=cfg.positives,
                     final_k=cfg.final_k, label_field=cfg.label_field)
    cameras = list(fs.images)
    shapes = {c: list(fs.images[c].shape[1:]) for c in cameras}
    first = fs.images[cameras[0]].shape[1:3]
    hw = (cfg.image_size, cfg.image_size) if cfg.image_size else (int(first[0]), int(first[1]))
    tr_mask, va_mask = split_episodes(fs.episode, fs.labels, cfg.val_fraction, cfg.seed)
    train_fs, val_fs = fs.subset(np.flatnonzero(tr_mask)), fs.subset(np.flatnonzero(va_mask))
    if not train_fs.labels.any() or train_fs.labels.all():
        raise UsageError("reward: the training split lacks positives or negatives; lower val_fraction or add episodes")
    encoder = load_encoder(cfg.encoder, hw) if cfg.encoder else None
    pdim = 0 if fs.proprio is None else int(fs.proprio.shape[1])
    if log:
        log(f"reward: {len(train_fs)} training frames ({int(train_fs.labels.sum())} positive), {len(val_fs)} held out "
            f"({int(val_fs.labels.sum())} positive); cameras {', '.join(cameras)} at {hw[0]}x{hw[1]}"
            + (f"; an ensemble of {cfg.ensemble}" if cfg.ensemble > 1 else ""))
    members: list[SuccessClassifier] = []
    fits: list[dict[str, float]] = []
    t0 = time.perf_counter()
    for k in range(cfg.ensemble):
        # Member k: its own initialisation, batches and shifts (the split stays the one of cfg.seed).
        torch.manual_seed(cfg.seed + k)
        member = SuccessClassifier(cameras, hw, pdim, channels=cfg.channels, layers=cfg.conv_layers,
                                   feature_dim=cfg.feature_dim, downsample=cfg.downsample,
                                   shared_encoder=cfg.shared_encoder, encoder=encoder)
        if train_fs.proprio is not None:
            member.fit_proprio(train_fs.proprio)
        if log and cfg.ensemble > 1:
            log(f"reward: member {k + 1}/{cfg.ensemble}")
        fits.append(_fit(member, train_fs, steps=cfg.steps, batch_size=cfg.batch_size, lr=cfg.lr,
                          weight_decay=cfg.weight_decay, pad=cfg.pad, label_smoothing=cfg.label_smoothing,
                          seed=cfg.seed + k, log=log))
        members.append(member)
    model: SuccessClassifier | SuccessEnsemble = members[0] if cfg.ensemble == 1 else SuccessEnsemble(members)
    train_s = time.perf_counter() - t0
    fit = {"final_loss": float(np.mean([f["final_loss"] for f in fits]))}
    metrics: dict[str, Any] = {"train_seconds": round(train_s, 2), **fit}
    threshold = cfg.threshold
    if len(val_fs):
        vp = _probs(model, val_fs)
        if cfg.ensemble > 1:  # how far apart the members are, on the same held-out episodes
            metrics["val_members"] = [binary_metrics(_probs(m, val_fs), val_fs.labels, cfg.threshold)
                                      for m in members]
        if cfg.target_fpr is not None:
            neg = calibration_negatives(val_fs, cfg.calibrate_on)
            if not neg.any():
                raise UsageError(f"reward: target_fpr needs negative frames in the held-out episodes "
                                 f"(calibrate_on={cfg.calibrate_on}; raise val_fraction or add failed episodes)")
            threshold = calibrate_threshold(vp[neg], cfg.target_fpr, cfg.threshold)
            metrics["calibration"] = {"target_fpr": cfg.target_fpr, "calibrate_on": cfg.calibrate_on,
                                      "val_negatives": int(neg.sum()), "threshold": threshold}
        metrics["val"] = binary_metrics(vp, val_fs.labels, threshold)
    elif cfg.target_fpr is not None:
        raise UsageError("reward: target_fpr needs held-out episodes (set val_fraction > 0)")
    metrics["train"] = binary_metrics(_probs(model, train_fs), train_fs.labels, threshold)
    meta = {"threshold": threshold, "camera_shapes": shapes,
            "proprio_keys": fs.proprio_names,
            "positives": {"rule": cfg.positives, "final_k": cfg.final_k, "label_field": cfg.label_field},
            "stores": fs.sources, "train_config": to_dict(cfg), "metrics": metrics,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "finetunes": []}
    save_model(out_p, model, meta)
    return read_meta(out_p)


def evaluate(model_dir: str | Path, stores: Sequence[str | Path], threshold: float | None = None,
             positives: str | None = None) -> dict[str, Any]:
    """Metrics of a model on every frame of ``stores``, labelled by the model's own positives rule or by
    ``positives`` ('step': per-step ``is_success``, the ground truth of a held-out sim store; 'final';
    'both', see :func:`roborl.reward.data.label_steps`)."""
    from roborl.reward.config import POSITIVE_RULES

    clf = RewardClassifier(model_dir)
    pos = clf.meta.get("positives", {})
    if positives is not None and positives not in POSITIVE_RULES:
        raise UsageError(f"reward eval: --positives must be one of {', '.join(POSITIVE_RULES)}, got {positives!r}")
    fs = load_frames(stores, clf.cameras, proprio=bool(clf.proprio_keys), proprio_names=clf.proprio_keys,
                     rule=positives or pos.get("rule", "both"), final_k=int(pos.get("final_k", 3)),
                     label_field=pos.get("label_field", "operator_label"), require_both=False)
    shapes = clf.meta.get("camera_shapes", {})
    for c in clf.cameras:
        got = list(fs.images[c].shape[1:])
        if shapes.get(c) and shapes[c] != got:
            raise UsageError(f"reward: camera {c!r} is {got} in the store but the model was trained on {shapes[c]}")
    thr = clf.threshold if threshold is None else float(threshold)
    t0 = time.perf_counter()
    p = clf.probs(fs.images, fs.proprio)
    dt = time.perf_counter() - t0
    res = binary_metrics(p, fs.labels, thr)
    res.update({"model": str(Path(model_dir)), "stores": fs.sources, "episodes": int(len(np.unique(fs.episode))),
                "positives_rule": positives or pos.get("rule", "both"),
                "ms_per_frame_batched": round(1000.0 * dt / max(1, len(fs)), 3)})
    return res


def finetune(model_dir: str | Path, frames: dict[str, np.ndarray], labels: np.ndarray, steps: int = 100, *,
             proprio: np.ndarray | None = None, lr: float = 1e-4, replay: bool = True, out: str | Path | None = None,
             seed: int = 0, batch_size: int | None = None) -> dict[str, Any]:
    """Fine-tune a saved classifier on operator-labelled frames and save it (in place unless ``out``).

    frames: camera -> uint8 [N, H, W, 3]; labels: bool [N]; proprio: float [N, P] when the model uses it.
    ``replay``: mix the model's training stores (when still readable) into half of each batch, so a few
    corrections (often negatives only: frames the classifier wrongly called success) do not shift
    every output. Returns the saved metadata.
    """
    model, meta = load_model(model_dir)
    y = np.asarray(labels, dtype=bool).reshape(-1)
    missing = [c for c in model.cameras if c not in frames]
    if missing:
        raise UsageError(f"reward finetune: frames lack camera {missing[0]!r} (have: {', '.join(frames) or 'none'})")
    if len(y) == 0:
        raise UsageError("reward finetune: no labelled frames")
    if any(len(frames[c]) != len(y) for c in model.cameras):
        raise UsageError("reward finetune: frames and labels differ in length")
    if model.proprio_dim and proprio is None:
        raise UsageError("reward finetune: this classifier uses proprio; pass proprio=")
    tc = meta.get("train_config", {})
    new = FrameSet({c: np.asarray(frames[c]) for c in model.cameras},
                   None if not model.proprio_dim else np.asarray(proprio, np.float32), y, np.zeros(len(y), np.int64))
    old = None
    if replay:
        paths = [s["path"] for s in meta.get("stores", []) if Path(s["path"]).is_dir()]
        if paths:
            pos = meta.get("positives", {})
            try:
                old = load_frames(paths, model.cameras, proprio=bool(model.proprio_dim),
                                  proprio_names=meta.get("proprio_keys", []), rule=pos.get("rule", "both"),
                                  final_k=int(pos.get("final_k", 3)), label_field=pos.get("label_field", "operator_label"))
            except UsageError:
                old = None  # the stores changed beyond use: fine-tune on the new frames alone
    t0 = time.perf_counter()
    fit = _fit(model, new, steps=int(steps), batch_size=int(batch_size or tc.get("batch_size", 64)), lr=lr,
               weight_decay=float(tc.get("weight_decay", 0.0)), pad=int(tc.get("pad", 0)),
               label_smoothing=float(tc.get("label_smoothing", 0.0)), seed=seed, replay=old)
    rec = {"frames": int(len(y)), "positives": int(y.sum()), "steps": int(steps), "lr": lr, "replay": old is not None,
           "seconds": round(time.perf_counter() - t0, 2), "after": binary_metrics(_probs(model, new), y,
                                                                               float(meta.get("threshold", 0.5))), **fit}
    keep = {k: v for k, v in meta.items() if k not in ("format", "version", "cameras", "image_size", "proprio_dim", "arch")}
    keep["finetunes"] = list(meta.get("finetunes", [])) + [rec]
    save_model(out or model_dir, model, keep)
    return read_meta(out or model_dir)



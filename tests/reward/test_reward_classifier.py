"""The success classifier on real stores on disk: labels, metrics, training, files, fine-tuning."""
from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from roborl.errors import UsageError
from roborl.reward.config import ClassifierTrainConfig
from roborl.reward.data import label_steps, load_frames
from roborl.reward.metrics import binary_metrics, roc_auc
from roborl.reward.model import (ConvEncoder, RewardClassifier, SuccessEnsemble, load_model, random_shift, read_meta,
                                 save_encoder)
from roborl.reward.train import evaluate, finetune, split_episodes, train_classifier

from toy_square import write_store


def test_roc_auc_equals_pairwise_definition() -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        s = rng.integers(0, 5, 30) / 4.0  # many ties
        y = rng.random(30) < 0.4
        if y.all() or not y.any():
            continue
        pairs = [(1.0 if a > b else 0.5 if a == b else 0.0) for a, b in itertools.product(s[y], s[~y])]
        assert roc_auc(s, y) == pytest.approx(np.mean(pairs))
    assert roc_auc(np.ones(3), np.ones(3, bool)) is None


def test_binary_metrics_counts() -> None:
    m = binary_metrics(np.array([0.9, 0.8, 0.2, 0.7, 0.1]), np.array([1, 0, 1, 0, 0], bool), 0.5)
    assert (m["tp"], m["fp"], m["tn"], m["fn"]) == (1, 2, 1, 1)
    assert m["precision"] == pytest.approx(1 / 3) and m["recall"] == 0.5
    assert m["false_positive_rate"] == pytest.approx(2 / 3) and m["accuracy"] == pytest.approx(0.4)


def test_label_rules() -> None:
    eps = np.array([[10, 4, 0], [14, 3, 0]])
    succ = np.array([0, 1, 0, 1, 0, 0, 0], bool)      # episode 1 ends in success, episode 2 does not
    assert label_steps(succ, eps, "step", 2).tolist() == [0, 1, 0, 1, 0, 0, 0]
    assert label_steps(succ, eps, "final", 2).tolist() == [0, 0, 1, 1, 0, 0, 0]
    assert label_steps(succ, eps, "both", 2).tolist() == [0, 1, 1, 1, 0, 0, 0]
    op = np.array([-1, 0, -1, -1, -1, 1, -1], np.int8)  # operator: step 1 is not a success, step 5 is
    assert label_steps(succ, eps, "both", 2, op).tolist() == [0, 0, 1, 1, 0, 1, 0]


def test_split_keeps_episodes_whole() -> None:
    ep = np.repeat(np.arange(10), 5)
    y = np.zeros(50, bool)
    y[4::5] = np.arange(10) < 5
    tr, va = split_episodes(ep, y, 0.2, seed=0)
    assert not set(ep[tr]) & set(ep[va]) and y[va].any() and y[tr].any() and (~y[va]).any()


def test_random_shift_is_a_crop_of_the_padded_frame() -> None:
    x = torch.rand(6, 3, 8, 8)
    out = random_shift(x, 2, torch.Generator().manual_seed(0))
    xp = torch.nn.functional.pad(x, (2, 2, 2, 2), mode="replicate")
    for i in range(6):
        assert any(torch.equal(out[i], xp[i, :, a:a + 8, b:b + 8]) for a in range(5) for b in range(5))
    assert torch.equal(random_shift(x, 0), x)


def test_learns_the_toy_task_and_holds_out_well(toy_model: Path, toy_stores: dict[str, Path]) -> None:
    res = evaluate(toy_model, [toy_stores["heldout"]])
    assert res["positives"] > 5 and res["negatives"] > 20
    assert res["accuracy"] >= 0.95 and res["recall"] >= 0.9 and res["false_positive_rate"] <= 0.05
    assert res["roc_auc"] >= 0.98


def test_model_dir_metadata(toy_model: Path, toy_stores: dict[str, Path]) -> None:
    meta = read_meta(toy_model)
    assert meta["cameras"] == ["cam"] and meta["image_size"] == [24, 24] and meta["threshold"] == 0.5
    assert meta["proprio_dim"] == 0 and meta["proprio_keys"] == []
    assert meta["camera_shapes"] == {"cam": [24, 24, 3]}
    src = meta["stores"][0]
    assert src["path"] == str(toy_stores["train"].resolve()) and src["generation"] >= 1 and src["uuid"]
    assert set(meta["metrics"]) >= {"train", "val", "train_seconds"}
    assert meta["train_config"]["steps"] == 150
    assert (toy_model / "model.safetensors").is_file()


def test_two_nested_cameras_and_proprio(tmp_path: Path) -> None:
    store = write_store(tmp_path / "nested", 6, seed=3, nested=True)
    fs = load_frames([store], ["pixels.front", "pixels.wrist"], proprio=True)
    assert fs.images["pixels.front"].shape == (60, 24, 24, 3) and fs.proprio.shape == (60, 2)
    cfg = ClassifierTrainConfig(cameras=("pixels.front", "pixels.wrist"), proprio=True, steps=5, batch_size=8,
                                image_size=28, val_fraction=0.0)
    meta = train_classifier([store], tmp_path / "m", cfg)
    assert meta["cameras"] == ["pixels.front", "pixels.wrist"] and meta["proprio_keys"] == ["state"]
    assert meta["proprio_dim"] == 2 and meta["image_size"] == [28, 28]
    clf = RewardClassifier(tmp_path / "m")
    obs = {"pixels": {"front": fs.images["pixels.front"][0], "wrist": fs.images["pixels.wrist"][0]},
           "state": fs.proprio[0]}
    p = clf.prob(obs)
    assert 0.0 <= p <= 1.0
    assert clf.probs({k: v[:1] for k, v in fs.images.items()}, fs.proprio[:1])[0] == pytest.approx(p, abs=1e-6)


def test_bad_inputs_are_one_line_usage_errors(toy_stores: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"camera 'wrist' is not an image field .* \(it has: cam\)"):
        load_frames([toy_stores["train"]], ["wrist"])
    none = write_store(tmp_path / "nopos", 2, seed=4, p_success=0.0)
    with pytest.raises(UsageError, match="no positive"):
        train_classifier([none], tmp_path / "m", ClassifierTrainConfig(steps=1, positives="step"))
    allpos = write_store(tmp_path / "allpos", 2, seed=5, p_success=1.0)
    with pytest.raises(UsageError, match="no negative"):
        train_classifier([allpos], tmp_path / "m", ClassifierTrainConfig(steps=1, positives="step"))
    for bad in (tmp_path / "missing", toy_stores["train"]):
        with pytest.raises(UsageError, match="reward"):
            load_model(bad)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "reward_model.json").write_text("{not json")
    with pytest.raises(UsageError, match="unreadable"):
        load_model(broken)


def test_frozen_pretrained_encoder(toy_model: Path, toy_stores: dict[str, Path], tmp_path: Path) -> None:
    model, _ = load_model(toy_model)
    enc_path = tmp_path / "enc.safetensors"
    save_encoder(enc_path, model.encoders[0])
    before = {k: v.clone() for k, v in model.encoders[0].state_dict().items()}
    meta = train_classifier([toy_stores["train"]], tmp_path / "frozen",
                            ClassifierTrainConfig(steps=40, batch_size=16, encoder=str(enc_path), positives="step"))
    assert meta["arch"]["frozen_encoder"] is True
    reloaded, _ = load_model(tmp_path / "frozen")
    for k, v in reloaded.encoders[0].state_dict().items():
        assert torch.equal(v, before[k]), k  # the encoder did not train
    assert evaluate(tmp_path / "frozen", [toy_stores["heldout"]])["roc_auc"] >= 0.95
    with pytest.raises(UsageError, match=r"expects 3x24x24 input but the classifier feeds 3x32x32"):
        train_classifier([toy_stores["train"]], tmp_path / "x",
                         ClassifierTrainConfig(steps=1, encoder=str(enc_path), image_size=32))
    save_encoder(tmp_path / "other.safetensors", ConvEncoder((16, 16), 8, 2, 10))
    with pytest.raises(UsageError, match="expects 3x16x16"):
        train_classifier([toy_stores["train"]], tmp_path / "y",
                         ClassifierTrainConfig(steps=1, encoder=str(tmp_path / "other.safetensors")))


def test_finetune_moves_towards_the_operator_labels(toy_model: Path, toy_stores: dict[str, Path], tmp_path: Path) -> None:
    fs = load_frames([toy_stores["heldout"]], ["cam"], rule="step")
    pos = np.flatnonzero(fs.labels)[:6]
    frames = {"cam": fs.images["cam"][pos]}
    clf = RewardClassifier(toy_model)
    before = clf.probs(frames).mean()
    # The operator says these square frames are failures (e.g. the wrong square): fine-tune without replay.
    meta = finetune(toy_model, frames, np.zeros(len(pos), bool), steps=30, lr=1e-3, replay=False, out=tmp_path / "ft")
    after = RewardClassifier(tmp_path / "ft").probs(frames).mean()
    assert after < before - 0.3
    assert meta["finetunes"][-1]["frames"] == len(pos) and json.loads((tmp_path / "ft" / "reward_model.json").read_text())
    assert RewardClassifier(toy_model).probs(frames).mean() == pytest.approx(before)  # the source model is untouched
    with pytest.raises(UsageError, match="camera 'cam'"):
        finetune(toy_model, {"front": frames["cam"]}, np.zeros(len(pos), bool), steps=1, out=tmp_path / "z")


def test_calibrated_threshold_meets_the_target_on_its_negatives() -> None:
    from roborl.reward.train import calibrate_threshold

    rng = np.random.default_rng(0)
    for n in (1, 7, 50, 333):
        neg = rng.random(n)
        for target in (0.0, 0.02, 0.1, 0.5):
            t = calibrate_threshold(neg, target, 0.5)
            assert t >= 0.5 and np.mean(neg > t) <= target + 1e-12
            # The lowest such threshold: any lower candidate (a negative's score >= 0.5) breaks the target.
            lower = neg[(neg < t) & (neg >= 0.5)]
            assert all(np.mean(neg > c) > target for c in lower)


def test_calibration_on_failed_episodes_uses_only_their_frames(tmp_path: Path) -> None:
    from roborl.reward.train import calibration_negatives

    # 'final' labels only the tail of an episode whose last step succeeds: its earlier frames are
    # negatives by the rule even where they show success.
    store = write_store(tmp_path / "s", episodes=12, seed=3, p_success=0.5, horizon=6)
    fs = load_frames([store], rule="final", final_k=2)
    ok_eps = set(fs.episode[fs.labels].tolist())
    assert ok_eps and len(ok_eps) < len(set(fs.episode.tolist()))  # both kinds present
    all_neg = calibration_negatives(fs, "negatives")
    failed = calibration_negatives(fs, "failed_episodes")
    assert np.array_equal(all_neg, ~fs.labels)
    assert np.array_equal(failed, ~np.isin(fs.episode, list(ok_eps)))
    assert failed.sum() < all_neg.sum() and not (failed & fs.labels).any()
    # Through training: the calibration reports the frames it used.
    cfg = ClassifierTrainConfig(steps=2, batch_size=8, positives="final", final_k=2, val_fraction=0.5,
                                target_fpr=0.1, calibrate_on="failed_episodes", channels=4, feature_dim=4)
    meta = train_classifier([store], tmp_path / "m", cfg)
    cal = meta["metrics"]["calibration"]
    assert cal["calibrate_on"] == "failed_episodes" and 0 < cal["val_negatives"] < meta["metrics"]["val"]["negatives"]


def test_ensemble_is_the_mean_of_independently_trained_members(toy_stores: dict[str, Path], tmp_path: Path) -> None:
    cfg = ClassifierTrainConfig(steps=60, batch_size=16, seed=3, pad=2, positives="step", channels=8, feature_dim=8,
                                ensemble=3)
    meta = train_classifier([toy_stores["train"]], tmp_path / "ens", cfg)
    assert meta["arch"]["ensemble"] == 3 and len(meta["metrics"]["val_members"]) == 3
    model, _ = load_model(tmp_path / "ens")
    assert isinstance(model, SuccessEnsemble)
    # The members differ (own seeds) ...
    w = [m.encoders[0].convs[0].weight for m in model.members]
    assert not torch.equal(w[0], w[1]) and not torch.equal(w[1], w[2])
    # ... and member 0 is exactly the single model of the same seed (an ensemble of 1 is today's classifier).
    single = train_classifier([toy_stores["train"]], tmp_path / "one",
                              ClassifierTrainConfig(**{**cfg.__dict__, "ensemble": 1}))
    assert single["arch"].get("ensemble", 1) == 1
    one, _ = load_model(tmp_path / "one")
    for (k, v), (k1, v1) in zip(model.members[0].state_dict().items(), one.state_dict().items()):
        assert k == k1
        torch.testing.assert_close(v, v1)
    # The ensemble's probability is the mean of its members'.
    fs = load_frames([toy_stores["heldout"]], ["cam"], rule="step")
    imgs = [torch.from_numpy(fs.images["cam"])]
    with torch.inference_mode():
        p_members = torch.sigmoid(model.member_logits(imgs)).mean(0)
        torch.testing.assert_close(torch.sigmoid(model(imgs)), p_members, atol=1e-5, rtol=1e-4)
    p = RewardClassifier(tmp_path / "ens").probs(fs.images)
    np.testing.assert_allclose(p, p_members.numpy(), atol=1e-5)
    assert evaluate(tmp_path / "ens", [toy_stores["heldout"]], positives="step")["roc_auc"] >= 0.9
    # Confident members (logits of +-60) give a finite mean, not 0/1 rounding to an infinite logit.
    big = torch.tensor([[60.0, -60.0], [60.0, -60.0]])
    model.member_logits = lambda *a, **k: big  # type: ignore[method-assign]
    out = model(imgs)
    assert torch.isfinite(out).all() and out[0] > 50 and out[1] < -50


def test_ensemble_with_a_frozen_encoder_saves_and_finetunes(toy_model: Path, toy_stores: dict[str, Path],
                                                             tmp_path: Path) -> None:
    model, _ = load_model(toy_model)
    enc_path = tmp_path / "enc.safetensors"
    save_encoder(enc_path, model.encoders[0])
    # The members share one frozen encoder: saving must not trip over tensors that share memory.
    train_classifier([toy_stores["train"]], tmp_path / "ens", ClassifierTrainConfig(
        steps=20, batch_size=16, encoder=str(enc_path), positives="step", ensemble=2))
    ens, meta = load_model(tmp_path / "ens")
    assert meta["arch"]["frozen_encoder"] and meta["arch"]["ensemble"] == 2
    fs = load_frames([toy_stores["heldout"]], ["cam"], rule="step")
    pos = np.flatnonzero(fs.labels)[:6]
    frames = {"cam": fs.images["cam"][pos]}
    before = RewardClassifier(tmp_path / "ens").probs(frames).mean()
    finetune(tmp_path / "ens", frames, np.zeros(len(pos), bool), steps=30, lr=1e-3, replay=False, out=tmp_path / "ft")
    ft, _ = load_model(tmp_path / "ft")
    assert isinstance(ft, SuccessEnsemble)
    assert RewardClassifier(tmp_path / "ft").probs(frames).mean() < before - 0.2  # every member moved
    for m0, m1 in zip(ens.members, ft.members):
        torch.testing.assert_close(m0.encoders[0].convs[0].weight, m1.encoders[0].convs[0].weight)  # still frozen
    from roborl import config as C

    with pytest.raises(C.ConfigError, match="ensemble: must be in"):
        C.build(ClassifierTrainConfig, {"ensemble": 0})

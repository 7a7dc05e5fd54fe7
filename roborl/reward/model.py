"""The success classifier: a DrQ-style conv encoder per camera (or one shared, or a frozen pretrained
one), an optional proprio MLP and an MLP head giving one logit. Saved as safetensors + JSON metadata.

A model directory holds::

    model.safetensors    the weights (tensor names from SuccessClassifier.state_dict(); an ensemble's
                         are its members' under members.<k>.)
    reward_model.json    format, cameras, image size, proprio keys/dims, architecture, threshold,
                         training config and metrics, the stores trained on (path, uuid, generation)

Images enter as uint8 ``[B, H, W, 3]`` (what the env and the store hold) and are converted,
resized and (training only) randomly shifted inside, so callers never preprocess.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from roborl.errors import UsageError
from roborl.fsutil import atomic_write_text
from roborl.learners.networks import mlp

__all__ = ["ConvEncoder", "SuccessClassifier", "SuccessEnsemble", "RewardClassifier", "random_shift", "save_model",
           "load_model", "save_encoder", "load_encoder", "obs_value", "META_FILE", "WEIGHTS_FILE"]

META_FILE = "reward_model.json"
WEIGHTS_FILE = "model.safetensors"
FORMAT = "roborl.reward_classifier"
ENCODER_FORMAT = "roborl.conv_encoder"


class ConvEncoder(nn.Module):
    """DrQ encoder (Kostrikov et al. 2020): ``layers`` 3x3 convs with ``channels`` channels (the first
    ``downsample`` with stride 2, DrQ has 1), ReLU, then Linear -> LayerNorm -> tanh.
    ``[B, 3, H, W]`` float in [0, 1] -> ``[B, feature_dim]``.

    A second stride-2 layer cuts the conv cost ~4x and the Linear ~5x at 84x84 (a success
    classifier needs less spatial precision than a policy), which is what makes CPU training and
    per-frame inference cheap."""

    def __init__(self, in_hw: tuple[int, int], channels: int = 32, layers: int = 4, feature_dim: int = 50,
                 downsample: int = 1) -> None:
        super().__init__()
        self.in_hw = (int(in_hw[0]), int(in_hw[1]))
        self.channels, self.layers, self.feature_dim = int(channels), int(layers), int(feature_dim)
        self.downsample = int(downsample)
        convs: list[nn.Module] = []
        c, h, w = 3, self.in_hw[0], self.in_hw[1]
        for i in range(self.layers):
            stride = 2 if i < self.downsample else 1
            convs += [nn.Conv2d(c, self.channels, 3, stride=stride), nn.ReLU()]
            c, h, w = self.channels, (h - 3) // stride + 1, (w - 3) // stride + 1
            if h < 1 or w < 1:
                raise UsageError(f"reward: images of {self.in_hw[0]}x{self.in_hw[1]} are too small for {layers} "
                                 f"conv layers (set image_size= larger or conv_layers= fewer)")
        self.convs = nn.Sequential(*convs)
        self.fc = nn.Linear(c * h * w, self.feature_dim)
        self.ln = nn.LayerNorm(self.feature_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.convs(x - 0.5).flatten(1)
        return torch.tanh(self.ln(self.fc(h)))

    def arch(self) -> dict[str, Any]:
        return {"input_shape": [3, *self.in_hw], "channels": self.channels, "layers": self.layers,
                "feature_dim": self.feature_dim, "downsample": self.downsample}


def random_shift(x: torch.Tensor, pad: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """DrQ random shift: pad by ``pad`` (edge replicate) and crop back at an independent random offset
    per sample. ``[B, C, H, W] -> [B, C, H, W]``; offsets are uniform in ``{0, ..., 2 pad}``."""
    if pad <= 0:
        return x
    b, _, h, w = x.shape
    xp = F.pad(x, (pad, pad, pad, pad), mode="replicate")
    off = torch.randint(0, 2 * pad + 1, (b, 2), generator=generator)
    return torch.stack([xp[i, :, int(off[i, 0]):int(off[i, 0]) + h, int(off[i, 1]):int(off[i, 1]) + w]
                        for i in range(b)])


class SuccessClassifier(nn.Module):
    """P(success | camera frames[, proprio]).

    forward(images: list of uint8 [B, H_i, W_i, 3] in ``cameras`` order, proprio float [B, P] | None)
    -> logits [B]. Frames are resized to ``image_hw`` when they differ.
    """

    def __init__(self, cameras: Sequence[str], image_hw: tuple[int, int], proprio_dim: int = 0, *, channels: int = 32,
                 layers: int = 4, feature_dim: int = 50, downsample: int = 1, shared_encoder: bool = False,
                 hidden: int = 256, encoder: ConvEncoder | None = None) -> None:
        super().__init__()
        self.cameras = list(cameras)
        self.image_hw = (int(image_hw[0]), int(image_hw[1]))
        self.proprio_dim = int(proprio_dim)
        self.frozen_encoder = encoder is not None
        if encoder is not None:
            shared_encoder = True
            for p in encoder.parameters():
                p.requires_grad_(False)
        self.shared_encoder = bool(shared_encoder)
        n_enc = 1 if self.shared_encoder else len(self.cameras)
        self.encoders = nn.ModuleList([encoder] if encoder is not None else
                                      [ConvEncoder(self.image_hw, channels, layers, feature_dim, downsample) for _ in range(n_enc)])
        fdim = self.encoders[0].feature_dim
        pdim = 64 if self.proprio_dim else 0
        self.proprio_net = mlp(self.proprio_dim, (64,), pdim) if self.proprio_dim else None
        self.register_buffer("proprio_mean", torch.zeros(max(1, self.proprio_dim)))
        self.register_buffer("proprio_std", torch.ones(max(1, self.proprio_dim)))
        self.head = mlp(fdim * len(self.cameras) + pdim, (hidden,), 1)

    def train(self, mode: bool = True) -> "SuccessClassifier":
        super().train(mode)
        if self.frozen_encoder:
            self.encoders[0].eval()  # a frozen encoder keeps its inference behaviour
        return self

    def preprocess(self, img: torch.Tensor) -> torch.Tensor:
        """uint8 [B, H, W, 3] -> float [B, 3, h, w] in [0, 1] at the model's size."""
        x = img.permute(0, 3, 1, 2).float().div_(255.0)
        if tuple(x.shape[-2:]) != self.image_hw:
            x = F.interpolate(x, size=self.image_hw, mode="bilinear", align_corners=False, antialias=True)
        return x

    def forward(self, images: Sequence[torch.Tensor], proprio: torch.Tensor | None = None, *, pad: int = 0,
                generator: torch.Generator | None = None) -> torch.Tensor:
        feats = []
        for i, img in enumerate(images):
            x = random_shift(self.preprocess(img), pad, generator)
            feats.append(self.encoders[0 if self.shared_encoder else i](x))
        if self.proprio_net is not None:
            if proprio is None:
                raise UsageError("reward: this classifier needs proprio inputs")
            p = (proprio.float() - self.proprio_mean) / self.proprio_std
            feats.append(self.proprio_net(p.clamp(-10.0, 10.0)))
        return self.head(torch.cat(feats, dim=-1)).squeeze(-1)

    def member_logits(self, images: Sequence[torch.Tensor], proprio: torch.Tensor | None = None, *, pad: int = 0,
                      generator: torch.Generator | None = None) -> torch.Tensor:
        """Logits ``[1, B]``: a single model is an ensemble of one (the training loop's view)."""
        return self(images, proprio, pad=pad, generator=generator)[None]

    def fit_proprio(self, proprio: np.ndarray) -> None:
        """Fix the proprio normaliser on the training frames (float [N, P])."""
        if self.proprio_dim:
            p = torch.as_tensor(proprio, dtype=torch.float32)
            self.proprio_mean.copy_(p.mean(0))
            self.proprio_std.copy_(p.std(0).clamp_min(1e-2))

    def arch(self) -> dict[str, Any]:
        e = self.encoders[0]
        return {"channels": e.channels, "layers": e.layers, "feature_dim": e.feature_dim, "downsample": e.downsample,
                "shared_encoder": self.shared_encoder, "frozen_encoder": self.frozen_encoder,
                "hidden": int(self.head[0].out_features), "encoder_input_hw": list(e.in_hw)}


class SuccessEnsemble(nn.Module):
    """K success classifiers trained independently (own initialisation, batches and augmentation); the
    ensemble's probability is their mean (deep ensembles, Lakshminarayanan et al. 2017). On a few hundred
    labelled frames one training can land on a classifier that generalises badly (a spurious cue in
    the scene); averaging damps what a single unlucky seed does to the reward.

    forward(images, proprio) -> logits [B] of the mean probability; member_logits -> [K, B].
    """

    def __init__(self, members: Sequence[SuccessClassifier]) -> None:
        super().__init__()
        if len(members) < 2:
            raise ValueError("SuccessEnsemble needs at least two members")
        self.members = nn.ModuleList(members)
        m0 = members[0]
        self.cameras, self.image_hw, self.proprio_dim = m0.cameras, m0.image_hw, m0.proprio_dim
        self.frozen_encoder, self.shared_encoder = m0.frozen_encoder, m0.shared_encoder

    @property
    def encoders(self) -> nn.ModuleList:
        """The first member's encoders (what a caller reusing "the classifier's encoder" gets)."""
        return self.members[0].encoders  # type: ignore[return-value]

    def member_logits(self, images: Sequence[torch.Tensor], proprio: torch.Tensor | None = None, *, pad: int = 0,
                      generator: torch.Generator | None = None) -> torch.Tensor:
        """Logits ``[K, B]``, each member with its own random shift of the frames."""
        return torch.stack([m(images, proprio, pad=pad, generator=generator) for m in self.members])

    def forward(self, images: Sequence[torch.Tensor], proprio: torch.Tensor | None = None, *, pad: int = 0,
                generator: torch.Generator | None = None) -> torch.Tensor:
        lg = self.member_logits(images, proprio, pad=pad, generator=generator)
        # logit(mean_k sigmoid(l_k)) = log mean p - log mean (1 - p), in log space so that confident members
        # (|l| of tens) neither overflow nor round the mean to exactly 0 or 1.
        return torch.logsumexp(F.logsigmoid(lg), 0) - torch.logsumexp(F.logsigmoid(-lg), 0)

    def train(self, mode: bool = True) -> "SuccessEnsemble":
        super().train(mode)
        for m in self.members:
            m.train(mode)  # keeps a frozen encoder in eval mode
        return self

    def fit_proprio(self, proprio: np.ndarray) -> None:
        for m in self.members:
            m.fit_proprio(proprio)  # type: ignore[operator]

    def arch(self) -> dict[str, Any]:
        return {**self.members[0].arch(), "ensemble": len(self.members)}  # type: ignore[operator]


# ----------------------------------------------------------------------------- files

def save_model(model_dir: str | Path, model: SuccessClassifier | SuccessEnsemble, meta: dict[str, Any]) -> Path:
    """Write weights and metadata into ``model_dir`` (each file atomically: temp file + rename)."""
    from safetensors.torch import save_file

    d = Path(model_dir)
    d.mkdir(parents=True, exist_ok=True)
    tmp = d / (WEIGHTS_FILE + ".tmp")
    # clone: the members of an ensemble share one frozen encoder, and safetensors refuses tensors that share memory
    state = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    save_file(state, str(tmp), metadata={"format": FORMAT})
    os.replace(tmp, d / WEIGHTS_FILE)
    full = {"format": FORMAT, "version": 1, "cameras": model.cameras, "image_size": list(model.image_hw),
            "proprio_dim": model.proprio_dim, "arch": model.arch(), **meta}
    atomic_write_text(d / META_FILE, json.dumps(full, indent=1))
    return d


def read_meta(model_dir: str | Path) -> dict[str, Any]:
    """The metadata of a model directory; unreadable -> UsageError naming it."""
    d = Path(model_dir)
    if not d.is_dir():
        raise UsageError(f"reward: model dir not found: {d}")
    try:
        meta = json.loads((d / META_FILE).read_text())
    except FileNotFoundError:
        raise UsageError(f"reward: {d} is not a reward model dir (no {META_FILE}; make one with roborl reward train)") from None
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UsageError(f"reward: {d / META_FILE} is unreadable ({type(e).__name__})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise UsageError(f"reward: {d / META_FILE} is not a {FORMAT} file")
    return meta


def load_model(model_dir: str | Path) -> tuple[SuccessClassifier | SuccessEnsemble, dict[str, Any]]:
    """(model in eval mode, metadata). Missing, corrupt or mismatched files -> UsageError, one line."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    d = Path(model_dir)
    meta = read_meta(d)
    try:
        a = meta["arch"]
        hw = tuple(meta["image_size"])
        ds = int(a.get("downsample", 1))
        enc = ConvEncoder(tuple(a.get("encoder_input_hw", hw)), a["channels"], a["layers"], a["feature_dim"], ds) \
            if a.get("frozen_encoder") else None
        k = int(a.get("ensemble", 1))
        members = [SuccessClassifier(meta["cameras"], hw, int(meta["proprio_dim"]), channels=a["channels"],
                                     layers=a["layers"], feature_dim=a["feature_dim"], downsample=ds,
                                     shared_encoder=a["shared_encoder"], hidden=a["hidden"], encoder=enc)
                   for _ in range(max(1, k))]
        model: SuccessClassifier | SuccessEnsemble = members[0] if k <= 1 else SuccessEnsemble(members)
    except (KeyError, TypeError, ValueError) as e:
        raise UsageError(f"reward: {d / META_FILE} is incomplete ({type(e).__name__}: {e})") from None
    try:
        state = load_file(str(d / WEIGHTS_FILE))
    except FileNotFoundError:
        raise UsageError(f"reward: {d} has no {WEIGHTS_FILE}") from None
    except (SafetensorError, OSError, ValueError) as e:
        raise UsageError(f"reward: {d / WEIGHTS_FILE} is unreadable ({e})") from None
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise UsageError(f"reward: {d / WEIGHTS_FILE} does not match {META_FILE} "
                         f"({str(e).splitlines()[0]})") from None
    for v in state.values():
        if v.is_floating_point() and not torch.isfinite(v).all():
            raise UsageError(f"reward: {d / WEIGHTS_FILE} holds non-finite weights")
    return model.eval(), meta


def save_encoder(path: str | Path, encoder: ConvEncoder) -> None:
    """Save a conv encoder as a safetensors file whose metadata names its architecture and input shape,
    for ``ClassifierTrainConfig.encoder`` (``roborl reward train --encoder PATH``)."""
    from safetensors.torch import save_file

    meta = {"format": ENCODER_FORMAT, **{k: json.dumps(v) for k, v in encoder.arch().items()}}
    save_file({k: v.detach().contiguous().cpu() for k, v in encoder.state_dict().items()}, str(path), metadata=meta)


def load_encoder(path: str | Path, image_hw: tuple[int, int]) -> ConvEncoder:
    """A frozen encoder from ``path`` whose input must be ``3 x image_hw``; else UsageError, one line."""
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    p = Path(path)
    if not p.is_file():
        raise UsageError(f"reward: encoder file not found: {p}")
    try:
        with safe_open(str(p), framework="pt") as fh:
            md = fh.metadata() or {}
        state = load_file(str(p))
    except (SafetensorError, OSError, ValueError) as e:
        raise UsageError(f"reward: encoder {p} is not a readable safetensors file ({e})") from None
    if md.get("format") != ENCODER_FORMAT:
        raise UsageError(f"reward: encoder {p} has no {ENCODER_FORMAT} metadata (write it with "
                         f"roborl.reward.model.save_encoder)")
    try:
        arch = {k: json.loads(md[k]) for k in ("input_shape", "channels", "layers", "feature_dim")}
        arch["downsample"] = json.loads(md.get("downsample", "1"))
    except (KeyError, json.JSONDecodeError) as e:
        raise UsageError(f"reward: encoder {p} metadata is incomplete ({e})") from None
    want = [3, int(image_hw[0]), int(image_hw[1])]
    if list(arch["input_shape"]) != want:
        s = "x".join(map(str, arch["input_shape"]))
        raise UsageError(f"reward: encoder {p} expects {s} input but the classifier feeds "
                         f"{'x'.join(map(str, want))} (set image_size={arch['input_shape'][1]})")
    enc = ConvEncoder(tuple(arch["input_shape"][1:]), arch["channels"], arch["layers"], arch["feature_dim"],
                      arch["downsample"])
    try:
        enc.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise UsageError(f"reward: encoder {p} weights do not match its metadata ({str(e).splitlines()[0]})") from None
    return enc


# ----------------------------------------------------------------------------- inference

def obs_value(obs: Any, key: str) -> Any:
    """``obs[a][b]`` for the dotted key ``"a.b"`` (store field names flatten Dict observations this way)."""
    v = obs
    for part in key.split("."):
        v = v[part]
    return v


class RewardClassifier:
    """A loaded model for inference on CPU. ``probs`` on batches, ``prob`` on one env observation."""

    def __init__(self, model_dir: str | Path, threads: int | None = None) -> None:
        self.model_dir = Path(model_dir)
        self.model, self.meta = load_model(model_dir)
        self.cameras: list[str] = list(self.meta["cameras"])
        self.proprio_keys: list[str] = list(self.meta.get("proprio_keys", []))
        self.threshold = float(self.meta.get("threshold", 0.5))
        if threads:
            torch.set_num_threads(int(threads))

    def probs(self, images: dict[str, np.ndarray], proprio: np.ndarray | None = None, batch: int = 256) -> np.ndarray:
        """P(success) float [N] for frames ``images[cam]`` uint8 [N, H, W, 3] (and proprio float [N, P])."""
        n = len(next(iter(images.values())))
        out = np.empty(n, dtype=np.float32)
        with torch.inference_mode():
            for a in range(0, n, batch):
                b = min(n, a + batch)
                imgs = [torch.from_numpy(np.ascontiguousarray(images[c][a:b])) for c in self.cameras]
                p = None if proprio is None else torch.as_tensor(proprio[a:b], dtype=torch.float32)
                out[a:b] = torch.sigmoid(self.model(imgs, p)).numpy()
        return out

    def prob(self, obs: Any) -> float:
        """P(success) of one env observation (a Dict observation holding the model's cameras)."""
        imgs = {c: np.asarray(obs_value(obs, c))[None] for c in self.cameras}
        p = None
        if self.proprio_keys:
            p = np.concatenate([np.asarray(obs_value(obs, k), np.float32).reshape(-1) for k in self.proprio_keys])[None]
        return float(self.probs(imgs, p)[0])

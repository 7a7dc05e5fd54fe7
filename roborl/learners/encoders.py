"""Image encoders for SAC on Dict observations with cameras (DrQ, Kostrikov et al. 2020; DrQ-v2, Yarats et al. 2021).

* :func:`random_shift`: pad + random crop per sample, on the batch's device (DrQ's augmentation).
* :class:`ConvEncoder`: DrQ's 4-layer conv (3x3, first stride 2) -> Linear -> LayerNorm -> tanh,
  one camera ``[B, H, W, C] uint8 -> [B, feature_dim]``.
* :class:`PixelEncoder`: all cameras (one conv each, or one shared) -> concatenated features
  ``[B, n_cams * feature_dim]``; the learner concatenates the normalised proprio vector.
* :class:`EmbeddingCache`: the frozen-encoder path. Embeddings live in a direct-mapped table keyed
  by the sampler's row id (``Batch.index``: unique per stored transition for the store's life, so
  a ring overwrite gets a new id); the next-obs cache also checks a fingerprint of the frame. Each
  stored frame is encoded once per role (obs / next_obs), not once per sample. The learner sees only
  tensors.
* :class:`SpatialSoftmax`: the keypoint bottleneck (``arch="keypoints"``): expected image coordinates per channel.
* :class:`BCPretrainer`: BC with random shift, the default objective of ``roborl encoder pretrain``.
* :class:`SpatialAEPretrainer`: the deep spatial autoencoder (Finn et al. 2016): reconstruct a
  downsampled image through the keypoint bottleneck; needs no actions or labels, so it can use
  frames of any episodes (random-action rollouts, failed attempts), not just demos.
* :class:`EpisodeContrastivePretrainer`: InfoNCE between two times of one episode against other
  episodes: keeps what the reset randomised (goal marker, object), ignores the moving arm; no labels.
* :class:`GroupPixelEncoder`: the same encoder in PPO's encoder slot (observation groups).
* :func:`save_encoder` / :func:`load_encoder_state`: safetensors files with the input shapes in
  their metadata (a mismatch is one line, exit 2).
"""
from __future__ import annotations

import copy
import math
import json
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from roborl.learners.networks import mlp

__all__ = ["image_keys", "vector_keys", "random_shift", "random_shift_reference", "ConvEncoder", "PixelEncoder",
           "SpatialSoftmax", "ENCODER_ARCHS", "EmbeddingCache", "save_encoder", "load_encoder_state", "read_encoder_meta",
           "load_encoder", "BCPretrainer", "SpatialAEPretrainer",
           "EpisodeContrastivePretrainer", "PRETRAINERS", "GroupPixelEncoder"]


def _is_image(shape: tuple[int, ...]) -> bool:
    return len(shape) == 3 and (shape[-1] in (1, 3) or shape[0] in (1, 3))


def image_keys(spec: Mapping[str, tuple[int, ...]]) -> tuple[str, ...]:
    """The camera leaves of an observation spec ``{leaf name: shape}`` (sorted)."""
    return tuple(sorted(k for k, s in spec.items() if _is_image(tuple(s))))


def concat_vectors(obs: Mapping[str, torch.Tensor], keys: Sequence[str]) -> torch.Tensor:
    """The vector leaves ``keys`` of a batch {leaf: [B, ...]} concatenated in that order: float [B, V] (V may be 0)."""
    b = next(iter(obs.values())).shape[0]
    if not keys:
        return torch.zeros(b, 0)
    return torch.cat([obs[k].reshape(b, -1).float() for k in keys], -1)


def vector_keys(spec: Mapping[str, tuple[int, ...]]) -> tuple[str, ...]:
    """The vector leaves (proprio, goals, ...) of an observation spec (sorted)."""
    return tuple(sorted(k for k, s in spec.items() if not _is_image(tuple(s))))


def to_chw(img: torch.Tensor) -> torch.Tensor:
    """``[B, H, W, C]`` (or ``[B, C, H, W]``) uint8 -> ``[B, C, H, W]`` float in [0, 1]."""
    if img.shape[-1] in (1, 3) and img.shape[1] not in (1, 3):
        img = img.permute(0, 3, 1, 2)
    return img.float().div_(255.0) if img.dtype == torch.uint8 else img.float()


def random_shift(x: torch.Tensor, pad: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """DrQ random shift: replicate-pad by ``pad`` and crop back at a random offset per sample.

    x: [B, C, H, W] float -> [B, C, H, W]; each sample is shifted by (dy, dx) in [-pad, pad]^2.
    One gather (advanced indexing) for the whole batch; :func:`random_shift_reference` is the
    plain per-sample crop it must equal.
    """
    if pad == 0:
        return x
    b, _, h, w = x.shape
    xp = F.pad(x, (pad, pad, pad, pad), mode="replicate")
    off = torch.randint(0, 2 * pad + 1, (b, 2), device=x.device, generator=generator)
    rows = off[:, 0:1] + torch.arange(h, device=x.device)  # [B, H]
    cols = off[:, 1:2] + torch.arange(w, device=x.device)  # [B, W]
    bi = torch.arange(b, device=x.device)[:, None, None]
    out = xp.permute(0, 2, 3, 1)[bi, rows[:, :, None], cols[:, None, :]]  # [B, H, W, C]
    return out.permute(0, 3, 1, 2)


def random_shift_reference(x: torch.Tensor, pad: int, offsets: torch.Tensor) -> torch.Tensor:
    """The plain formula: sample i is ``pad(x_i)[:, oy:oy+H, ox:ox+W]`` with ``offsets[i] = (oy, ox)``."""
    if pad == 0:
        return x
    h, w = x.shape[-2:]
    xp = F.pad(x, (pad, pad, pad, pad), mode="replicate")
    return torch.stack([xp[i, :, int(o[0]):int(o[0]) + h, int(o[1]):int(o[1]) + w] for i, o in enumerate(offsets)])


class SpatialSoftmax(nn.Module):
    """Keypoints: ``[B, K, H, W]`` feature maps -> ``[B, 2K]`` expected image coordinates (x_k, y_k) per channel.

    Each channel is a softmax over its H*W positions (scaled by a learned inverse temperature); the
    feature is the expectation of the pixel coordinates under it, in [-1, 1] (x: left -> right, y:
    top -> bottom; a pixel's centre ``-1 + 2 j / (W - 1)``). Levine et al. 2016, "End-to-End Training
    of Deep Visuomotor Policies"; Finn et al. 2016, "Deep Spatial Autoencoders for Visuomotor Learning":
    with a fixed camera the coordinates of a channel that fires on one object track that object's
    position on the table. Output layout ``[x_0, y_0, x_1, y_1, ...]``.
    """

    def __init__(self, height: int, width: int, temperature: float = 1.0, learn_temperature: bool = True) -> None:
        super().__init__()
        ys, xs = torch.meshgrid(torch.linspace(-1.0, 1.0, height), torch.linspace(-1.0, 1.0, width), indexing="ij")
        self.register_buffer("pos", torch.stack([xs.reshape(-1), ys.reshape(-1)], -1), persistent=False)  # [H*W, 2]
        log_t = torch.tensor(math.log(temperature))
        self.log_temperature = nn.Parameter(log_t) if learn_temperature else None
        if self.log_temperature is None:
            self.register_buffer("_log_t", log_t, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, k = x.shape[:2]
        log_t = self.log_temperature if self.log_temperature is not None else self._log_t
        attn = torch.softmax(x.reshape(b, k, -1) / log_t.exp(), -1)  # [B, K, H*W]
        return (attn @ self.pos).reshape(b, 2 * k)  # [B, K, 2] -> [B, 2K]


ENCODER_ARCHS = ("conv", "keypoints")


class ConvEncoder(nn.Module):
    """One camera: ``[B, C, H, W]`` float in [0, 1] -> ``[B, feature_dim]``.

    ``arch="conv"``: DrQ's encoder (convs -> Linear -> LayerNorm -> tanh). ``arch="keypoints"``: the
    same convs, then a 1x1 conv to ``feature_dim // 2`` channels and a :class:`SpatialSoftmax`: the
    features are those channels' expected image coordinates (a deep spatial autoencoder's bottleneck).
    """

    def __init__(self, in_shape: tuple[int, int, int], channels: int = 32, layers: int = 4, feature_dim: int = 50,
                 downsample: int = 1, arch: str = "conv") -> None:
        super().__init__()
        if arch not in ENCODER_ARCHS:
            raise ValueError(f"encoder arch must be one of {ENCODER_ARCHS}, got {arch!r}")
        if arch == "keypoints" and feature_dim % 2:
            raise ValueError(f"a keypoint encoder's feature_dim is 2 x keypoints, so even; got {feature_dim}")
        c, h, w = in_shape
        convs: list[nn.Module] = []
        for i in range(layers):
            # ``downsample`` leading stride-2 layers (DrQ: 1); 2 cuts the conv cost ~4x on a CPU.
            convs += [nn.Conv2d(c if i == 0 else channels, channels, 3, stride=2 if i < downsample else 1), nn.ReLU()]
        self.convs = nn.Sequential(*convs)
        with torch.no_grad():
            fmap = self.convs(torch.zeros(1, c, h, w))
        self.arch = arch
        self.proj: nn.Module
        if arch == "keypoints":
            self.proj = nn.Sequential(nn.Conv2d(channels, feature_dim // 2, 1),
                                      SpatialSoftmax(int(fmap.shape[-2]), int(fmap.shape[-1])))
        else:
            # State-dict keys proj.0 / proj.1 as in files saved before the keypoint option.
            self.proj = nn.Sequential(nn.Linear(int(fmap.numel()), feature_dim), nn.LayerNorm(feature_dim), nn.Tanh())
        self.out_dim = feature_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.convs(x - 0.5)
        return self.proj(f if self.arch == "keypoints" else f.flatten(1))


class PixelEncoder(nn.Module):
    """All cameras -> features. ``forward({key: [B, H, W, C] uint8}, augment) -> [B, n_cams * feature_dim]``.

    ``shared``: one :class:`ConvEncoder` for every camera (cameras must have one shape), else one per camera.
    ``pad`` > 0 and ``augment=True`` apply :func:`random_shift` to each camera before the conv.
    """

    def __init__(self, spec: Mapping[str, tuple[int, ...]], *, shared: bool = False, channels: int = 32,
                 layers: int = 4, feature_dim: int = 50, pad: int = 0, downsample: int = 1, arch: str = "conv") -> None:
        super().__init__()
        spec = {k.replace("/", "."): v for k, v in spec.items()}  # the store's leaf names (pixels.front)
        self.keys = image_keys(spec)
        self.shapes = {k: _chw(tuple(spec[k])) for k in self.keys}
        self.shared, self.pad, self.downsample = shared, pad, downsample
        self.channels, self.layers, self.arch = channels, layers, arch
        if shared and len(set(self.shapes.values())) > 1:
            raise ValueError(f"encoder.shared needs cameras of one shape, got {self.shapes}")
        self.convs = nn.ModuleDict(
            {"shared": ConvEncoder(self.shapes[self.keys[0]], channels, layers, feature_dim, downsample, arch)} if shared
            else {_mod(k): ConvEncoder(self.shapes[k], channels, layers, feature_dim, downsample, arch) for k in self.keys})
        self.out_dim = feature_dim * len(self.keys)

    def input_shapes(self) -> dict[str, list[int]]:
        return {k: list(v) for k, v in self.shapes.items()}

    def prepare(self, obs: Mapping[str, torch.Tensor], augment: bool = False) -> list[torch.Tensor]:
        """The cameras as ``[B, C, H, W]`` floats in [0, 1], randomly shifted when ``augment`` and ``pad`` > 0.
        Prepared once per batch so the online, target and base encoders see the same augmented images (DrQ)."""
        ims = [to_chw(obs[k]) for k in self.keys]
        if augment and self.pad > 0:
            ims = [random_shift(x, self.pad) for x in ims]
        return ims

    def encode(self, ims: list[torch.Tensor]) -> torch.Tensor:
        """Prepared cameras -> ``[B, out_dim]``."""
        if self.shared:
            # One conv call over all cameras stacked on the batch dim: [n_cams * B, C, H, W].
            f = self.convs["shared"](torch.cat(ims))
            return torch.cat(f.chunk(len(self.keys)), -1)
        return torch.cat([self.convs[_mod(k)](x) for k, x in zip(self.keys, ims)], -1)

    def forward(self, obs: Mapping[str, torch.Tensor], augment: bool = False) -> torch.Tensor:
        return self.encode(self.prepare(obs, augment))


def _chw(shape: tuple[int, ...]) -> tuple[int, int, int]:
    return (shape[2], shape[0], shape[1]) if shape[-1] in (1, 3) and shape[0] not in (1, 3) else (shape[0], shape[1], shape[2])


def _mod(key: str) -> str:
    return key.replace("/", "__").replace(".", "_")


class EmbeddingCache(nn.Module):
    """Frozen-encoder embeddings, computed once per stored frame and reused by every later sample.

    A direct-mapped table of ``size`` slots: row id ``i`` (``Batch.index``) lives in slot ``i % size``
    with its key ``i`` and a fingerprint of its frames (a fixed random subset of pixels, exact int64
    arithmetic). A hit needs both to match, so a slot reused by another row, or a next-obs row whose
    n-step successor changed (another ``n_step``), is recomputed instead of served stale.
    ``lookup(index [B], images {key: [B, ...]}, encode) -> [B, D]`` calls ``encode`` on the misses only.
    ``verify=False`` keys by row id alone (no fingerprint): exact where a row id always names the same
    frame, as a stored row's own observation does (ids are never reused, a ring overwrite gets a new
    one); the next observation of a row is not such a frame (its n-step successor moves while the
    episode is open), so that cache verifies. Not saved in checkpoints (buffers are non-persistent): it
    refills from the store after a resume.
    """

    def __init__(self, size: int, dim: int, n_probe: int = 64, seed: int = 0, verify: bool = True) -> None:
        super().__init__()
        self.size, self.dim, self.n_probe = int(size), int(dim), int(n_probe)
        self.verify = bool(verify)
        self.register_buffer("emb", torch.zeros(self.size, self.dim), persistent=False)
        self.register_buffer("key", torch.full((self.size,), -1, dtype=torch.int64), persistent=False)
        self.register_buffer("fp", torch.zeros(self.size, dtype=torch.int64), persistent=False)
        self._seed = seed
        self._probe: dict[tuple[str, int], tuple[torch.Tensor, torch.Tensor]] = {}
        self.encoded = 0  # frames (rows) passed to ``encode``: the "once per frame" counter the tests read

    def fingerprint(self, images: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """[B] int64: sum over cameras of pixel values at fixed random positions times fixed random weights."""
        out = None
        for k in sorted(images):
            x = images[k].reshape(images[k].shape[0], -1)
            n = x.shape[1]
            pr = self._probe.get((k, n))
            if pr is None or pr[0].device != x.device:
                g = torch.Generator().manual_seed(self._seed + n)
                pos = torch.randint(0, n, (min(self.n_probe, n),), generator=g)
                wts = torch.randint(1, 1 << 20, (len(pos),), generator=g, dtype=torch.int64)
                pr = self._probe[(k, n)] = (pos.to(x.device), wts.to(x.device))
            # One flat take of B * n_probe bytes (index_select along dim 1 of uint8 is ~2x slower).
            flat = (torch.arange(x.shape[0], device=x.device)[:, None] * n + pr[0]).reshape(-1)
            v = (x.reshape(-1).take(flat).view(x.shape[0], -1).to(torch.int64) * pr[1]).sum(1)
            out = v if out is None else out * 1_000_003 + v
        assert out is not None
        return out

    @torch.no_grad()
    def lookup(self, index: torch.Tensor, images: Mapping[str, torch.Tensor], encode: Any) -> torch.Tensor:
        slot = index % self.size
        if self.verify:
            fp = self.fingerprint(images)
            hit = (self.key[slot] == index) & (self.fp[slot] == fp)
        else:
            fp = None
            hit = self.key[slot] == index
        miss = (~hit).nonzero().squeeze(1)
        if miss.numel():
            # Duplicate rows inside one batch are encoded once: unique misses only.
            uniq, inv = torch.unique(index[miss], return_inverse=True)
            first = torch.zeros(len(uniq), dtype=torch.int64, device=index.device).scatter_(
                0, inv, torch.arange(len(miss), device=index.device))
            rows = miss[first]
            e = encode({k: v.index_select(0, rows) for k, v in images.items()}).float()
            self.encoded += int(rows.numel())
            s = slot[rows]
            self.emb[s] = e
            self.key[s] = index[rows]
            if fp is not None:
                self.fp[s] = fp[rows]
        return self.emb[slot]


def save_encoder(path: str | Path, encoder: PixelEncoder, extra: Mapping[str, Any] | None = None) -> None:
    """Write ``encoder``'s weights to a safetensors file with its input shapes and layout in the metadata
    (``extra``: more JSON-able metadata, e.g. how it was trained)."""
    from safetensors.torch import save_file

    meta = {"input_shapes": json.dumps(encoder.input_shapes()), "shared": json.dumps(encoder.shared),
            "feature_dim": json.dumps(encoder.out_dim // max(1, len(encoder.keys))),
            "channels": json.dumps(encoder.channels), "layers": json.dumps(encoder.layers),
            "downsample": json.dumps(encoder.downsample), "arch": json.dumps(encoder.arch)}
    meta.update({k: json.dumps(v) for k, v in (extra or {}).items()})
    save_file({k: v.detach().cpu().contiguous() for k, v in encoder.state_dict().items()}, str(path), metadata=meta)


def load_encoder_state(path: str | Path, encoder: PixelEncoder, what: str = "sac.encoder.weights") -> None:
    """Load a :func:`save_encoder` file into ``encoder``; a missing file, other input shapes or other
    layers raise :class:`roborl.errors.UsageError` naming ``what``."""
    from roborl.errors import UsageError

    try:
        from safetensors import safe_open
        from safetensors.torch import load_file
    except ImportError:  # pragma: no cover - safetensors ships with the torch extra
        raise UsageError(f"{what}: needs safetensors (pip install 'roborl[torch]')") from None
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"{what}: no such file {p}")
    try:
        with safe_open(str(p), framework="pt") as f:
            meta = f.metadata() or {}
        state = load_file(str(p))
    except Exception as e:  # a corrupt or foreign file
        raise UsageError(f"{what}: {p} is not a safetensors encoder file ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
    shapes = json.loads(meta.get("input_shapes", "null"))
    if shapes != encoder.input_shapes():
        raise UsageError(f"{what}: {p} encodes inputs {shapes}, this needs {encoder.input_shapes()} (C, H, W per camera)")
    arch = json.loads(meta.get("arch", '"conv"'))  # files from before the keypoint option are conv encoders
    if arch != encoder.arch:
        raise UsageError(f"{what}: {p} is a {arch!r} encoder, this needs {encoder.arch!r} (sac.encoder.arch)")
    try:
        encoder.load_state_dict(state)
    except RuntimeError as e:
        arch = {k: json.loads(meta[k]) for k in ("arch", "shared", "channels", "layers", "feature_dim", "downsample")
                if k in meta}
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        why = next((ln for ln in lines if "size mismatch" in ln or "key" in ln.lower()), lines[0] if lines else "")
        raise UsageError(f"{what}: {p} does not fit sac.encoder (the file has {arch}): {why.rstrip('.')}") from None
    # Layout fields that leave every weight's shape alone (a keypoint encoder's strides) are checked by name.
    have = {"shared": encoder.shared, "downsample": encoder.downsample, "channels": encoder.channels,
            "layers": encoder.layers, "feature_dim": encoder.out_dim // max(1, len(encoder.keys))}
    diff = {k: json.loads(meta[k]) for k in have if k in meta and json.loads(meta[k]) != have[k]}
    if diff:
        raise UsageError(f"{what}: {p} does not fit sac.encoder: the file has {diff}, this has "
                         f"{ {k: have[k] for k in diff} }")


def read_encoder_meta(path: str | Path) -> dict[str, Any]:
    """The JSON metadata of a :func:`save_encoder` file (input shapes, layout, training record)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    return {k: json.loads(v) for k, v in meta.items()}


def load_encoder(path: str | Path, what: str = "encoder") -> PixelEncoder:
    """A :class:`PixelEncoder` built from a :func:`save_encoder` file's metadata (cameras, layout, arch) and
    loaded with its weights; a missing or foreign file is a one-line :class:`roborl.errors.UsageError`."""
    from roborl.errors import UsageError

    p = Path(path)
    if not p.is_file():
        raise UsageError(f"{what}: no such file {p}")
    try:
        meta = read_encoder_meta(p)
        shapes = meta["input_shapes"]
        spec = {k: (int(c[1]), int(c[2]), int(c[0])) for k, c in shapes.items()}  # C,H,W -> H,W,C
        enc = PixelEncoder(spec, shared=bool(meta.get("shared", False)), channels=int(meta["channels"]),
                           layers=int(meta["layers"]), feature_dim=int(meta["feature_dim"]),
                           downsample=int(meta.get("downsample", 1)), arch=str(meta.get("arch", "conv")))
    except Exception as e:  # not our metadata
        raise UsageError(f"{what}: {p} is not a roborl encoder file ({type(e).__name__}: {e})") from None
    load_encoder_state(p, enc, what=what)
    return enc.eval()


def frozen_copy(module: nn.Module) -> nn.Module:
    """A deep copy with gradients off (the target encoder; the residual base's encoder after BC)."""
    return copy.deepcopy(module).requires_grad_(False)


class BCPretrainer(nn.Module):
    """Pretrain a :class:`PixelEncoder` by behaviour cloning with random-shift augmentation.

    ``action_hat = tanh(MLP([encoder(shift(images)), normalise(vector)]))`` fit by MSE to the
    demonstrator's action (clipped to [-1, 1]): the encoder must keep what the expert's action depends
    on (the object and the goal marker relative to the gripper). The head and the normaliser are
    discarded; :attr:`encoder` is what ``sac.encoder.weights`` loads (frozen, unshifted).

    ``update({leaf: [B, ...]}, action [B, A]) -> loss`` (0-d, detached); ``loss(...)`` without a step.
    """

    def __init__(self, spec: Mapping[str, tuple[int, ...]], act_dim: int, *, shared: bool = False, channels: int = 32,
                 layers: int = 4, feature_dim: int = 50, downsample: int = 1, pad: int = 4,
                 hidden: tuple[int, ...] = (256, 256), lr: float = 3e-4, arch: str = "conv") -> None:
        super().__init__()
        from roborl.learners.networks import ObsNormalizer

        spec = {k.replace("/", "."): tuple(int(d) for d in v) for k, v in spec.items()}
        self.encoder = PixelEncoder(spec, shared=shared, channels=channels, layers=layers, feature_dim=feature_dim,
                                    pad=pad, downsample=downsample, arch=arch)
        self.vec_keys = vector_keys(spec)
        vec_dim = int(sum(int(torch.tensor(spec[k]).prod()) for k in self.vec_keys))
        self.normalizer = ObsNormalizer(vec_dim)
        self.head = mlp(self.encoder.out_dim + vec_dim, tuple(hidden), act_dim)
        self.opt = torch.optim.Adam(self.parameters(), lr=lr)

    def vector(self, obs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The vector leaves concatenated in sorted order: [B, V] (V may be 0)."""
        return concat_vectors(obs, self.vec_keys)

    def predict(self, obs: Mapping[str, torch.Tensor], augment: bool = False) -> torch.Tensor:
        """[B, A] in (-1, 1)."""
        f = torch.cat([self.encoder(obs, augment=augment).float(), self.normalizer(self.vector(obs))], -1)
        return torch.tanh(self.head(f))

    def loss(self, obs: Mapping[str, torch.Tensor], action: torch.Tensor, augment: bool = False) -> torch.Tensor:
        """Mean over the batch of the squared error summed over action dims (SAC's BC loss)."""
        return (self.predict(obs, augment) - action.float().clamp(-1.0, 1.0)).pow(2).sum(-1).mean()

    def update(self, obs: Mapping[str, torch.Tensor], action: torch.Tensor) -> torch.Tensor:
        loss = self.loss(obs, action, augment=True)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return loss.detach()

class SpatialAEPretrainer(nn.Module):
    """Pretrain a keypoint :class:`PixelEncoder` as a deep spatial autoencoder (Finn et al. 2016).

    Per camera: ``recon = MLP([keypoints(shift(image)), normalise(vector)])`` predicts the shifted
    image downsampled to ``recon_size`` x ``recon_size`` (RGB, in [-0.5, 0.5]), fit by MSE. The only
    path from the image to the reconstruction is the keypoint coordinates, so they must say where
    the things that change between frames are: the cube, the goal marker, the arm. The vector leaves
    (the arm's own state) also feed the decoder, so it can draw the arm from proprio and the
    keypoints are free to track what proprio does not give (Finn et al. decode from the points alone).
    Uses no actions and no rewards: any frames do. ``update(obs, action=None) -> loss`` (0-d, detached).
    """

    def __init__(self, spec: Mapping[str, tuple[int, ...]], act_dim: int = 0, *, shared: bool = False,
                 channels: int = 32, layers: int = 4, feature_dim: int = 32, downsample: int = 1, pad: int = 2,
                 hidden: tuple[int, ...] = (256,), lr: float = 1e-3, recon_size: int = 32, fg_weight: float = 0.0) -> None:
        super().__init__()
        from roborl.learners.networks import ObsNormalizer

        spec = {k.replace("/", "."): tuple(int(d) for d in v) for k, v in spec.items()}
        self.encoder = PixelEncoder(spec, shared=shared, channels=channels, layers=layers, feature_dim=feature_dim,
                                    pad=pad, downsample=downsample, arch="keypoints")
        self.vec_keys = vector_keys(spec)
        vec_dim = int(sum(math.prod(spec[k]) for k in self.vec_keys))
        self.normalizer = ObsNormalizer(vec_dim)
        self.recon_size = int(recon_size)
        self.feature_dim = feature_dim
        self.fg_weight = float(fg_weight)
        # Per camera: the background (per-pixel median of the training frames, set by ``set_background``).
        # Small objects (a cube of a few pixels) barely move a plain MSE; weighting the pixels that differ from
        # the background makes the keypoints find them. Reads images only: no labels.
        self.background: dict[str, torch.Tensor] = {}
        self.decoders = nn.ModuleDict(
            {_mod(k): mlp(feature_dim + vec_dim, tuple(hidden), self.encoder.shapes[k][0] * recon_size ** 2)
             for k in self.encoder.keys})
        self.opt = torch.optim.Adam(self.parameters(), lr=lr)

    def vector(self, obs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The vector leaves concatenated in sorted order: [B, V] (V may be 0)."""
        return concat_vectors(obs, self.vec_keys)

    @torch.no_grad()
    def set_background(self, obs: Mapping[str, torch.Tensor]) -> None:
        """The per-pixel median of ``obs``'s frames per camera, at the reconstruction size: ``{key: [C * r * r]}``."""
        for k, x in zip(self.encoder.keys, self.encoder.prepare(obs)):
            self.background[k] = self.target(x).median(0).values

    def target(self, im: torch.Tensor) -> torch.Tensor:
        """``[B, C, H, W]`` in [0, 1] -> the reconstruction target ``[B, C * r * r]`` (area-downsampled, centred)."""
        return (F.adaptive_avg_pool2d(im, self.recon_size) - 0.5).flatten(1)

    def loss(self, obs: Mapping[str, torch.Tensor], action: torch.Tensor | None = None,
             augment: bool = False) -> torch.Tensor:
        """Mean squared reconstruction error per pixel, summed over cameras."""
        ims = self.encoder.prepare(obs, augment)
        feats = self.encoder.encode(ims).float().split(self.feature_dim, -1)  # per camera [B, feature_dim]
        vec = self.normalizer(self.vector(obs))
        tot = torch.zeros(())
        for k, x, f in zip(self.encoder.keys, ims, feats):
            recon = self.decoders[_mod(k)](torch.cat([f, vec], -1))
            tgt = self.target(x)
            err = (recon - tgt).pow(2)
            if self.fg_weight > 0 and k in self.background:
                # weight 1 + fg_weight where the pixel differs from the background by > 0.1 in some channel
                fg = (tgt - self.background[k].to(tgt.device)).abs().view(len(tgt), -1, self.recon_size ** 2)
                fg = (fg.amax(1, keepdim=True) > 0.1).expand_as(fg).reshape(len(tgt), -1)
                err = err * (1.0 + self.fg_weight * fg.float())
            tot = tot + err.mean()
        return tot

    def update(self, obs: Mapping[str, torch.Tensor], action: torch.Tensor | None = None) -> torch.Tensor:
        loss = self.loss(obs, augment=True)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return loss.detach()


class EpisodeContrastivePretrainer(nn.Module):
    """Pretrain a :class:`PixelEncoder` by telling episodes apart (InfoNCE, van den Oord et al. 2018).

    A batch holds two frames of each of ``B`` episodes, each randomly shifted on its own:
    ``z = normalise(MLP(encoder(shift(images))))`` and the loss is the symmetric cross-entropy of
    ``z_a @ z_p.T / temperature`` against the diagonal (CURL, Laskin et al. 2020, contrasts two shifts of
    one frame; here the positive is another *time* of the same episode, as time-contrastive networks,
    Sermanet et al. 2018, pair views of one moment). What stays fixed within an episode while the arm
    moves is what the reset randomised: the goal marker, and the object until it is pushed. Those are
    what a task policy must localise and what a BC or reconstruction loss on a few demos ignores (the
    marker is a few pixels wide). Uses no actions, rewards or object state: any stored episodes do,
    random-action ones included. Vector observations are not used (they change within an episode).
    Pairs of rows from one episode are not counted as negatives (``episode`` masks them).

    ``loss(obs_a, obs_p, episode [B])`` / ``update(...)``: ``obs_*`` = ``{leaf: [B, ...]}``, row ``i`` of
    both from episode ``episode[i]``; returns a 0-d loss (``update``: detached, after one Adam step).
    """

    pairs = True  # the data loop must hand over (anchor, positive, episode) batches

    def __init__(self, spec: Mapping[str, tuple[int, ...]], act_dim: int = 0, *, shared: bool = False,
                 channels: int = 32, layers: int = 4, feature_dim: int = 32, downsample: int = 1, pad: int = 4,
                 hidden: tuple[int, ...] = (256,), lr: float = 3e-4, arch: str = "keypoints",
                 temperature: float = 0.1, proj_dim: int = 64) -> None:
        super().__init__()
        from roborl.learners.networks import ObsNormalizer

        spec = {k.replace("/", "."): tuple(int(d) for d in v) for k, v in spec.items()}
        self.encoder = PixelEncoder(spec, shared=shared, channels=channels, layers=layers, feature_dim=feature_dim,
                                    pad=pad, downsample=downsample, arch=arch)
        # Unused by the loss; kept so the data loop can fit it like the other pretrainers'.
        self.vec_keys = vector_keys(spec)
        self.normalizer = ObsNormalizer(int(sum(math.prod(spec[k]) for k in self.vec_keys)))
        self.temperature = float(temperature)
        self.head = mlp(self.encoder.out_dim, tuple(hidden), proj_dim)
        self.opt = torch.optim.Adam(self.parameters(), lr=lr)

    def vector(self, obs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return concat_vectors(obs, self.vec_keys)

    def embed(self, obs: Mapping[str, torch.Tensor], augment: bool = False) -> torch.Tensor:
        """``[B, proj_dim]``, unit norm."""
        return F.normalize(self.head(self.encoder(obs, augment=augment).float()), dim=-1)

    def loss(self, obs_a: Mapping[str, torch.Tensor], obs_p: Mapping[str, torch.Tensor], episode: torch.Tensor,
             augment: bool = False) -> torch.Tensor:
        za, zp = self.embed(obs_a, augment), self.embed(obs_p, augment)
        logits = za @ zp.T / self.temperature  # [B, B]
        same = episode[:, None] == episode[None, :]
        eye = torch.eye(len(za), dtype=torch.bool, device=za.device)
        logits = logits.masked_fill(same & ~eye, float("-inf"))  # another pair of the same episode: not a negative
        target = torch.arange(len(za), device=za.device)
        return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))

    def update(self, obs_a: Mapping[str, torch.Tensor], obs_p: Mapping[str, torch.Tensor],
               episode: torch.Tensor) -> torch.Tensor:
        loss = self.loss(obs_a, obs_p, episode, augment=True)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return loss.detach()


# The objectives of ``roborl encoder pretrain`` (EncoderPretrainConfig.objective) -> their model.
PRETRAINERS: dict[str, type[nn.Module]] = {"bc": BCPretrainer, "autoencoder": SpatialAEPretrainer,
                                           "contrastive": EpisodeContrastivePretrainer}


class GroupPixelEncoder(nn.Module):
    """PPO's encoder over observation groups (rsl_rl's encoder slot of :class:`roborl.learners.ppo.ActorCritic`).

    ``forward({group: [B, ...]}) -> [B, out_dim]``: the camera groups (``[B, H, W, C]`` uint8, or flattened
    ``[B, H*W*C]`` as PPO's batching hands them over) go through one :class:`PixelEncoder`, the vector
    groups are concatenated after its features (sorted order). Camera groups are read raw
    (:attr:`raw_keys`: PPO's per-group normalisers skip them). With ``pad`` > 0 and the module in
    training mode, each call randomly shifts the images (DrQ); ``eval()`` turns that off.
    Pass it as both ``actor_encoder`` and ``critic_encoder`` for one shared trunk.
    """

    def __init__(self, spec: Mapping[str, tuple[int, ...]], *, shared: bool = False, channels: int = 32,
                 layers: int = 4, feature_dim: int = 50, pad: int = 0, downsample: int = 1,
                 exclude: tuple[str, ...] = ()) -> None:
        super().__init__()
        spec = {k.replace("/", "."): tuple(int(d) for d in v) for k, v in spec.items() if k not in exclude}
        self.pixels = PixelEncoder(spec, shared=shared, channels=channels, layers=layers, feature_dim=feature_dim,
                                   pad=pad, downsample=downsample)
        self.spec = spec
        self.raw_keys: tuple[str, ...] = self.pixels.keys
        self.vec_keys = vector_keys(spec)
        self.out_dim = self.pixels.out_dim + int(sum(math.prod(spec[k]) for k in self.vec_keys))

    def forward(self, obs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        b = next(iter(obs.values())).shape[0]
        ims = {k: obs[k].reshape(b, *self.spec[k]) for k in self.raw_keys}
        feats = [self.pixels(ims, augment=self.training).float()]
        feats += [obs[k].reshape(b, -1).float() for k in self.vec_keys]
        return torch.cat(feats, -1)

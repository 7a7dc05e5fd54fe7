"""Pure ``nn.Module`` policies for export, built from a checkpoint's learned parameters.

:func:`load_exported` rebuilds the eval policy with :func:`roborl.learners.load_policy` (the
same path ``roborl eval`` takes), reads its learned tensors, and copies them into the small
modules below, which use only ops that TorchScript and ONNX both support. The learners are
not changed and not needed at deployment.

The exported forward, for a batch of raw observations ``obs [B, O]`` float32::

    x = clip((obs - mu_env) / sqrt(var_env + 1e-8), +-c_env)   env.normalize_obs (PPO runs), else skipped
    x = clip((x - mu) / sigma, +-c)                              the learner's normaliser (SAC fixed, PPO running)
    a = squash(actor_mean(x))                                    SAC: tanh; PPO: tanh or clip (ppo.action_squash)
    a = clip(tanh(base(x)) + beta * a, -1, 1)                    SAC residual mode only (frozen BC base)
    y = clip(mid + half * clip(a, -1, 1), low, high)             RescaleAction into the env's action box

which is ``roborl eval``'s deterministic action followed by ``RescaleAction.action``. Float64
steps of the originals (the env normaliser, the rescale) run in float32 here; the parity
test bounds the difference (<= 1e-5).

Dict observations: :class:`DictInput` takes ``{key: [B, *shape]}`` and concatenates the
flattened leaves in the observation space's key order (``gymnasium.spaces.flatten``'s).

Image policies (pixel SAC, Dict observations with cameras): :class:`PixelPolicyCore` takes the
leaves by their store names (``{"pixels.front": [B, H, W, 3] uint8, "proprio": [B, P]}``)::

    f = cat(conv_cam(permute(x_cam) / 255) for each camera, clip((cat(vectors) - mu) / sigma, +-c))
    a = PolicyCore.head(f, f_base)     (f_base: the residual base's own encoder's features, else f)

which is ``SAC.features`` (online encoder, no augmentation) followed by the same head.
"""
from __future__ import annotations

import copy

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from roborl.errors import UsageError

__all__ = ["ExportedPolicy", "PolicyCore", "DictInput", "load_exported", "config_hash", "EXPORT_META_VERSION"]

EXPORT_META_VERSION = 1


class Normalize(nn.Module):
    """y = clamp((x - mean) / std, -clip, clip). x: [B, O] -> [B, O] (float32 buffers)."""

    def __init__(self, mean: torch.Tensor, std: torch.Tensor, clip: float) -> None:
        super().__init__()
        self.register_buffer("mean", mean.detach().to(torch.float32).clone())
        self.register_buffer("std", std.detach().to(torch.float32).clone())
        self.clip = float(clip)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ((x - self.mean) / self.std).clamp(-self.clip, self.clip)


def _copy_mlp(seq: nn.Module) -> nn.Sequential:
    """A fresh Sequential of Linear / LayerNorm / ReLU / Tanh / ELU with the same parameters as ``seq``."""
    mods = [seq] if isinstance(seq, nn.Linear) else list(seq)
    out: list[nn.Module] = []
    for m in mods:
        if isinstance(m, nn.Linear):
            lin = nn.Linear(m.in_features, m.out_features)
            lin.weight.data.copy_(m.weight.detach().float())
            lin.bias.data.copy_(m.bias.detach().float())
            out.append(lin)
        elif isinstance(m, nn.LayerNorm):
            ln = nn.LayerNorm(m.normalized_shape, eps=m.eps, elementwise_affine=m.elementwise_affine)
            if m.elementwise_affine:
                ln.weight.data.copy_(m.weight.detach().float())
                ln.bias.data.copy_(m.bias.detach().float())
            out.append(ln)
        elif isinstance(m, (nn.ReLU, nn.Tanh, nn.ELU)):
            out.append(type(m)())
        else:
            raise UsageError(f"export: cannot export network layer {type(m).__name__}")
    return nn.Sequential(*out)


def _linear(w: torch.Tensor, b: torch.Tensor) -> nn.Linear:
    """nn.Linear computing x @ w + b (w: [in, out], b: [out])."""
    lin = nn.Linear(w.shape[0], w.shape[1])
    lin.weight.data.copy_(w.detach().t().float())
    lin.bias.data.copy_(b.detach().reshape(-1).float())
    return lin


class PolicyCore(nn.Module):
    """Raw obs [B, O] float32 -> action [B, A] float32 in env units (formula in the module docstring)."""

    def __init__(self, env_norm: Normalize | None, norm: Normalize | None, actor: nn.Sequential, squash: str,
                 base: nn.Sequential | None, beta: float, mid: np.ndarray, half: np.ndarray, low: np.ndarray,
                 high: np.ndarray) -> None:
        super().__init__()
        if squash not in ("tanh", "clip"):
            raise UsageError(f"export: unknown action squash {squash!r}")
        # Stages that are off are empty Sequentials (identity), so TorchScript sees one type.
        self.use_env_norm = env_norm is not None
        self.use_norm = norm is not None
        self.use_base = base is not None
        self.tanh_squash = squash == "tanh"
        self.env_norm = env_norm if env_norm is not None else nn.Sequential()
        self.norm = norm if norm is not None else nn.Sequential()
        self.actor = actor
        self.base = base if base is not None else nn.Sequential()
        self.beta = float(beta)
        f32 = torch.float32
        self.register_buffer("center", torch.as_tensor(np.asarray(mid, np.float64), dtype=f32))
        self.register_buffer("scale", torch.as_tensor(np.asarray(half, np.float64), dtype=f32))
        # Infinite bounds (unbounded action spaces) stay infinite: min/max with inf are exact.
        self.register_buffer("low", torch.as_tensor(np.asarray(low, np.float64), dtype=f32))
        self.register_buffer("high", torch.as_tensor(np.asarray(high, np.float64), dtype=f32))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        x = obs
        if self.use_env_norm:
            x = self.env_norm(x)
        if self.use_norm:
            x = self.norm(x)
        return self.head(x, x)

    def head(self, x: torch.Tensor, xb: torch.Tensor) -> torch.Tensor:
        """Features x [B, F] (actor) and xb [B, F] (residual base: its own encoder's, else x) -> actions [B, A]."""
        u = self.actor(x)
        if self.tanh_squash:
            a = torch.tanh(u)
        else:
            a = u.clamp(-1.0, 1.0)
        if self.use_base:
            a = (torch.tanh(self.base(xb)) + self.beta * a).clamp(-1.0, 1.0)
        a = a.clamp(-1.0, 1.0)
        y = self.center + self.scale * a
        return torch.minimum(torch.maximum(y, self.low), self.high)


class DictInput(nn.Module):
    """Dict observations ``{key: [B, *shape]}`` -> concatenated flat leaves [B, O] -> the core policy."""

    def __init__(self, core: PolicyCore, keys: list[str]) -> None:
        super().__init__()
        self.core = core
        self.keys = list(keys)

    def forward(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        parts: list[torch.Tensor] = []
        for k in self.keys:
            v = obs[k]
            parts.append(v.reshape(v.shape[0], -1).to(torch.float32))
        return self.core(torch.cat(parts, 1))


class PositionalDictInput(nn.Module):
    """The ONNX form of :class:`DictInput`: one graph input per key, in ``keys`` order."""

    def __init__(self, core: PolicyCore, keys: list[str]) -> None:
        super().__init__()
        self.core = core
        self.keys = list(keys)

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        return self.core(torch.cat([x.reshape(x.shape[0], -1).to(torch.float32) for x in xs], 1))


class CameraEncoder(nn.Module):
    """Cameras as the env gives them (``[B, H, W, C]`` uint8, one tensor per camera) -> features ``[B, n_cams * F]``.

    Per camera: ``conv_i(to_chw(x) )`` with ``to_chw`` = permute to [B, C, H, W] and / 255 (uint8), the
    learner's :class:`~roborl.learners.encoders.PixelEncoder` step by step; a shared encoder is the same
    module in every slot (one set of weights).
    """

    def __init__(self, convs: list[nn.Module], hwc: list[bool], uint8: list[bool]) -> None:
        super().__init__()
        self.convs = nn.ModuleList(convs)
        self.hwc = list(hwc)
        self.uint8 = list(uint8)

    def forward(self, ims: list[torch.Tensor]) -> torch.Tensor:
        feats: list[torch.Tensor] = []
        for i, conv in enumerate(self.convs):
            x = ims[i]
            if self.hwc[i]:
                x = x.permute(0, 3, 1, 2)
            x = x.to(torch.float32)
            if self.uint8[i]:
                x = x / 255.0
            feats.append(conv(x))
        return torch.cat(feats, 1)


class PixelPolicyCore(nn.Module):
    """Image policy: leaves ``[x_0, ..., x_n]`` (cameras [B, H, W, C] uint8, vectors [B, *shape]) -> actions [B, A].

    features = cat(encoder(cameras), normalise(cat(vector leaves)))       (SAC.features, online encoder)
    base features = cat(base_encoder(cameras), normalise(vectors))        (residual base with its own encoder)
    actions = PolicyCore.head(features, base features)
    ``img_idx`` / ``vec_idx``: the positions of the camera and vector leaves in the input list (the learner's
    sorted key orders).
    """

    def __init__(self, encoder: CameraEncoder, base_encoder: CameraEncoder | None, norm: Normalize | None,
                 core: PolicyCore, img_idx: list[int], vec_idx: list[int]) -> None:
        super().__init__()
        self.encoder = encoder
        self.use_base_encoder = base_encoder is not None
        self.base_encoder = base_encoder if base_encoder is not None else encoder
        self.use_vec = norm is not None and len(vec_idx) > 0
        self.norm = norm if norm is not None else nn.Sequential()
        self.core = core
        self.img_idx = list(img_idx)
        self.vec_idx = list(vec_idx)

    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
        ims = [xs[i] for i in self.img_idx]
        f = self.encoder(ims)
        fb = self.base_encoder(ims) if self.use_base_encoder else f
        if self.use_vec:
            vec = torch.cat([xs[i].reshape(xs[i].shape[0], -1).to(torch.float32) for i in self.vec_idx], 1)
            v = self.norm(vec)
            f = torch.cat([f, v], 1)
            fb = torch.cat([fb, v], 1)
        return self.core.head(f, fb)


class PixelDictInput(nn.Module):
    """TorchScript form: ``{leaf: [B, *shape]}`` (``pixels.front``, ``proprio``) -> :class:`PixelPolicyCore`."""

    def __init__(self, core: PixelPolicyCore, keys: list[str]) -> None:
        super().__init__()
        self.core = core
        self.keys = list(keys)

    def forward(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.core([obs[k] for k in self.keys])


class PixelPositionalInput(nn.Module):
    """ONNX form: one graph input per leaf, in ``keys`` order."""

    def __init__(self, core: PixelPolicyCore, keys: list[str]) -> None:
        super().__init__()
        self.core = core
        self.keys = list(keys)

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        return self.core(list(xs))


def _frozen(m: nn.Module) -> nn.Module:
    m = copy.deepcopy(m).float().eval()
    for prm in m.parameters():
        prm.requires_grad_(False)
    return m


def _camera_encoder(enc: Any, spec: dict[str, tuple[int, ...]], dtypes: dict[str, str]) -> CameraEncoder:
    """A :class:`CameraEncoder` with the weights of a learner's PixelEncoder (cameras in its key order)."""
    from roborl.learners.encoders import _mod

    shared = _frozen(enc.convs["shared"]) if enc.shared else None
    convs = [shared if shared is not None else _frozen(enc.convs[_mod(k)]) for k in enc.keys]
    hwc = [bool(tuple(spec[k])[-1] in (1, 3) and tuple(spec[k])[0] not in (1, 3)) for k in enc.keys]
    return CameraEncoder(convs, hwc, [dtypes.get(k, "uint8") == "uint8" for k in enc.keys])


def pixel_policy_core(learner: Any, core: PolicyCore, keys: list[str], dtypes: dict[str, str]) -> PixelPolicyCore:
    """The :class:`PixelPolicyCore` of a pixel SAC learner; inputs are the leaves ``keys`` (store names)."""
    spec = {k: tuple(int(x) for x in v) for k, v in learner.obs_spec.items()}
    enc = _camera_encoder(learner.encoder, spec, dtypes)
    base_enc = _camera_encoder(learner.base_encoder, spec, dtypes) if learner.base_encoder is not None else None
    norm = Normalize(learner.normalizer.mean, learner.normalizer.std, 10.0) if learner.vec_keys else None
    img_idx = [keys.index(k) for k in learner.encoder.keys]
    vec_idx = [keys.index(k) for k in learner.vec_keys]
    return PixelPolicyCore(enc, base_enc, norm, core, img_idx, vec_idx).eval()


@dataclass
class ExportedPolicy:
    """A policy ready to write: ``core`` (flat obs [B, O] -> actions [B, A]) plus what travels with it.

    ``obs_keys``: None for Box observations, else the Dict keys (in order) and ``obs_shapes``
    their per-sample shapes. ``meta``: JSON-able metadata written into the file.
    """

    core: PolicyCore
    obs_dim: int
    act_dim: int
    obs_keys: list[str] | None
    obs_shapes: dict[str, list[int]]
    meta: dict[str, Any]
    pixel_core: PixelPolicyCore | None = None
    obs_dtypes: dict[str, str] | None = None

    def module(self, onnx: bool = False) -> nn.Module:
        """The module to save: the core for Box obs, a dict (TorchScript) or positional (ONNX) wrapper otherwise."""
        if self.pixel_core is not None:
            assert self.obs_keys is not None
            return (PixelPositionalInput if onnx else PixelDictInput)(self.pixel_core, self.obs_keys)
        if self.obs_keys is None:
            return self.core
        return (PositionalDictInput if onnx else DictInput)(self.core, self.obs_keys)

    def example_inputs(self, batch: int = 2) -> tuple[torch.Tensor, ...]:
        if self.obs_keys is None:
            return (torch.zeros(batch, self.obs_dim),)
        dt = self.obs_dtypes or {}
        return tuple(torch.zeros(batch, *self.obs_shapes[k], dtype=getattr(torch, dt.get(k, "float32")))
                     for k in self.obs_keys)


def config_hash(cfg: Any) -> str:
    """sha256 (first 16 hex digits) of the run config as canonical JSON: identifies the training setup."""
    return hashlib.sha256(json.dumps(cfg, sort_keys=True, default=str).encode()).hexdigest()[:16]


def load_checkpoint_policy(path: str | Path, allow_imports: tuple[str, ...] = ()
                           ) -> tuple[Any, Any, dict[str, Any], dict[str, Any], int, Path]:
    """``(policy, env_cfg, state, meta, step, ckpt_dir)``: the eval policy rebuilt from a checkpoint alone (CPU),
    through the same loader as ``roborl eval`` (so a checkpoint's ``env.imports`` are refused unless allowed)."""
    from roborl.checkpoint import load_checkpoint
    from roborl.eval.load import load_for_eval

    policy, env_cfg, meta, step, ckpt, _ = load_for_eval(str(path), "cpu", allow_imports=allow_imports)
    state, _, _ = load_checkpoint(ckpt)
    return policy, env_cfg, state, meta, step, ckpt


def _learner_parts(policy: Any, algo: str) -> tuple[Normalize | None, nn.Sequential, str, nn.Sequential | None, float, int, int]:
    """(normaliser, actor mean network, squash, residual base, beta, obs_dim, act_dim) read from an eval policy."""
    if algo == "sac":
        learner = policy.learner
        norm = Normalize(learner.normalizer.mean, learner.normalizer.std, 10.0)
        act_dim = int(learner.act_dim)
        trunk = _copy_mlp(learner.actor.trunk)
        head = learner.actor.head
        # TanhGaussianActor: mu = head(relu(trunk(x)))[:, :A]; only the mean rows of the head are needed.
        mu_head = _linear(head.weight.detach()[:act_dim].t(), head.bias.detach()[:act_dim])
        actor = nn.Sequential(*trunk, nn.ReLU(), mu_head)
        base = None
        if learner.base is not None:
            base = _copy_mlp(learner.base.net)  # DeterministicPolicy: tanh(net(x)); tanh applied in PolicyCore
        return norm, actor, "tanh", base, float(learner.beta), int(learner.obs_dim), act_dim
    if algo in ("td3", "ddpg"):
        # TD3Policy / DDPG: a = tanh(mu(normalise(s))) (DeterministicPolicy); tanh applied in PolicyCore.
        learner = policy.learner
        norm = Normalize(learner.normalizer.mean, learner.normalizer.std, 10.0)
        actor = _copy_mlp(learner.actor.net)
        return norm, actor, "tanh", None, 0.0, int(learner.obs_dim), int(learner.act_dim)
    if algo == "ppo":
        model = policy.model
        enc = model.actor_encoder
        keys = tuple(getattr(enc, "keys", ()))
        if type(enc).__name__ != "ConcatEncoder" or not keys:
            raise UsageError(f"export: PPO actor encoder {type(enc).__name__} is not exportable yet (vector groups only)")
        obs_dim = int(enc.out_dim)
        norm = None
        if model.norm_obs:
            # RunningMeanStd per group: ((x - mean) / sqrt(var + 1e-8)).clamp(+-clip), groups concatenated in the
            # encoder's order (the order the exported input is concatenated in).
            rms = [model.obs_rms[k] for k in keys]
            mean = torch.cat([r.mean for r in rms]).to(torch.float32)
            std = torch.cat([(r.var + 1e-8).sqrt() for r in rms]).to(torch.float32)
            norm = Normalize(mean, std, float(rms[0].clip))
        # The plain actor MLP (Linear/activation modules); a copy, so the export never aliases the
        # fused training buffer the learner's parameters may be views into.
        actor = copy.deepcopy(model.actor).float()
        for prm in actor.parameters():
            prm.requires_grad_(False)
        return norm, actor, model.squash, None, 0.0, obs_dim, int(model.act_dim)
    raise UsageError(f"export: no exporter for algo {algo!r} (sac, ppo, td3, ddpg)")


def env_action_box(env: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, Any]:
    """(mid, half, low, high, env action space) of the RescaleAction in ``env``'s stack (identity map without one)."""
    from gymnasium import spaces

    from roborl.envs.wrappers import RescaleAction, find_wrapper

    w = find_wrapper(env, RescaleAction)
    if w is not None:
        inner = w.env.action_space
        low = np.asarray(inner.low, np.float64)
        high = np.asarray(inner.high, np.float64)
        return (high + low) / 2.0, (high - low) / 2.0, low, high, inner
    space = env.action_space
    if not isinstance(space, spaces.Box):
        raise UsageError(f"export: action space {space} is not a Box")
    shape = space.shape
    return (np.zeros(shape), np.ones(shape), np.asarray(space.low, np.float64), np.asarray(space.high, np.float64), space)


def build_eval_env(env_cfg: Any) -> Any:
    """The env exactly as ``roborl eval`` builds it (eval=True: DR off, normaliser frozen), one-line errors."""
    from roborl.envs.config import build_env
    from roborl.errors import ConfigError

    try:
        return build_env(env_cfg, seed=0, eval=True)
    except (UsageError, ConfigError):
        raise
    except Exception as e:
        msg = str(e).splitlines()[0] if str(e) else ""
        raise UsageError(f"env {env_cfg.id!r}: cannot be built to read its spaces ({type(e).__name__}: {msg[:200]})") from None


def load_exported(path: str | Path, allow_imports: tuple[str, ...] = ()) -> ExportedPolicy:
    """Build the export module of a checkpoint (or a run's latest one). Builds the env once for its spaces and rate."""
    from roborl.envs.wrappers import NormalizeObservation, find_wrapper
    from roborl.eval.episodes import env_control_dt
    from roborl.eval.load import checkpoint_obs_normalizer
    from roborl.store.schema import space_to_json

    policy, env_cfg, state, meta, step, ckpt = load_checkpoint_policy(path, allow_imports)
    algo = str(meta.get("algo") or meta["config"].get("train", {}).get("algo"))
    norm, actor, squash, base, beta, obs_dim, act_dim = _learner_parts(policy, algo)
    env = build_eval_env(env_cfg)
    try:
        obs_space = env.observation_space
        env_norm: Normalize | None = None
        raw_obs_space = obs_space
        nw = find_wrapper(env, NormalizeObservation)
        stats = checkpoint_obs_normalizer(state)
        if nw is not None:
            if stats is None:
                raise UsageError(f"checkpoint {ckpt}: env.normalize_obs is on but the checkpoint has no observation statistics")
            if "" not in stats:
                raise UsageError(f"export: env.normalize_obs with Dict observations ({sorted(stats)}) is not supported yet")
            s = stats[""]
            var = np.asarray(s["var"], np.float64)
            env_norm = Normalize(torch.as_tensor(np.asarray(s["mean"], np.float64)),
                                 torch.as_tensor(np.sqrt(var + nw.epsilon)),
                                 float("inf") if nw.clip is None else nw.clip)
            raw_obs_space = nw.env.observation_space
        mid, half, low, high, act_space = env_action_box(env)
        dt = env_control_dt(env)
    finally:
        env.close()

    from gymnasium import spaces

    learner = getattr(policy, "learner", None)
    pixel = algo == "sac" and getattr(learner, "encoder", None) is not None
    dtypes: dict[str, str] = {}
    pixel_core: PixelPolicyCore | None = None
    if pixel:
        # Image policies take the env's leaves by their store names (pixels.front, proprio), cameras as uint8.
        leaves = _space_leaves(raw_obs_space)
        spec = {k: [int(x) for x in v] for k, v in learner.obs_spec.items()}  # type: ignore[union-attr]
        have = {k: list(v.shape) for k, v in leaves.items()}
        if have != spec:
            raise UsageError(f"checkpoint {ckpt}: the policy takes observations {spec} but env {env_cfg.id!r} gives "
                             f"{have} (observation_space)")
        keys = list(leaves)
        obs_keys = keys
        shapes = {k: have[k] for k in keys}
        dtypes = {k: np.dtype(leaves[k].dtype).name for k in keys}
        for k in keys:
            if dtypes[k] not in ("uint8", "float32", "float64"):
                raise UsageError(f"export: observation leaf {k!r} has dtype {dtypes[k]} (uint8 cameras, float vectors)")
            if dtypes[k] == "float64":
                dtypes[k] = "float32"  # the exported file takes float32 vectors
    elif isinstance(raw_obs_space, spaces.Dict):
        keys = list(raw_obs_space.spaces)
        shapes = {k: [int(x) for x in raw_obs_space.spaces[k].shape] for k in keys}
        flat = sum(int(np.prod(s)) for s in shapes.values())
        obs_keys = keys
    else:
        keys, obs_keys = ["obs"], None
        shapes = {"obs": [int(x) for x in raw_obs_space.shape]}
        flat = int(np.prod(raw_obs_space.shape))
    if not pixel and flat != obs_dim:
        raise UsageError(f"checkpoint {ckpt}: the policy takes {obs_dim} observation values but env "
                         f"{env_cfg.id!r} gives {flat} (observation_space)")
    if int(np.prod(act_space.shape)) != act_dim:
        raise UsageError(f"checkpoint {ckpt}: the policy outputs {act_dim} actions but env {env_cfg.id!r} "
                         f"takes {tuple(act_space.shape)} (action_space)")
    if pixel:
        core = PolicyCore(None, None, actor, squash, base, beta, mid, half, low, high).eval()
        pixel_core = pixel_policy_core(learner, core, keys, dtypes)
        for p in pixel_core.parameters():
            p.requires_grad_(False)
    else:
        core = PolicyCore(env_norm, norm, actor, squash, base, beta, mid, half, low, high).eval()
    for p in core.parameters():
        p.requires_grad_(False)
    cfg = meta.get("config", {})
    enc_stages = (["image_encoder"] + (["base_image_encoder"] if learner.base_encoder is not None else [])) \
        if pixel else []  # type: ignore[union-attr]
    stages = (["env_obs_normalizer"] if env_norm is not None else []) + enc_stages \
        + (["obs_normalizer"] if norm is not None else []) \
        + ["actor_mean"] + (["residual_base"] if base is not None else []) + ["action_rescale", "action_box_clip"]
    export_meta = {
        "format": "roborl.exported_policy",
        "version": EXPORT_META_VERSION,
        "algo": algo,
        "env_id": env_cfg.id,
        "checkpoint_step": int(step),
        "config_hash": config_hash(cfg),
        "control_dt": dt,
        "control_rate_hz": (1.0 / dt) if dt else None,
        "observation_space": space_to_json(raw_obs_space),
        "action_space": space_to_json(act_space),
        "inputs": {k: [None, *shapes[k]] for k in keys},
        "input_dtypes": {k: dtypes.get(k, "float32") for k in keys},
        "outputs": {"action": [None, act_dim]},
        "dtype": "float32",
        "stages": stages,
        "excluded": ["workspace_projection (robot server)", "safety_layer"],
        "obs_stack": {"obs_history": int(env_cfg.obs_history), "obs_last_actions": int(env_cfg.obs_last_actions)},
        "residual_beta": beta if base is not None else None,
        "image_inputs": pixel,
    }
    return ExportedPolicy(core, obs_dim, act_dim, obs_keys, shapes, export_meta, pixel_core, dtypes or None)


def _space_leaves(space: Any, prefix: str = "") -> dict[str, Any]:
    """{dotted leaf name: Box} of a (nested) Dict space, in its key order (the store's and SAC's leaf names)."""
    from gymnasium import spaces

    out: dict[str, Any] = {}
    for k, s in space.spaces.items():
        name = prefix + str(k)
        if isinstance(s, spaces.Dict):
            out.update(_space_leaves(s, name + "."))
        else:
            out[name] = s
    return out

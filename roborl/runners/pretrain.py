"""Pretrain an image encoder on the demo frames of replay stores (the library side of ``roborl encoder pretrain``).

The data loop lives here (it reads stores); the model and its update are
:class:`roborl.learners.encoders.BCPretrainer` (tensors only). The result is a safetensors file
written by :func:`roborl.learners.encoders.save_encoder`, with how it was trained in its metadata,
which ``sac.encoder.weights`` loads as a frozen encoder.
"""
from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from roborl.errors import UsageError
from roborl.learners.config import EncoderPretrainConfig

__all__ = ["DemoFrames", "LOSS_NAME", "camera_keys", "resolve_cameras", "load_demo_frames", "pretrain_encoder"]

# EncoderPretrainConfig.objective -> the name of its loss in logs and metadata (train_<name>, val_<name>).
LOSS_NAME: dict[str, str] = {"bc": "bc_loss", "autoencoder": "recon_loss", "contrastive": "nce_loss"}


@dataclass
class DemoFrames:
    """Demo steps of one or more stores. ``N`` = steps.

    obs:     leaf (store key, e.g. ``pixels.front`` / ``proprio``) -> [N, *shape] (images uint8 HxWx3)
    action:  float32 [N, A] (the executed action: what the sampler gives SAC's BC)
    episode: int64 [N] episode number, unique over all stores (for a held-out split)
    spec:    leaf -> shape, the encoder's input spec (chosen cameras + every vector leaf)
    sources: one dict per store: path, uuid, episodes, steps
    """

    obs: dict[str, np.ndarray]
    action: np.ndarray
    episode: np.ndarray
    spec: dict[str, tuple[int, ...]]
    sources: list[dict[str, Any]] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.action.shape[0])


def _is_image(dtype: Any, shape: Sequence[int]) -> bool:
    return np.dtype(dtype) == np.uint8 and len(shape) == 3 and int(shape[-1]) in (1, 3)


def camera_keys(store: Any) -> list[str]:
    """Observation keys of a store whose field is a uint8 HxWxC image (``obs.<key>``), sorted."""
    keys = [k for k in store.obs_keys if k]
    return sorted(k for k in keys if _is_image(store.dtype[f"obs.{k}"].base, store.dtype[f"obs.{k}"].shape))


def resolve_cameras(store: Any, cameras: Sequence[str], where: str) -> list[str]:
    """Camera names (``front``) or keys (``pixels.front``) -> the store's keys; empty = all.
    A name the store does not have is a one-line UsageError naming it and the cameras there are."""
    have = camera_keys(store)
    if not have:
        fields = ", ".join(f"obs.{k}" if k else "obs" for k in store.obs_keys)
        raise UsageError(f"{where}: store {store.path} has no camera observations (uint8 HxWx3 fields; it has {fields})")
    if not cameras:
        return have
    out = []
    for c in cameras:
        hit = [k for k in have if k == c or k.split(".")[-1] == c]
        if len(hit) != 1:
            raise UsageError(f"{where}: camera {c!r} is not in store {store.path} (its cameras: "
                             f"{', '.join(k.split('.')[-1] for k in have)})")
        out.append(hit[0])
    return sorted(set(out))


def load_demo_frames(stores: Sequence[Any], cameras: Sequence[str] = (), where: str = "encoder pretrain") -> DemoFrames:
    """Every live demo step of each store (a path, or an open :class:`~roborl.store.ReplayStore`).

    Reads the chosen cameras and every vector observation leaf, and the executed actions. Stores
    must agree on shapes. A missing store, no cameras, an unknown camera or an empty demo partition
    is a one-line UsageError.
    """
    from roborl.store import ReplayStore
    from roborl.store.store import StoreError

    if not stores:
        raise UsageError(f"{where}: give at least one --store")
    obs: dict[str, list[np.ndarray]] = {}
    acts: list[np.ndarray] = []
    eps: list[np.ndarray] = []
    sources: list[dict[str, Any]] = []
    spec: dict[str, tuple[int, ...]] | None = None
    n_eps = 0
    for s in stores:
        own = not isinstance(s, ReplayStore)
        if own:
            if not Path(s).is_dir():
                raise UsageError(f"{where}: store not found: {s}")
            try:
                st = ReplayStore.open(s, mode="r")
            except StoreError as e:
                raise UsageError(f"{where}: {e}") from None
        else:
            st = s
        try:
            cams = resolve_cameras(st, cameras, where)
            vec = sorted(k for k in st.obs_keys if k and k not in camera_keys(st))
            keys = cams + vec
            sp = {k: tuple(int(d) for d in st.dtype[f"obs.{k}"].shape) for k in keys}
            sp["__action__"] = tuple(int(d) for d in st.dtype["executed_action"].shape)
            if spec is None:
                spec = sp
            elif sp != spec:
                raise UsageError(f"{where}: store {st.path} has observations {sp}, another store has {spec}")
            ep = st.episodes("demo")
            if len(ep) == 0:
                raise UsageError(f"{where}: store {st.path} has no demo episodes (record some with roborl collect "
                                 f"or roborl teleop)")
            start, stop = int(ep[0, 0]), int(ep[-1, 0] + ep[-1, 1])
            cols = st.read_rows("demo", start, stop, [f"obs.{k}" for k in keys] + ["executed_action"])
            for k in keys:
                obs.setdefault(k, []).append(cols[f"obs.{k}"])
            acts.append(cols["executed_action"].astype(np.float32))
            lens = ep[:, 1].astype(np.int64)
            eps.append(np.repeat(np.arange(n_eps, n_eps + len(ep)), lens))
            n_eps += len(ep)
            sources.append({"path": str(st.path), "uuid": st.meta.get("uuid"),
                            "episodes": int(len(ep)), "steps": int(stop - start)})
        finally:
            if own:
                st.close()
    assert spec is not None
    spec.pop("__action__")
    return DemoFrames({k: np.concatenate(v) for k, v in obs.items()}, np.concatenate(acts), np.concatenate(eps),
                      spec, sources)


def pretrain_encoder(stores: Sequence[Any], out: str | Path, cfg: EncoderPretrainConfig | None = None, *,
                     device: str = "cpu", init: str | Path | None = None,
                     log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Fit the pretrainer of ``cfg.objective`` (:data:`~roborl.learners.encoders.PRETRAINERS`: BC, spatial
    autoencoder, or episode-contrastive, whose batches are two frames of each of several episodes) on the
    stores' demo steps and write its encoder to ``out`` (safetensors; written to a temporary name, then
    renamed). ``init``: start from an encoder file (its input shapes and layout must match). Returns the
    metadata written."""
    import torch

    from roborl.learners import encoders as E

    cfg = cfg if cfg is not None else EncoderPretrainConfig()
    if cfg.objective == "autoencoder" and cfg.arch != "keypoints":
        raise UsageError("objective: autoencoder reconstructs through the keypoint bottleneck; set arch=keypoints")
    if cfg.arch == "keypoints" and cfg.feature_dim % 2:
        raise UsageError(f"feature_dim: a keypoint encoder has 2 features (x, y) per keypoint, so an even number; "
                         f"got {cfg.feature_dim}")
    out = Path(out)
    if out.is_dir():
        raise UsageError(f"--out: {out} is a directory; give a file name (e.g. {out / 'encoder.safetensors'})")
    data = load_demo_frames(stores, cfg.cameras)
    n = len(data)
    rng = np.random.default_rng(cfg.seed)
    n_eps = int(data.episode.max()) + 1
    if cfg.val_episodes >= n_eps:
        raise UsageError(f"val_episodes: {cfg.val_episodes} would hold out every one of the {n_eps} demo episodes")
    if cfg.eval_every and not cfg.val_episodes:
        raise UsageError("eval_every: early stopping needs held-out episodes (val_episodes > 0)")
    held = rng.choice(n_eps, cfg.val_episodes, replace=False) if cfg.val_episodes else np.zeros(0, np.int64)
    is_val = np.isin(data.episode, held)
    tr_idx, va_idx = np.flatnonzero(~is_val), np.flatnonzero(is_val)
    torch.manual_seed(cfg.seed)
    act_dim = int(data.action.shape[1])
    model = _pretrainer(data.spec, act_dim, cfg).to(device)
    if init is not None:
        E.load_encoder_state(init, model.encoder, what="--init")
    # uint8 frames stay uint8 on the device; the encoder converts per batch.
    obs_t = {k: torch.from_numpy(np.ascontiguousarray(v)).to(device) for k, v in data.obs.items()}
    act_t = torch.from_numpy(data.action).to(device)
    tr_t = torch.from_numpy(tr_idx).to(device)
    model.normalizer.fit(model.vector({k: v.index_select(0, tr_t) for k, v in obs_t.items()}))
    if getattr(model, "fg_weight", 0.0) > 0:
        sub = tr_t[torch.randperm(len(tr_t), generator=torch.Generator().manual_seed(cfg.seed))[:2000].to(device)]
        model.set_background({k: v.index_select(0, sub) for k, v in obs_t.items()})

    def batch(idx: torch.Tensor) -> dict[str, torch.Tensor]:
        return {k: v.index_select(0, idx) for k, v in obs_t.items()}

    pairs = bool(getattr(model, "pairs", False))
    # Episodes are contiguous runs of rows: first row and length of each (for the contrastive pairs).
    ep_start = np.searchsorted(data.episode, np.arange(n_eps))
    ep_len = np.bincount(data.episode, minlength=n_eps)
    if pairs:
        tr_eps = np.setdiff1d(np.flatnonzero(ep_len >= 2), held)
        if len(tr_eps) < 2:
            raise UsageError(f"objective: contrastive needs >= 2 training episodes of >= 2 steps; the stores give "
                             f"{len(tr_eps)}")
        tr_eps_t = torch.from_numpy(tr_eps)
        start_t, len_t = torch.from_numpy(ep_start), torch.from_numpy(ep_len)

    def partner(idx: np.ndarray) -> np.ndarray:
        """For each row: the row half an episode later (cyclic) in its episode: a fixed pairing for held-out losses."""
        e = data.episode[idx]
        return ep_start[e] + (idx - ep_start[e] + ep_len[e] // 2) % ep_len[e]

    @torch.no_grad()
    def eval_loss(idx: np.ndarray) -> float | None:
        if len(idx) == 0:
            return None
        model.eval()
        tot = 0.0
        for i in range(0, len(idx), 256):
            j = torch.from_numpy(idx[i: i + 256]).to(device)
            if pairs:
                k = torch.from_numpy(partner(idx[i: i + 256])).to(device)
                ep = torch.from_numpy(data.episode[idx[i: i + 256]]).to(device)
                tot += float(model.loss(batch(j), batch(k), ep)) * len(j)
            else:
                tot += float(model.loss(batch(j), act_t.index_select(0, j))) * len(j)
        model.train()
        return tot / len(idx)

    t0 = time.time()
    g = torch.Generator(device="cpu").manual_seed(cfg.seed)
    running, count = 0.0, 0
    every = max(1, cfg.steps // 10)
    name = LOSS_NAME[cfg.objective]
    best: tuple[float, int, dict[str, Any]] | None = None  # (held-out loss, step, model state)
    curve: list[list[float]] = []
    for step in range(1, cfg.steps + 1):
        if pairs:
            # batch_size distinct episodes (as many as there are, if fewer), two distinct times of each.
            ne = len(tr_eps_t)
            pick = (torch.randperm(ne, generator=g)[: cfg.batch_size] if ne >= cfg.batch_size
                    else torch.randint(0, ne, (cfg.batch_size,), generator=g))
            e = tr_eps_t[pick]
            ln = len_t[e]
            ta = (torch.rand(len(e), generator=g) * ln).long()
            tp = (ta + 1 + (torch.rand(len(e), generator=g) * (ln - 1)).long()) % ln  # != ta
            ja, jp = (start_t[e] + ta).to(device), (start_t[e] + tp).to(device)
            running += float(model.update(batch(ja), batch(jp), e.to(device)))
        else:
            j = tr_t[torch.randint(0, len(tr_idx), (cfg.batch_size,), generator=g).to(device)]
            running += float(model.update(batch(j), act_t.index_select(0, j)))
        count += 1
        if log is not None and (step % every == 0 or step == cfg.steps):
            log(f"encoder pretrain: step {step}/{cfg.steps}  {name} {running / count:.4f}  {time.time() - t0:.0f} s")
            running, count = 0.0, 0
        if cfg.eval_every and (step % cfg.eval_every == 0 or step == cfg.steps):
            v = eval_loss(va_idx)
            assert v is not None
            curve.append([step, round(v, 6)])
            if best is None or v < best[0]:
                # The whole model (encoder and head/decoder), so the reported held-out loss is the best one's.
                best = (v, step, {k: t.detach().clone() for k, t in model.state_dict().items()})
            if log is not None:
                log(f"encoder pretrain: step {step}  held-out {name} {v:.4f}  (best {best[0]:.4f} at {best[1]})")
    if best is not None:  # early stopping: the encoder of the lowest held-out loss
        model.load_state_dict(best[2])
    seconds = time.time() - t0
    train_loss = eval_loss(tr_idx[rng.permutation(len(tr_idx))[:2048]])
    val_loss = eval_loss(va_idx)
    objective = {"bc": "bc_random_shift", "autoencoder": "spatial_autoencoder",
                 "contrastive": "episode_contrastive"}[cfg.objective]
    meta = {"format": "roborl.encoder", "objective": objective,
            "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(cfg).items()},
            "stores": data.sources, "demo_steps": int(n), "train_steps": int(len(tr_idx)),
            "val_steps": int(len(va_idx)), f"train_{name}": train_loss, f"val_{name}": val_loss,
            "best_step": best[1] if best is not None else cfg.steps, "val_curve": curve,
            "seconds": round(seconds, 1), "init": str(init) if init is not None else None}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    E.save_encoder(tmp, model.encoder.cpu(), extra=meta)
    os.replace(tmp, out)
    meta["input_shapes"] = model.encoder.input_shapes()
    meta["out"] = str(out)
    return meta


def _pretrainer(spec: dict[str, tuple[int, ...]], act_dim: int, cfg: EncoderPretrainConfig) -> Any:
    """The pretrainer of ``cfg.objective`` (:data:`roborl.learners.encoders.PRETRAINERS`) over ``spec``."""
    from roborl.learners.encoders import PRETRAINERS, BCPretrainer, EpisodeContrastivePretrainer, SpatialAEPretrainer

    cls = PRETRAINERS[cfg.objective]
    if cls is EpisodeContrastivePretrainer:
        return EpisodeContrastivePretrainer(spec, act_dim, shared=cfg.shared, channels=cfg.channels,
                                            layers=cfg.layers, feature_dim=cfg.feature_dim,
                                            downsample=cfg.downsample, pad=cfg.pad, hidden=tuple(cfg.hidden),
                                            lr=cfg.lr, arch=cfg.arch, temperature=cfg.temperature)
    if cls is SpatialAEPretrainer:
        return SpatialAEPretrainer(spec, act_dim, shared=cfg.shared, channels=cfg.channels, layers=cfg.layers,
                                   feature_dim=cfg.feature_dim, downsample=cfg.downsample, pad=cfg.pad,
                                   hidden=tuple(cfg.hidden), lr=cfg.lr, recon_size=cfg.recon_size,
                                   fg_weight=cfg.fg_weight)
    assert cls is BCPretrainer
    return BCPretrainer(spec, act_dim, shared=cfg.shared, channels=cfg.channels, layers=cfg.layers,
                        feature_dim=cfg.feature_dim, downsample=cfg.downsample, pad=cfg.pad, hidden=tuple(cfg.hidden),
                        lr=cfg.lr, arch=cfg.arch)

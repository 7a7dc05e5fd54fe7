"""Replay stores <-> Minari datasets (the ``minari`` package; arrow data format, nothing downloaded).

Export writes ``OUT/data/`` (Minari's layout: ``metadata.json`` + arrow episodes) with the
store's exact observation and action spaces; ``minari.load_dataset(ID)`` loads it when OUT is
``$MINARI_DATASETS_PATH/ID`` (the dataset id defaults to ``roborl/<OUT's name>``). Minari keeps
``T + 1`` observations per episode: the store's obs rows plus the last ``next_obs``; per-step
``is_success``, ``intervention`` ([T + 1, 1]) and ``executed_action`` travel in ``infos``
(index t + 1 is step t, index 0 the reset).

Import reads a dataset directory (``ID-dir``, or its ``data/``) or a local dataset id and
appends every episode: obs ``o[:-1]``, next_obs ``o[1:]``, actions, rewards, terminations,
truncations, and ``infos["success"]`` / ``infos["is_success"]`` when present. An episode
that ends with neither flag is kept as interrupted (it bootstraps, like a truncation).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from roborl.errors import UsageError
from roborl.interop.common import EpisodeWriter, iter_store_episodes, leaf_specs, require

__all__ = ["export_store", "import_dataset"]


def _leaf(obs: Any, key: str) -> Any:
    v = obs
    if key:
        for part in key.split("."):
            v = v[part]
    return v


def _nest(leaves: dict[str, np.ndarray]) -> Any:
    if list(leaves) == [""]:
        return leaves[""]
    out: dict[str, Any] = {}
    for k, v in leaves.items():
        d = out
        parts = k.split(".")
        for p in parts[:-1]:
            d = d.setdefault(p, {})
        d[parts[-1]] = v
    return out


def export_store(store_path: Path, out: Path, *, dataset_id: str | None = None, **_: Any) -> dict[str, Any]:
    """Write every live episode of the store (demo, then online) as a Minari dataset in ``out``."""
    minari = require("minari")
    require("pyarrow")
    import gymnasium as gym
    from minari.data_collector.episode_buffer import EpisodeBuffer
    from minari.dataset.minari_storage import MinariStorage

    from roborl.store import ReplayStore

    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise UsageError(f"--out {out}: exists and is not empty")
    ds_id = dataset_id or f"roborl/{out.name}"
    store = ReplayStore.open(store_path, mode="r")
    try:
        spec = None
        try:
            spec = gym.spec(store.env_id)
        except Exception:  # an id gymnasium does not know (robot://, dmc:): the dataset has no env spec
            spec = None
        out.mkdir(parents=True, exist_ok=True)
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "env_spec is not serializable": then it is simply left out
            storage = MinariStorage.new(out / "data", observation_space=store.observation_space,
                                        action_space=store.action_space, env_spec=spec, data_format="arrow",
                                        jpeg_encoding=False)
        storage.update_metadata({"dataset_id": ds_id, "minari_version": minari.__version__, "author": {"roborl"},
                                 "algorithm_name": "roborl store export",
                                 "description": f"Exported from the roborl replay store {Path(store_path).name} "
                                                f"({store.env_id})"})
        keys = list(store.obs_keys)
        buffers = []
        steps = 0
        for i, ep in enumerate(iter_store_episodes(store)):
            T = ep.length
            obs = {k: np.concatenate([ep.rows[("obs." + k) if k else "obs"],
                                      ep.rows[("next_obs." + k) if k else "next_obs"][-1:]]) for k in keys}

            def info(x: np.ndarray) -> np.ndarray:
                # Per-step scalars go in as [T + 1, 1]: minari's arrow reader cannot decode 1-d info arrays.
                x = x.reshape(len(x), -1)
                return np.concatenate([np.zeros_like(x[:1]), x])

            buffers.append(EpisodeBuffer(
                id=i, observations=_nest(obs), actions=ep.rows["action"],
                rewards=ep.rows["reward"].astype(np.float64), terminations=ep.rows["terminated"],
                truncations=ep.rows["truncated"],
                infos={"is_success": info(ep.rows["is_success"]), "intervention": info(ep.rows["intervention"]),
                       "executed_action": info(ep.rows["executed_action"])}))
            steps += T
            if len(buffers) >= 64:
                storage.update_episodes(buffers)
                buffers = []
        if buffers:
            storage.update_episodes(buffers)
        return {"out": str(out), "format": "minari", "dataset_id": ds_id, "episodes": storage.total_episodes,
                "steps": steps}
    finally:
        store.close()


def _open_dataset(src: str) -> Any:
    minari = require("minari")
    from minari.dataset.minari_dataset import MinariDataset

    p = Path(src)
    for cand in (p / "data", p):
        if (cand / "metadata.json").is_file():
            try:
                return MinariDataset(cand)
            except Exception as e:
                raise UsageError(f"{cand}: not a readable Minari dataset ({type(e).__name__}: {str(e)[:150]})") from None
    if p.exists():
        raise UsageError(f"{src}: not a Minari dataset directory (no data/metadata.json)")
    try:
        return minari.load_dataset(src, download=False)
    except FileNotFoundError:
        raise UsageError(f"Minari dataset {src!r} not found locally (a directory, or an id under "
                         "$MINARI_DATASETS_PATH; nothing is downloaded)") from None


def import_dataset(src: str, store_path: Path, partition: str = "demo", *, env: str | None = None,
                   **_: Any) -> dict[str, Any]:
    """Append every episode of a local Minari dataset to the store (created when missing)."""
    require("pyarrow")
    ds = _open_dataset(src)
    obs_space, act_space = ds.observation_space, ds.action_space
    meta = ds.storage.metadata
    spec = getattr(ds, "env_spec", None)
    env_id = env or (spec.id if spec is not None else f"minari:{meta.get('dataset_id', Path(src).name)}")
    obs_keys = [k[len("obs"):].lstrip(".") for k in leaf_specs(obs_space, "obs")]
    writer = EpisodeWriter(Path(store_path), env_id, obs_space, act_space, partition, {},
                           source=f"Minari dataset {src}")
    try:
        for ep in ds.iterate_episodes():
            T = len(ep.rewards)
            if T == 0:
                continue
            cols: dict[str, np.ndarray] = {}
            for k in obs_keys:
                o = np.asarray(_leaf(ep.observations, k))
                if len(o) != T + 1:
                    raise UsageError(f"Minari dataset {src}: episode {ep.id} has {len(o)} observations for {T} steps "
                                     f"(expected {T + 1}; observation {k or 'obs'!r})")
                cols[("obs." + k) if k else "obs"] = o[:-1]
                cols[("next_obs." + k) if k else "next_obs"] = o[1:]
            cols["action"] = np.asarray(ep.actions)
            cols["reward"] = np.asarray(ep.rewards, dtype=np.float32)
            cols["terminated"] = np.asarray(ep.terminations, dtype=bool)
            cols["truncated"] = np.asarray(ep.truncations, dtype=bool)
            infos = ep.infos or {}
            for key in ("is_success", "success"):
                if key in infos and len(infos[key]) == T + 1:
                    cols["is_success"] = np.asarray(infos[key], dtype=bool).reshape(T + 1)[1:]
                    break
            if "intervention" in infos and len(infos["intervention"]) == T + 1:
                cols["intervention"] = np.asarray(infos["intervention"], dtype=bool).reshape(T + 1)[1:]
            if "executed_action" in infos and len(infos["executed_action"]) == T + 1:
                cols["executed_action"] = np.asarray(infos["executed_action"])[1:]
            writer.write(cols)
        return {"store": str(store_path), "format": "minari", "partition": partition, "episodes": writer.episodes,
                "steps": writer.steps, "env_id": writer.store.env_id}
    finally:
        writer.close()

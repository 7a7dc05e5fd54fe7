"""Samplers over a RAM mirror of a :class:`ReplayStore` (never per batch from zarr).

The mirror holds, per partition, the rows of ended live episodes in a slot ring
(``slot = row % alloc``) of torch tensors on the sampler's device (on a GPU learner the
whole mirror lives in GPU memory, so a batch is one ``index_select`` per field), plus
host numpy arrays for rewards and episode boundaries. Each frame is held once, in its
stored dtype (images stay uint8): the mirror keeps ``obs`` per row and the final next
observation per episode (a second ring, ``episode % ep_alloc``), and rebuilds::

    next_obs[t] = obs[t + 1]             if t + 1 < episode_end(t)
                = final[episode(t)]      otherwise

(``Sampler.next_obs``; the same formula as ``ReplayStore.read_rows``, checked equal in the tests).
``ram_budget_gb`` bounds the mirror: a store whose mirror could outgrow it is refused at
construction, in one line naming ``store.ram_budget_gb``. ``sample`` pulls new episodes and
evictions from the store first (an O(1) check when nothing changed).

Samplers (``SamplerConfig.kind``):

* ``uniform``: uniform over live rows of each partition.
* ``per``: proportional prioritized replay (Schaul et al. 2015) with a sum tree,
  stratified sampling, ``p = (|td| + eps)^alpha``, importance weights
  ``(N P(i))^-beta`` normalised by the batch maximum, beta annealed from beta0 to 1.
  New rows get the maximum priority seen so far.
* ``lap``: Loss-Adjusted Prioritization (Fujimoto, Meger & Precup 2020):
  ``p = max(|td|, lap_min_priority)^alpha``, no importance weights (all ones).

Each batch has an exact demo/online split (RLPD, Ball et al. 2023): ``round(B * f)``
demo rows, the rest online; if one partition is empty the other fills the batch.
``success_boost`` multiplies the sampling priority of rows of successful episodes.

Hindsight relabelling (``her_fraction`` > 0, Andrychowicz et al. 2017, "future" strategy):
that share of each partition's rows gets a goal achieved at a uniformly drawn step t' in
[t, episode_end) of the same episode; obs and next_obs carry the new goal and every reward of
the n-step sum is recomputed from the stored next observations by the env's
:class:`~roborl.envs.goals.GoalRelabeler` (on the sampler's device). Terminal flags are kept:
relabelling is only valid for envs whose episodes do not end on success.

n-step targets are built at sample time from episode boundaries::

    k        = min(n, episode_end - t)
    reward   = sum_{j<k} gamma^j r[t+j]
    next_obs = next_obs[t+k-1]          (rebuilt as above)
    discount = 0 if step t+k-1 terminated the episode, else gamma^k
               (a truncation or an interrupted episode still bootstraps)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from roborl.batch import Batch  # noqa: F401  (the sampler's output type; re-exported)

from roborl.errors import UsageError
from roborl.store.config import SamplerConfig
from roborl.store.schema import StoreError
from roborl.store.index import EP_SUCCESS, EP_TERMINATED, PART_ID, PARTITIONS
from roborl.store.store import ReplayStore
from roborl.store.sumtree import SumTree

if TYPE_CHECKING:
    from roborl.envs.goals import GoalRelabeler


@dataclass
class TraceBatch(Batch):
    """A :class:`Batch` with the per-step trace Retrace needs (``store.sampler.nstep_correction: retrace``).

    ``trace`` holds, for step k = 0..n-1 after each sampled row t (row t + k of its episode):
    ``reward`` [B, n] r_{t+k} (0 where not valid); ``valid`` [B, n] step k lies inside the episode;
    ``terminal`` [B, n] s_{t+k+1} is terminal; ``next_obs`` [B, n, O] s_{t+k+1} (the episode's final
    observation at its end); ``action`` [B, n, A] the executed a_{t+k}; ``behaviour_logp`` [B, n]
    the stored log mu(a_{t+k}|s_{t+k}) (NaN where not recorded); ``lambda`` (0-d) retrace_lambda. ``reward``/``discount`` of the batch
    stay the uncorrected n-step return, for learners that do not read the trace.
    """

    trace: dict[str, torch.Tensor] | None = None


class _Mirror:
    """RAM copy of one partition's live ended episodes, in a ring of ``alloc`` slots."""

    def __init__(self, name: str, fields: dict[str, tuple[np.dtype, tuple[int, ...]]], device: str,
                 use_tree: bool) -> None:
        self.name = name
        self.pid = PART_ID[name]
        self.fields = fields
        self.device = device
        self.use_tree = use_tree
        self.alloc = 0
        self.head = 0     # first live row
        self.end = 0      # one past the last mirrored row
        self.synced_eps = 0
        self.data: dict[str, torch.Tensor] = {}
        self.reward = np.zeros(0, np.float32)
        self.ep_end = np.zeros(0, np.int64)   # logical end row of each row's episode
        self.term = np.zeros(0, bool)         # the row's episode ended with a terminal
        self.success = np.zeros(0, bool)      # the row's episode succeeded
        self.tree: SumTree | None = None
        self.ep_id = np.zeros(0, np.int64)   # absolute episode number of each row
        # Final next observation of each live episode, slot = episode % ep_alloc.
        self.finals: dict[str, torch.Tensor] = {}
        self.final_fields: dict[str, tuple[np.dtype, tuple[int, ...]]] = {}
        self.ep_alloc = 0
        self.ep_head = 0  # first live episode
        self.ep_stop = 0  # one past the last mirrored episode

    def resize_eps(self, new_alloc: int) -> None:
        """Re-layout the live episodes' final observations into ``new_alloc`` slots (>= live episodes)."""
        eps = np.arange(self.ep_head, self.ep_stop, dtype=np.int64)
        assert new_alloc >= len(eps)
        old_t = torch.from_numpy(eps % self.ep_alloc if self.ep_alloc else eps).to(self.device)
        new_t = torch.from_numpy(eps % new_alloc).to(self.device)
        for n, (dt, shape) in self.final_fields.items():
            t = torch.zeros((new_alloc, *shape), dtype=_torch_dtype(dt), device=self.device)
            if self.ep_alloc and len(eps):
                t[new_t] = self.finals[n][old_t]
            self.finals[n] = t
        self.ep_alloc = new_alloc

    @property
    def live(self) -> int:
        return self.end - self.head

    def slots(self, rows: np.ndarray) -> np.ndarray:
        return rows % self.alloc

    def resize(self, new_alloc: int) -> None:
        """Re-layout live rows into a ring of ``new_alloc`` slots (>= live)."""
        assert new_alloc >= self.live
        rows = np.arange(self.head, self.end, dtype=np.int64)
        old_s = rows % self.alloc if self.alloc else rows
        new_s = rows % new_alloc
        old_s_t, new_s_t = torch.from_numpy(old_s).to(self.device), torch.from_numpy(new_s).to(self.device)
        for n, (dt, shape) in self.fields.items():
            t = torch.zeros((new_alloc, *shape), dtype=_torch_dtype(dt), device=self.device)
            if self.alloc and len(rows):
                t[new_s_t] = self.data[n][old_s_t]
            self.data[n] = t
        for attr in ("reward", "ep_end", "term", "success", "ep_id"):
            old = getattr(self, attr)
            new = np.zeros(new_alloc, old.dtype)
            if self.alloc and len(rows):
                new[new_s] = old[old_s]
            setattr(self, attr, new)
        if self.use_tree:
            leaves = np.zeros(new_alloc, np.float64)
            if self.alloc and len(rows) and self.tree is not None:
                leaves[new_s] = self.tree.leaves()[old_s]
            self.tree = SumTree(new_alloc)
            self.tree.set_all(leaves)
        self.alloc = new_alloc


def _torch_dtype(dt: np.dtype) -> torch.dtype:
    return torch.from_numpy(np.zeros(1, dtype=dt)).dtype


class Sampler:
    """Draws :class:`Batch` es from a store's RAM mirror; stays in sync with appends through ``store``.

    ``device`` holds the mirror ("cuda" puts it in GPU memory). All randomness comes from
    one numpy Generator seeded by ``seed``; :meth:`state_dict` makes resume exact.
    """

    def __init__(self, store: ReplayStore, cfg: SamplerConfig | None = None, *, device: str = "cpu",
                 seed: int = 0, relabeler: GoalRelabeler | None = None, ram_budget_gb: float | None = None) -> None:
        """``relabeler`` (the env's ``goal_relabeler()``) is required when ``cfg.her_fraction`` > 0.
        ``ram_budget_gb`` (``store.ram_budget_gb``; None = unchecked) bounds the mirror's memory."""
        self.store = store
        self.cfg = cfg if cfg is not None else SamplerConfig()
        if self.cfg.her_fraction > 0:
            if relabeler is None:
                raise UsageError(f"store.sampler.her_fraction: store {store.path} ({store.env_id}) has no goal "
                                 "relabeler (HER needs a goal-conditioned env: roborl/Reach, Push or PickPlace with "
                                 "state observations)")
            if store.obs_keys != [""]:
                raise UsageError("store.sampler.her_fraction: HER needs flat Box observations")
        self.relabeler = relabeler if self.cfg.her_fraction > 0 else None
        self.device = str(device)
        self.rng = np.random.default_rng(seed)
        self.max_priority = 1.0
        self.prioritized = self.cfg.kind in ("per", "lap")
        self.use_tree = self.prioritized or self.cfg.success_boost != 1.0
        self.obs_fields = store.obs_fields
        self.next_obs_fields = store.next_obs_fields
        self.obs_keys = store.obs_keys
        dt = store.dtype
        names = self.obs_fields + ["executed_action"]
        self.retrace = self.cfg.nstep_correction == "retrace"
        if self.retrace:
            if store.obs_keys != [""]:
                raise UsageError("store.sampler.nstep_correction: retrace needs flat Box observations")
            if self.cfg.her_fraction > 0:
                raise UsageError("store.sampler.nstep_correction: retrace cannot be combined with her_fraction > 0 "
                                 "(relabelled rewards have no behaviour trace)")
            names.append("log_prob")  # the behaviour policy's log mu(a|s), NaN where not recorded
        fields = {n: (dt[n].base, dt[n].shape) for n in names}
        self.mirrors = {p: _Mirror(p, fields, self.device, self.use_tree) for p in PARTITIONS}
        for m in self.mirrors.values():
            m.final_fields = {n: fields[n] for n in self.obs_fields}
        self.capacity_hint = {"demo": 0, "online": store.online_capacity}
        self.ram_budget_gb = ram_budget_gb
        self._check_budget()
        self.sync()

    # Host bytes per mirrored row besides the fields: reward f32, ep_end/ep_id i64, term/success
    # bools, and the sum tree's two f64 nodes per leaf when priorities are on.
    _HOST_ROW_BYTES = 4 + 8 + 8 + 1 + 1

    def row_bytes(self) -> int:
        """Bytes the mirror holds per row (fields in their stored dtypes + host bookkeeping)."""
        m = self.mirrors["demo"]
        b = sum(int(np.prod(shape, dtype=np.int64)) * np.dtype(dt).itemsize for dt, shape in m.fields.values())
        return b + self._HOST_ROW_BYTES + (16 if self.use_tree else 0)

    def mirror_bytes_bound(self) -> int:
        """Most bytes the mirror can hold: the demo rows plus the online capacity, one longest
        episode over it (eviction keeps the newest episode), and one final frame per episode."""
        frame = sum(int(np.prod(shape, dtype=np.int64)) * np.dtype(dt).itemsize
                    for dt, shape in self.mirrors["demo"].final_fields.values())
        rows, eps = 0, 0
        for name in PARTITIONS:
            idx = self.store.index(name)  # type: ignore[arg-type]
            lengths = idx.episode_lengths()
            live = int(lengths.sum())
            longest = int(lengths.max()) if len(lengths) else 0
            if name == "online":
                live = max(live, self.capacity_hint["online"] + longest)
            rows += live
            # The finals ring holds one frame per live episode; episodes are assumed no shorter than
            # the shortest stored one (10 steps while there is none).
            shortest = int(lengths.min()) if len(lengths) else 10
            eps += max(len(lengths), live // max(1, shortest))
        return rows * self.row_bytes() + min(eps, rows) * frame

    def _check_budget(self) -> None:
        """Refuse (one line naming ``store.ram_budget_gb``) a mirror that could outgrow the budget:
        checked once here, so it never swaps or runs out of memory later."""
        if self.ram_budget_gb is None:
            return
        need = self.mirror_bytes_bound()
        budget = float(self.ram_budget_gb) * 1e9
        if need > budget:
            per = self.row_bytes()
            fit = max(0, int((budget - self.store.num_steps("demo") * per) // (2 * per)))
            raise UsageError(f"store.ram_budget_gb: the {self.device} replay mirror of {self.store.path} needs up to "
                             f"{need / 1e9:.2f} GB ({per} bytes per row, demo rows + store.online_capacity="
                             f"{self.capacity_hint['online']}) but store.ram_budget_gb is {self.ram_budget_gb}; "
                             f"raise it or lower store.online_capacity (about {fit} rows fit)")

    # ------------------------------------------------------------------ sync

    def _priority_of_new(self, success: np.ndarray) -> np.ndarray:
        base = self.max_priority if self.prioritized else 1.0
        return np.where(success, base * self.cfg.success_boost, base)

    def sync(self) -> None:
        """Pull ended episodes and evictions from the store (cheap when nothing changed)."""
        for name, m in self.mirrors.items():
            idx = self.store.index(name)  # type: ignore[arg-type]
            head_ep, n_eps = idx.episode_counts()
            if idx.head_row > m.head:
                # Evictions: zero the priorities of mirrored rows now gone, so they are never drawn.
                a, b = m.head, min(idx.head_row, m.end)
                if m.tree is not None and m.alloc and b > a:
                    self._zero_rows(m, a, b)
                m.head = idx.head_row
                m.end = max(m.end, m.head)
            m.ep_head = max(m.ep_head, head_ep)
            m.ep_stop = max(m.ep_stop, m.ep_head)
            if n_eps <= m.synced_eps:
                continue
            first = max(m.synced_eps, head_ep)
            m.synced_eps = n_eps
            if first >= n_eps:
                continue
            eps = idx.episodes(first, n_eps)
            s0 = int(eps[0, 0])
            s1 = int(eps[-1, 0] + eps[-1, 1])
            if m.end < s0:
                m.end = s0  # rows in between were evicted before we saw them
            need = s1 - m.head
            if need > m.alloc:
                grow = max(need, 2 * m.alloc, 1024)
                if self.capacity_hint[name]:
                    grow = max(need, min(grow, self.capacity_hint[name] + int(eps[:, 1].max())))
                m.resize(grow)
            n_live = n_eps - m.ep_head
            if n_live > m.ep_alloc:
                m.resize_eps(max(n_live, 2 * m.ep_alloc, 64))
            self._load_rows(m, s0, s1, eps, first)
            m.end = s1
            m.ep_stop = n_eps

    def _zero_rows(self, m: _Mirror, a: int, b: int) -> None:
        rows = np.arange(a, b, dtype=np.int64)
        m.tree.update(m.slots(rows), 0.0)  # type: ignore[union-attr]

    def _load_rows(self, m: _Mirror, s0: int, s1: int, eps: np.ndarray, first_ep: int) -> None:
        """Mirror rows [s0, s1) = episodes ``eps`` (absolute numbers from ``first_ep``) and their finals."""
        # Read in pieces so a 1M-row reopen does not hold two full copies in memory.
        step = max(self.store.chunk_rows, 65536)
        lengths = eps[:, 1]
        ends = eps[:, 0] + lengths
        ep_id = np.repeat(np.arange(first_ep, first_ep + len(eps), dtype=np.int64), lengths)
        for e in range(first_ep, first_ep + len(eps), 4096):
            e1 = min(first_ep + len(eps), e + 4096)
            fin = self.store.read_finals(m.name, e, e1)  # type: ignore[arg-type]
            es = torch.from_numpy(np.arange(e, e1, dtype=np.int64) % m.ep_alloc).to(self.device)
            for n in m.final_fields:
                m.finals[n][es] = torch.from_numpy(np.ascontiguousarray(fin[n])).to(self.device)
        ep_end = np.repeat(ends, lengths)
        term = np.repeat((eps[:, 2] & EP_TERMINATED) > 0, lengths)
        succ = np.repeat((eps[:, 2] & EP_SUCCESS) > 0, lengths)
        names = list(m.fields) + ["reward"]
        for a in range(s0, s1, step):
            b = min(s1, a + step)
            cols = self.store.read_rows(m.name, a, b, names)  # type: ignore[arg-type]
            rows = np.arange(a, b, dtype=np.int64)
            sl = m.slots(rows)
            sl_t = torch.from_numpy(sl).to(self.device)
            for n in m.fields:
                m.data[n][sl_t] = torch.from_numpy(np.ascontiguousarray(cols[n])).to(self.device)
            m.reward[sl] = cols["reward"]
            m.ep_end[sl] = ep_end[a - s0: b - s0]
            m.term[sl] = term[a - s0: b - s0]
            m.success[sl] = succ[a - s0: b - s0]
            m.ep_id[sl] = ep_id[a - s0: b - s0]
            if m.tree is not None:
                m.tree.update(sl, self._priority_of_new(m.success[sl]))

    # ------------------------------------------------------------------ sampling

    def beta(self, step: int) -> float:
        c = self.cfg
        return c.beta0 + (1.0 - c.beta0) * min(1.0, max(0, step) / c.beta_anneal_steps)

    def demo_fraction(self, step: int) -> float:
        c = self.cfg
        if c.demo_fraction_final is None:
            return c.demo_fraction
        t = min(1.0, max(0, step) / c.demo_anneal_steps)
        return c.demo_fraction + (c.demo_fraction_final - c.demo_fraction) * t

    def _draw(self, m: _Mirror, k: int) -> tuple[np.ndarray, np.ndarray]:
        """k logical rows of partition ``m`` and their sampling probabilities (within the partition)."""
        if m.tree is None:
            rows = m.head + self.rng.integers(0, m.live, size=k)
            return rows, np.full(k, 1.0 / m.live)
        total = m.tree.total
        # Stratified: one draw per equal slice of the total priority mass (Schaul 2015).
        u = (np.arange(k) + self.rng.random(k)) * (total / k)
        u = np.minimum(u, np.nextafter(total, 0))
        sl = m.tree.find(u)
        base = m.head % m.alloc
        rows = m.head + (sl - base) % m.alloc
        return rows, m.tree.leaves()[sl] / total

    def sample(self, batch_size: int, *, gamma: float, n_step: int | None = None,
               demo_fraction: float | None = None, step: int = 0, relabel: bool = True) -> Batch:
        """Draw ``batch_size`` transitions (demo rows first). See :class:`Batch` for shapes.

        ``n_step`` defaults to cfg.n_step; ``demo_fraction`` overrides the (annealed)
        split (1.0 = demo only, for BC pretraining); ``step`` drives the annealing.
        ``relabel=False`` returns stored goals even with ``her_fraction`` > 0 (BC targets and
        normaliser fits must see the data as it was recorded).
        """
        self.sync()
        n = int(n_step if n_step is not None else self.cfg.n_step)
        if n < 1 or batch_size < 1:
            raise StoreError(f"sampler: batch_size and n_step must be >= 1, got {batch_size}, {n}")
        d, o = self.mirrors["demo"], self.mirrors["online"]
        if d.live == 0 and o.live == 0:
            raise StoreError(f"sampler: store {self.store.path} has no ended episodes to sample from")
        f = self.demo_fraction(step) if demo_fraction is None else float(demo_fraction)
        if not 0.0 <= f <= 1.0:
            raise StoreError(f"sampler: demo_fraction must be in [0, 1], got {f}")
        k_demo = int(round(batch_size * f))
        if d.live == 0:
            k_demo = 0
        elif o.live == 0:
            k_demo = batch_size
        counts = (("demo", k_demo), ("online", batch_size - k_demo))
        parts = []
        for name, k in counts:
            if k == 0:
                continue
            m = self.mirrors[name]
            rows, prob = self._draw(m, k)
            parts.append((m, rows, prob))
        return self._gather(parts, gamma, n, step, relabel)

    def _gather(self, parts: list, gamma: float, n: int, step: int, relabel: bool = True) -> Batch:
        dev = self.device
        obs: dict[str, list[torch.Tensor]] = {f: [] for f in self.obs_fields}
        nxt: dict[str, list[torch.Tensor]] = {f: [] for f in self.next_obs_fields}
        act, rew, disc, wts, idx, demo = [], [], [], [], [], []
        her: list[tuple[np.ndarray, torch.Tensor, np.ndarray]] = []
        for m, rows, prob in parts:
            sl = rows % m.alloc
            ends = m.ep_end[sl]
            if n == 1:
                k = np.ones(len(rows), np.int64)
                ret = m.reward[sl].astype(np.float32)
            else:
                offs = np.arange(n, dtype=np.int64)
                rr = rows[:, None] + offs[None, :]
                valid = rr < ends[:, None]
                k = valid.sum(1)
                r = np.where(valid, m.reward[rr % m.alloc], 0.0)
                ret = (r * (gamma ** offs)[None, :]).sum(1).astype(np.float32)
            last = rows + k - 1
            terminal = m.term[sl] & (last == ends - 1)
            dsc = np.where(terminal, 0.0, gamma ** k.astype(np.float64)).astype(np.float32)
            sl_t = torch.from_numpy(sl).to(dev)
            for f in self.obs_fields:
                obs[f].append(m.data[f].index_select(0, sl_t))
            for f, of in zip(self.next_obs_fields, self.obs_fields):
                nxt[f].append(self._next_obs(m, of, last, ends))
            if relabel and self.relabeler is not None:
                her.append(self._her_rows(m, rows, ends, k, n, offset=sum(len(x) for x in rew)))
            act.append(m.data["executed_action"].index_select(0, sl_t))
            rew.append(ret)
            disc.append(dsc)
            if self.cfg.kind == "per":
                wts.append((m.live * prob) ** (-self.beta(step)))
            else:
                wts.append(np.ones(len(rows)))
            idx.append(rows * 2 + m.pid)
            demo.append(np.full(len(rows), m.name == "demo"))
        w = np.concatenate(wts)
        if self.cfg.kind == "per":
            w = w / w.max()

        def cat(ts: list[torch.Tensor]) -> torch.Tensor:
            return ts[0] if len(ts) == 1 else torch.cat(ts)

        def obs_out(d: dict[str, list[torch.Tensor]], prefix: str) -> torch.Tensor | dict[str, torch.Tensor]:
            if self.obs_keys == [""]:
                return cat(d[prefix])
            return {k: cat(d[f"{prefix}.{k}"]) for k in self.obs_keys}

        def t(x: list[np.ndarray], dtype: torch.dtype) -> torch.Tensor:
            return torch.from_numpy(np.concatenate(x) if len(x) > 1 else x[0]).to(dtype=dtype, device=dev)

        obs_b, nxt_b, reward = obs_out(obs, "obs"), obs_out(nxt, "next_obs"), t(rew, torch.float32)
        if her:
            # Flat obs (checked at init). Rewrites the batch tensors in place: fresh copies, never the mirror.
            assert isinstance(obs_b, torch.Tensor) and isinstance(nxt_b, torch.Tensor)
            self._relabel(her, obs_b, nxt_b, reward, gamma, n)
        out = dict(obs=obs_b, action=cat(act), reward=reward, next_obs=nxt_b, discount=t(disc, torch.float32),
                   weight=t([w], torch.float32), index=t(idx, torch.int64), is_demo=t(demo, torch.bool))
        if self.retrace and n > 1 and not her:
            traces = [self._trace(m, rows, n) for m, rows, _ in parts]
            trace = {k: cat([tr[k] for tr in traces]) for k in traces[0]}
            trace["lambda"] = torch.tensor(self.cfg.retrace_lambda)
            return TraceBatch(**out, trace=trace)
        return Batch(**out)

    def _trace(self, m: _Mirror, rows: np.ndarray, n: int) -> dict[str, torch.Tensor]:
        """The n steps after each sampled row [K] (see :class:`TraceBatch`): step k is row t + k of the episode."""
        dev = self.device
        sl = rows % m.alloc
        ends = m.ep_end[sl]
        rr = rows[:, None] + np.arange(n, dtype=np.int64)[None, :]  # [K, n]
        valid = rr < ends[:, None]
        rc = np.minimum(rr, ends[:, None] - 1)  # past the episode end: repeat its last row (masked by valid)
        term = valid & (rr == ends[:, None] - 1) & m.term[sl][:, None]
        nxt = torch.stack([self._next_obs(m, "obs", rc[:, k], ends) for k in range(n)], 1)  # [K, n, O]
        flat = torch.from_numpy((rc % m.alloc).reshape(-1)).to(dev)
        act = m.data["executed_action"].index_select(0, flat).reshape(len(rows), n, -1)
        logp = m.data["log_prob"].index_select(0, flat).reshape(len(rows), n)
        def t(x: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
            return torch.from_numpy(x).to(dtype=dtype, device=dev)
        return {"reward": t(np.where(valid, m.reward[rc % m.alloc], 0.0), torch.float32), "valid": t(valid, torch.bool),
                "terminal": t(term, torch.bool), "next_obs": nxt, "action": act, "behaviour_logp": logp.float()}

    def _next_obs(self, m: _Mirror, field: str, rows: np.ndarray, ends: np.ndarray) -> torch.Tensor:
        """Next observation (obs field ``field``) of logical rows ``rows`` [K] whose episodes end at
        ``ends`` [K] -> [K, *shape]: obs[t + 1] inside the episode, the episode's final obs at its end."""
        nxt = (rows + 1) % m.alloc
        at_end = rows + 1 >= ends
        out = m.data[field].index_select(0, torch.from_numpy(nxt).to(self.device))
        if at_end.any():
            pos = np.flatnonzero(at_end)
            es = m.ep_id[rows[pos] % m.alloc] % m.ep_alloc
            out[torch.from_numpy(pos).to(self.device)] = m.finals[field].index_select(
                0, torch.from_numpy(es).to(self.device))
        return out

    def next_obs(self, partition: str, rows: np.ndarray) -> torch.Tensor | dict[str, torch.Tensor]:
        """The mirror's next observations of live logical ``rows`` [K] of ``partition`` (the fast
        path of ``_gather``; equal to ``store.read_rows(...)["next_obs"]``, the plain formula)."""
        m = self.mirrors[partition]
        rows = np.asarray(rows, np.int64)
        ends = m.ep_end[rows % m.alloc]
        if self.obs_keys == [""]:
            return self._next_obs(m, "obs", rows, ends)
        return {k: self._next_obs(m, f"obs.{k}", rows, ends) for k in self.obs_keys}

    def _her_rows(self, m: _Mirror, rows: np.ndarray, ends: np.ndarray, k: np.ndarray, n: int,
                  offset: int) -> tuple[np.ndarray, torch.Tensor, np.ndarray]:
        """Pick this partition's HER rows and gather what relabelling needs, in one index_select.

        Returns (batch positions [H] (``offset`` + position in this part), next observations [H, 1 + n, O]
        (column 0: step t' whose achieved goal becomes the goal, uniform in [t, episode end); column 1 + j:
        step t + j of the n-step sum, repeated past its end), n-step lengths k [H]).
        """
        pick = np.flatnonzero(self.rng.random(len(rows)) < self.cfg.her_fraction)
        r0, e0, kk = rows[pick], ends[pick], k[pick]
        future = r0 + (self.rng.random(len(pick)) * (e0 - r0)).astype(np.int64)
        steps = r0[:, None] + np.minimum(np.arange(n)[None, :], kk[:, None] - 1)
        at = np.concatenate([future[:, None], steps], axis=1).reshape(-1)  # [H * (1 + n)] logical rows
        src = self._next_obs(m, "obs", at, m.ep_end[at % m.alloc])
        return pick + offset, src.reshape(len(pick), 1 + n, -1), kk

    def _relabel(self, her: list[tuple[np.ndarray, torch.Tensor, np.ndarray]], obs: torch.Tensor,
                 nxt: torch.Tensor, ret: torch.Tensor, gamma: float, n: int) -> None:
        """HER 'future' relabelling, in place: obs/next_obs [B, O] get the new goals and the n-step
        returns ret [B] are recomputed from the env's reward of each step under the new goal."""
        rl = self.relabeler
        assert rl is not None
        pos = np.concatenate([h[0] for h in her])
        if len(pos) == 0:
            return
        src = torch.cat([h[1] for h in her]) if len(her) > 1 else her[0][1]  # [H, 1 + n, O]
        kk = np.concatenate([h[2] for h in her])
        goal = rl.achieved_goal(src[:, 0])  # [H, G]
        r = rl.reward(src[:, 1:], goal[:, None])  # [H, n]: step t + j under the new goal
        w = np.where(np.arange(n)[None, :] < kk[:, None], gamma ** np.arange(n)[None, :], 0.0)
        p_t = torch.from_numpy(pos).to(self.device)
        obs.index_copy_(0, p_t, rl.with_goal(obs.index_select(0, p_t), goal))
        nxt.index_copy_(0, p_t, rl.with_goal(nxt.index_select(0, p_t), goal))
        ret.index_copy_(0, p_t, (r * torch.from_numpy(w.astype(np.float32)).to(self.device)).sum(1))

    # ------------------------------------------------------------------ priorities

    def update_priorities(self, index: torch.Tensor, td_abs: torch.Tensor) -> None:
        """Set priorities of rows ``index`` [K] (from Batch.index) from |TD errors| ``td_abs`` [K].

        per: (|td| + eps)^alpha; lap: max(|td|, lap_min_priority)^alpha. Evicted rows
        are ignored. No-op for uniform sampling.
        """
        if not self.prioritized:
            return
        idx = index.detach().to("cpu").numpy().astype(np.int64)
        td = np.abs(td_abs.detach().to("cpu", torch.float64).numpy().reshape(-1))
        if idx.shape != td.shape:
            raise StoreError(f"sampler: update_priorities got {idx.shape[0]} indices but {td.shape[0]} td errors")
        c = self.cfg
        if c.kind == "per":
            pri = (td + c.eps) ** c.alpha
        else:
            pri = np.maximum(td, c.lap_min_priority) ** c.alpha
        if pri.size:
            self.max_priority = max(self.max_priority, float(pri.max()))
        pid = idx & 1
        rows = idx >> 1
        for m in self.mirrors.values():
            sel = (pid == m.pid) & (rows >= m.head) & (rows < m.end)
            if not sel.any():
                continue
            sl = rows[sel] % m.alloc
            p = pri[sel]
            if c.success_boost != 1.0:
                p = np.where(m.success[sl], p * c.success_boost, p)
            m.tree.update(sl, p)  # type: ignore[union-attr]

    # ------------------------------------------------------------------ state

    def state_dict(self) -> dict[str, Any]:
        """RNG state, priorities of live rows, counters: ``load_state_dict`` resumes exactly."""
        st: dict[str, Any] = {"kind": self.cfg.kind, "rng": _jsonable(self.rng.bit_generator.state),
                              "max_priority": float(self.max_priority), "parts": {}}
        for name, m in self.mirrors.items():
            d: dict[str, Any] = {"head": int(m.head), "end": int(m.end), "alloc": int(m.alloc)}
            if m.tree is not None:
                rows = np.arange(m.head, m.end, dtype=np.int64)
                d["priorities"] = m.tree.leaves()[rows % m.alloc].copy() if m.alloc else np.zeros(0)
            st["parts"][name] = d
        return st

    def load_state_dict(self, st: dict[str, Any]) -> None:
        if st.get("kind") != self.cfg.kind:
            raise StoreError(f"sampler: checkpoint has sampler kind {st.get('kind')!r}, config has {self.cfg.kind!r}")
        self.sync()
        self.rng.bit_generator.state = st["rng"]
        self.max_priority = float(st["max_priority"])
        for name, m in self.mirrors.items():
            d = st["parts"][name]
            alloc = int(d["alloc"])
            if alloc >= m.live and alloc != m.alloc and alloc > 0:
                m.resize(alloc)  # same ring layout as when saved -> same tree -> same draws
            if m.tree is None or "priorities" not in d:
                continue
            pr = np.asarray(d["priorities"], dtype=np.float64)
            a, b = max(int(d["head"]), m.head), min(int(d["end"]), m.end)
            if b > a:
                rows = np.arange(a, b, dtype=np.int64)
                m.tree.update(rows % m.alloc, pr[a - int(d["head"]): b - int(d["head"])])


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, np.integer):
        return int(x)
    return x

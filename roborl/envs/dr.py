"""Domain randomization for any MuJoCo-backed env (Tobin et al. 2017; Peng et al. 2018).

:class:`DomainRandomization` wraps an env whose ``unwrapped`` exposes ``model``
(``mujoco.MjModel``) and ``data`` (``mujoco.MjData``): gymnasium's MuJoCo envs, our arm
tasks, and dm_control tasks through :class:`roborl.envs.dmc.DMCEnv`.

Per episode (at ``reset``) it samples, each from its configured range:

* body mass scale (inertia scaled alike, i.e. uniform density change; subtree masses
  recomputed),
* geom sliding-friction scale (column 0 of ``geom_friction``, colliding geoms only),
* joint damping scale (dofs with nonzero damping),
* actuator gain scale (``actuator_gainprm[:, 0]``; for position/velocity servos the
  matching ``biasprm`` term too, so ``kp`` stays consistent),
* control latency (whole env steps, uniform integer in ``[lo, hi]``),
* observation-noise std and action-noise std (Gaussian, per step),

and per step, with ``push_prob``, starts an external push (a force of random direction
and sampled magnitude on one body via ``data.xfrc_applied``, for a sampled number of
steps). Sim-to-real recipes randomize exactly these (Tobin et al. 2017; Peng et al. 2018;
OpenAI et al. 2019); see the lecture notes in /work/shared/seeds (sim-to-real PPO).

Reproducible: two ``np.random.Generator`` (episode parameters, per-step noise/pushes)
are seeded from the wrapper's ``seed`` and re-seeded by ``reset(seed=...)``, so equal
seeds give equal parameter sequences whatever the actions. Nominal values are copied at
construction and written back bit-exactly when DR is off (``set_enabled(False)`` or an
``enabled: false`` config). ``params`` / ``info["dr_params"]`` give the sampled values as
a flat float32 vector ``(n_params,)`` named by ``param_names``, for a privileged critic.

Per-step noise: the noise generator fills blocks of 64 steps of standard
normals per noise term (action; flat float observation), scaled by the episode's std and
rounded to the data's dtype once per block and episode; a step adds one row in the data's
own dtype: ``commanded = clip(action + dtype(std * z), low, high)`` with ``action`` in the
action space's dtype, ``obs + dtype(std * z)``. (Before 2026-11-21 the noise came from one
interleaved stream and was added in float64, then rounded: same distribution, other values.)
Dict or image observations draw from a general stream and add in float64.
"""
from __future__ import annotations

import collections
from dataclasses import dataclass
from typing import Any, Literal

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from roborl.config import field, unit_interval
from roborl.envs.wrappers import clip_function
from roborl.errors import UsageError

__all__ = ["DRConfig", "DomainRandomization", "NOMINAL_FIELDS"]


def _scale_range(v: tuple[float, float]) -> str | None:
    lo, hi = v
    return None if 0.0 < lo <= hi else "must be (lo, hi) with 0 < lo <= hi"


def _nonneg_range(v: tuple[float, float]) -> str | None:
    lo, hi = v
    return None if 0 <= lo <= hi else "must be (lo, hi) with 0 <= lo <= hi"


def _pos_int_range(v: tuple[int, int]) -> str | None:
    lo, hi = v
    return None if 1 <= lo <= hi else "must be (lo, hi) with 1 <= lo <= hi"


@dataclass(frozen=True)
class DRConfig:
    """Per-episode domain randomization of MuJoCo physics. Scales multiply the nominal value."""

    enabled: bool = field(False, doc="Randomize physics each episode (training envs).")
    at_eval: bool = field(False, doc="Also randomize eval envs (build_env(eval=True)); off so eval measures the nominal task.")
    per_element: bool = field(True, doc="Sample each body/geom/dof/actuator independently (true) or one shared scale per term (false).")
    mass_scale: tuple[float, float] = field((0.8, 1.2), doc="Body mass scale range (inertia scales alike).", check=_scale_range)
    friction_scale: tuple[float, float] = field((0.8, 1.2), doc="Geom sliding-friction scale range (colliding geoms).", check=_scale_range)
    damping_scale: tuple[float, float] = field((0.8, 1.2), doc="Joint damping scale range (dofs with nonzero damping).", check=_scale_range)
    gain_scale: tuple[float, float] = field((0.9, 1.1), doc="Actuator gain scale range (gainprm[:,0]; servo biasprm alike).", check=_scale_range)
    scale_distribution: Literal["uniform", "log_uniform"] = field(
        "uniform", doc="How the four *_scale terms are drawn in [lo, hi]: uniform, or log_uniform (uniform in log(scale), "
                       "so x0.5 and x2 are equally likely; as Isaac Lab's log_uniform). Scales are multiplicative, so a "
                       "linear-uniform draw over e.g. [0.6, 1.8] puts 8 % of episodes below x0.7 and 25 % above x1.5.")
    latency_steps: tuple[int, int] = field((0, 0), doc="Control latency range in env steps; the action takes effect this many steps later.", check=_nonneg_range)
    obs_noise_std: tuple[float, float] = field((0.0, 0.0), doc="Range of the per-episode std of Gaussian noise added to float observations (obs units).", check=_nonneg_range)
    action_noise_std: tuple[float, float] = field((0.0, 0.0), doc="Range of the per-episode std of Gaussian noise added to actions (action units, then clipped to the action space).", check=_nonneg_range)
    push_prob: float = field(0.0, doc="Probability per env step of starting an external push (0 = no pushes).", check=unit_interval)
    push_force: tuple[float, float] = field((1.0, 5.0), doc="Push force magnitude range in newtons (random 3-D direction).", check=_nonneg_range)
    push_duration: tuple[int, int] = field((1, 5), doc="Push duration range in env steps.", check=_pos_int_range)
    push_bodies: tuple[str, ...] = field((), doc="Body names that may be pushed; empty = every body with mass except the world.")


#: The model fields DR writes; nominal copies of these are restored exactly.
NOMINAL_FIELDS = ("body_mass", "body_inertia", "body_subtreemass", "geom_friction", "dof_damping",
                  "actuator_gainprm", "actuator_biasprm")

_BIAS_AFFINE = 1  # mujoco.mjtBias.mjBIAS_AFFINE


class _NormalStream:
    """Standard normals drawn from ``rng`` in blocks: one Generator call per ~4096 numbers
    instead of one per step (the call overhead, not the sampling, dominates per-step noise).
    Deterministic for a given seed and sequence of ``take`` sizes."""

    def __init__(self, rng: np.random.Generator, block: int = 4096) -> None:
        self.rng, self.block = rng, block
        self.buf = np.empty(0)
        self.i = 0

    def take(self, n: int) -> np.ndarray:
        if self.i + n > self.buf.size:
            self.buf = self.rng.standard_normal(max(self.block, n))
            self.i = 0
        out = self.buf[self.i:self.i + n]
        self.i += n
        return out


class _NoiseRows:
    """Per-step Gaussian noise of one size ``d`` and dtype, already multiplied by this episode's std.

    Standard normals are drawn from ``rng`` in float64 blocks of ``rows`` x ``d`` (one
    Generator call per ``rows`` steps); the block is scaled, and rounded to ``dtype`` (the
    observation's or action's own dtype), once per episode (``set_std``) and per refill. A
    step then takes a row (an index, ~60 ns) and adds it in the data's dtype, instead of a
    Generator call (~1-2 us) or a slice, a multiply and a mixed float32/float64 add
    (see BENCHMARKS.md). Deterministic for a given seed and sequence of ``next`` /
    ``set_std`` calls.
    """

    def __init__(self, rng: np.random.Generator, d: int, dtype: Any = np.float64, rows: int = 64) -> None:
        self.rng, self.d, self.rows = rng, d, rows
        self.dtype = np.dtype(dtype)
        self.shape = (d,)
        self.raw = np.empty((0, d))  # [n, d] float64 standard normals
        self.scaled = self.raw.astype(self.dtype)  # [n, d] dtype(std * raw)
        self.std = 0.0
        self.n = 0  # rows in the current block (0 until the first draw)
        self.i = 0  # next row of `scaled`

    def set_std(self, std: float) -> None:
        self.std = float(std)
        self.scaled = (self.raw * self.std).astype(self.dtype, copy=False)

    def refill(self) -> None:
        self.raw = self.rng.standard_normal((self.rows, self.d))
        self.scaled = (self.raw * self.std).astype(self.dtype, copy=False)
        self.n, self.i = self.rows, 0

    def next(self) -> np.ndarray:
        """The next scaled row ``[d]`` (a view into the block)."""
        if self.i >= self.n:
            self.refill()
        self.i += 1
        return self.scaled[self.i - 1]


class DomainRandomization(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """Randomize a MuJoCo env's physics per episode (see the module docstring).

    Args:
        env: an env whose ``unwrapped`` has ``model``/``data``.
        cfg: ranges and switches; ``cfg.enabled`` is the initial on/off state.
        seed: seeds the parameter and noise generators (``reset(seed=s)`` re-seeds them).

    Attributes:
        params: float32 ``(n_params,)``, this episode's sampled values (nominal when off).
        param_names: ``list[str]`` of length ``n_params``, e.g. ``"mass_scale/torso"``,
            ``"latency_steps"``, ``"push_force/x"``.
    """

    _SALT = 0x0D0A1D  # decorrelates DR's streams from the env's own seeded rng

    def __init__(self, env: gym.Env, cfg: DRConfig | None = None, seed: int | None = None) -> None:
        gym.utils.RecordConstructorArgs.__init__(self, cfg=cfg, seed=seed)
        gym.Wrapper.__init__(self, env)
        import mujoco

        self.cfg = cfg if cfg is not None else DRConfig(enabled=True)
        u = env.unwrapped
        self._u = u  # fixed for the env's life; walking the wrapper chain on every access costs ~1 us
        model, data = getattr(u, "model", None), getattr(u, "data", None)
        if not isinstance(model, mujoco.MjModel) or not isinstance(data, mujoco.MjData):
            name = env.spec.id if env.spec is not None else type(u).__name__
            raise UsageError(f"env.dr: {name} does not expose unwrapped.model/data (mujoco.MjModel/MjData); "
                             f"domain randomization needs a MuJoCo-backed env")
        self._nominal = {f: getattr(model, f).copy() for f in NOMINAL_FIELDS}
        # ancestors[a, b] = 1 when body b is in the subtree of body a, so subtree masses are one
        # matrix-vector product (reset path; MuJoCo lists parents before children).
        parent = np.asarray(model.body_parentid)
        self._ancestors = np.eye(model.nbody)
        for b in range(model.nbody - 1, 0, -1):
            self._ancestors[parent[b]] += self._ancestors[b]
        self._enabled = bool(self.cfg.enabled)

        def name_of(obj: int, i: int, prefix: str) -> str:
            n = mujoco.mj_id2name(model, obj, i)
            return n if n else f"{prefix}{i}"

        c = self.cfg
        # Elements each term touches (ones where scaling changes nothing are left out).
        self._bodies = np.array([b for b in range(1, model.nbody) if self._nominal["body_mass"][b] > 0], dtype=int)
        collide = (np.asarray(model.geom_contype) | np.asarray(model.geom_conaffinity)) != 0
        self._geoms = np.flatnonzero(collide & (self._nominal["geom_friction"][:, 0] > 0))
        self._dofs = np.flatnonzero(self._nominal["dof_damping"] > 0)
        self._acts = np.flatnonzero(self._nominal["actuator_gainprm"][:, 0] != 0)
        gain0 = self._nominal["actuator_gainprm"][:, 0]
        affine = np.asarray(model.actuator_biastype) == _BIAS_AFFINE
        bias = self._nominal["actuator_biasprm"]
        self._bias_kp = np.flatnonzero(affine & (gain0 != 0) & (bias[:, 1] == -gain0))  # position servos
        self._bias_kv = np.flatnonzero(affine & (gain0 != 0) & (bias[:, 2] == -gain0) & (bias[:, 1] == 0))  # velocity servos

        # Scale terms: (name, (lo, hi), element ids); param names follow the same order.
        obj = mujoco.mjtObj
        self._scale_terms: list[tuple[str, tuple[float, float], np.ndarray]] = []
        names: list[str] = []
        for term, rng_, ids, otype, pre in (
                ("mass_scale", c.mass_scale, self._bodies, obj.mjOBJ_BODY, "body"),
                ("friction_scale", c.friction_scale, self._geoms, obj.mjOBJ_GEOM, "geom"),
                ("damping_scale", c.damping_scale, self._dofs, None, "dof"),
                ("gain_scale", c.gain_scale, self._acts, obj.mjOBJ_ACTUATOR, "actuator")):
            if tuple(rng_) == (1.0, 1.0) or len(ids) == 0:
                continue
            self._scale_terms.append((term, (float(rng_[0]), float(rng_[1])), ids))
            if c.per_element:
                if otype is None:  # dofs are named after their joint
                    names += [f"{term}/{name_of(obj.mjOBJ_JOINT, int(model.dof_jntid[i]), 'dof')}"
                              + (f"[{i}]" if np.sum(model.dof_jntid == model.dof_jntid[i]) > 1 else "") for i in ids]
                else:
                    names += [f"{term}/{name_of(otype, int(i), pre)}" for i in ids]
            else:
                names.append(term)
        self._plan_scales(model)
        self._has_latency = tuple(c.latency_steps) != (0, 0)
        self._has_obs_noise = tuple(c.obs_noise_std) != (0.0, 0.0)
        self._has_act_noise = tuple(c.action_noise_std) != (0.0, 0.0)
        std_ranges = [r for on, r in ((self._has_obs_noise, c.obs_noise_std), (self._has_act_noise, c.action_noise_std))
                      if on]
        self._std_lo = np.array([float(r[0]) for r in std_ranges])
        self._std_span = np.array([float(r[1]) for r in std_ranges]) - self._std_lo
        if c.push_bodies:
            missing = [b for b in c.push_bodies if mujoco.mj_name2id(model, obj.mjOBJ_BODY, b) < 0]
            if missing:
                raise UsageError(f"env.dr.push_bodies: no body named {missing[0]!r} in the model")
            self._push_ids = np.array([mujoco.mj_name2id(model, obj.mjOBJ_BODY, b) for b in c.push_bodies], dtype=int)
        else:
            self._push_ids = self._bodies
        self._has_push = c.push_prob > 0 and c.push_force[1] > 0 and len(self._push_ids) > 0
        self._push_on = self._has_push and self._enabled  # kept in sync by set_enabled
        names += ["latency_steps"] * self._has_latency + ["obs_noise_std"] * self._has_obs_noise
        names += ["action_noise_std"] * self._has_act_noise
        names += ["push_force/x", "push_force/y", "push_force/z"] if self._has_push else []
        self.param_names: list[str] = names

        space = env.action_space
        self._act_box = isinstance(space, spaces.Box)
        if (self._has_latency or self._has_act_noise) and not self._act_box:
            raise UsageError(f"env.dr: latency/action noise need a Box action space, got {space}")
        if self._act_box:
            self._act_low = np.asarray(space.low, dtype=np.float64)
            self._act_high = np.asarray(space.high, dtype=np.float64)
            # What the plant "receives" before the first command arrives: zero projected into
            # the action space (hold position for our delta-EE arm tasks).
            self._act_hold = np.clip(np.zeros(space.shape), self._act_low, self._act_high)
            self._act_dtype = space.dtype
            self._act_shape = space.shape
            self._act_size = int(np.prod(space.shape))
            self._act_flat = len(space.shape) == 1
            self._act_low_flat = self._act_low.reshape(-1)
            self._act_high_flat = self._act_high.reshape(-1)
            # Action noise is added in the action's own float dtype (a Box keeps its bounds in
            # its dtype, so they convert exactly), and clipped with one exact call where it can.
            fdt = space.dtype if np.issubdtype(space.dtype, np.floating) else np.dtype(np.float64)
            self._act_fdt = fdt
            self._act_cast = fdt != space.dtype
            self._act_lo_c = self._act_low_flat.astype(fdt)
            self._act_hi_c = self._act_high_flat.astype(fdt)
            self._act_clip = clip_function(self._act_lo_c, self._act_hi_c)
            self._f32_bounds = bool(space.dtype == np.float32
                                    and np.all(self._act_low.astype(np.float32) == self._act_low)
                                    and np.all(self._act_high.astype(np.float32) == self._act_high))
        # The inner env's entry for actions already inside its action space (RescaleAction has one).
        step_clipped = getattr(env, "step_clipped", None)
        self._step_clipped = step_clipped if callable(step_clipped) and self._act_box else None
        obs_space = env.observation_space
        # Flat Box observations take their noise from a row stream (see _NoiseRows); others
        # (dict, image) from the general stream.
        flat_float = (isinstance(obs_space, spaces.Box) and len(obs_space.shape) == 1
                      and np.issubdtype(obs_space.dtype, np.floating))
        self._obs_d = obs_space.shape[0] if flat_float else 0
        self._obs_dtype = obs_space.dtype if flat_float else None
        self._act_std = self._obs_std = 0.0

        self._seed(seed)
        # Episode state (nominal until the first reset).
        self._latency = 0
        self._obs_std = 0.0
        self._act_std = 0.0
        self._queue: collections.deque[np.ndarray] = collections.deque()
        self._push_body = -1
        self._push_left = 0
        self._push_vec = np.zeros(3)
        self._push_wait = 0  # steps until the next push starts (geometric; 0 = not drawn yet)
        self._set_nominal_values()

    # ----------------------------------------------------------------------- seeding/state
    def _seed(self, seed: int | None) -> None:
        ss = np.random.SeedSequence(None if seed is None else [int(seed), self._SALT])
        ep, st = ss.spawn(2)
        self._episode_rng = np.random.default_rng(ep)
        self._step_rng = np.random.default_rng(st)
        self._normals = _NormalStream(self._step_rng)  # general path: dict/image observation noise
        # Per-step noise rows, scaled by this episode's std (the reset that follows a reseed sets it).
        self._act_noise = _NoiseRows(self._step_rng, self._act_size, self._act_fdt) if self._act_box else None
        self._obs_noise = _NoiseRows(self._step_rng, self._obs_d, self._obs_dtype) if self._obs_d else None
        self._set_noise_std()

    @property
    def enabled(self) -> bool:
        return self._enabled

    def set_enabled(self, on: bool) -> None:
        """Switch DR on or off. Off restores every parameter to nominal right away."""
        self._enabled = bool(on)
        self._push_on = self._has_push and self._enabled
        if not on:
            self._restore_nominal()
            self._set_nominal_values()

    @property
    def params(self) -> np.ndarray:
        """float32 ``(n_params,)``: this episode's values, in ``param_names`` order (a copy)."""
        p = self._params.copy()
        if self._has_push and self._push_left > 0:
            p[-3:] = self._push_vec
        return p

    def _pack_params(self) -> None:
        """Cache the per-episode part of ``params`` (push force slots stay 0 here)."""
        p = np.zeros(len(self.param_names), dtype=np.float32)  # float64 values round to float32 as astype does
        i = self._scales.size
        p[:i] = self._scales
        for on, value in ((self._has_latency, self._latency), (self._has_obs_noise, self._obs_std),
                          (self._has_act_noise, self._act_std)):
            if on:
                p[i] = value
                i += 1
        self._params = p
        self._set_noise_std()

    def _set_noise_std(self) -> None:
        if self._act_noise is not None:
            self._act_noise.set_std(self._act_std)
        if self._obs_noise is not None:
            self._obs_noise.set_std(self._obs_std)

    def nominal(self) -> dict[str, np.ndarray]:
        """Copies of the nominal model arrays (``NOMINAL_FIELDS``)."""
        return {k: v.copy() for k, v in self._nominal.items()}

    def _set_nominal_values(self) -> None:
        self._set_scales(np.ones(self._scale_lo.size))
        self._latency, self._obs_std, self._act_std = 0, 0.0, 0.0
        self._pack_params()

    def _set_scales(self, scales: np.ndarray) -> None:
        """This episode's scales, float64 ``(n_scales,)`` in ``param_names`` order; ``_values``
        views them per term."""
        self._scales = scales
        self._values = {term: scales[sl] for term, sl in self._scale_slices.items()}

    # ----------------------------------------------------------------------- model edits
    def _restore_nominal(self, set_const: bool = True) -> None:
        m = self._u.model
        for f, v in self._nominal.items():
            getattr(m, f)[...] = v
        if set_const and getattr(self, "_const_dirty", False):
            self._set_const()
            self._const_dirty = False
        self._clear_push()

    def _set_const(self) -> None:
        """Recompute MuJoCo's derived constants (invweights, actuator_acc0, ...) after mass edits.

        Without it a contact-rich task integrates with stale inverse weights: on Push, a cube
        mass x0.5 or x1.5 blew up the simulation in 13-15 of 15 episodes (arm-task developer's
        measurement); with it every scale 0.5-3 was stable.
        """
        import mujoco

        mujoco.mj_setConst(self._u.model, self._u.data)

    def _clear_push(self) -> None:
        if self._push_body >= 0:
            self._u.data.xfrc_applied[self._push_body] = 0.0
        self._push_body, self._push_left = -1, 0

    def _sample(self) -> None:
        # Generator.uniform(lo, hi, size) computes lo + (hi - lo) * U per value, U the stream's
        # next double (what random() returns), so one random() call for all scale terms and
        # one for both noise stds give the values the per-term uniform() calls gave, in ~1/3
        # of the time (test_env_fastpaths.py replays the per-term calls).
        rng, c = self._episode_rng, self.cfg
        draw = self._scale_lo + self._scale_span * rng.random(self._scale_lo.size)
        self._set_scales(np.exp(draw) if self._log_scales else draw)
        self._latency = int(rng.integers(c.latency_steps[0], c.latency_steps[1] + 1)) if self._has_latency else 0
        self._obs_std = self._act_std = 0.0
        if self._std_lo.size:
            stds = (self._std_lo + self._std_span * rng.random(self._std_lo.size)).tolist()
            if self._has_obs_noise:
                self._obs_std = stds.pop(0)
            if self._has_act_noise:
                self._act_std = stds.pop(0)
        self._pack_params()

    def _plan_scales(self, model: Any) -> None:
        """Precompute how ``_sample`` draws the scales and ``_apply`` writes them.

        Sampling: per-value lower bounds and spans ``_scale_lo``/``_scale_span``
        ``(n_scales,)`` and each term's slice of them. Writing: every model column a term
        scales gets a segment of one vector of ones (``_full_ones``); ``_apply`` scatters the
        scales into a copy with one fancy assignment (``full[_dst] = scales[_src]``) and
        multiplies each nominal column by its segment into the model (``x * 1.0 == x``:
        elements no term scales stay bit-exactly nominal). About 10 numpy calls per reset
        instead of ~25 fancy-indexed reads and writes, with the same products (BENCHMARKS.md;
        test_env_fastpaths.py).
        """
        per = self.cfg.per_element
        lo, hi, dst, src = [], [], [], []
        self._scale_slices: dict[str, slice] = {}
        self._writes: list[tuple[str, int | None, slice]] = []  # (model field, column or None, segment)
        n = off = 0
        sizes = {"mass_scale": model.nbody, "friction_scale": model.ngeom, "damping_scale": model.nv,
                 "gain_scale": model.nu}
        for term, (t_lo, t_hi), ids in self._scale_terms:
            k = len(ids) if per else 1
            self._scale_slices[term] = slice(n, n + k)
            lo += [t_lo] * k
            hi += [t_hi] * k
            value_of = (n + np.arange(k)) if per else np.full(len(ids), n)  # scale index of each element
            columns = {"mass_scale": [("body_mass", None), ("body_inertia", None)],
                       "friction_scale": [("geom_friction", 0)], "damping_scale": [("dof_damping", None)],
                       "gain_scale": [("actuator_gainprm", 0)]}[term]
            seg = slice(off, off + sizes[term])
            dst.append(off + ids)
            src.append(value_of)
            for f, col in columns:
                self._writes.append((f, col, seg))
            off += sizes[term]
            if term == "gain_scale":  # servos: kp in biasprm[:, 1], kv in biasprm[:, 2], scaled alike
                for f_col, servo in ((1, self._bias_kp), (2, self._bias_kv)):
                    seg = slice(off, off + model.nu)
                    dst.append(off + servo)
                    src.append(value_of[np.searchsorted(ids, servo)])  # servos have nonzero gains: in ids
                    self._writes.append(("actuator_biasprm", f_col, seg))
                    off += model.nu
            n += k
        lo_a, hi_a = np.array(lo, dtype=np.float64), np.array(hi, dtype=np.float64)
        self._log_scales = self.cfg.scale_distribution == "log_uniform"
        if self._log_scales:  # draw log(scale) uniformly in [log lo, log hi]; lo > 0 is checked by _scale_range
            lo_a, hi_a = np.log(lo_a), np.log(hi_a)
        self._scale_lo, self._scale_span = lo_a, hi_a - lo_a  # hi - lo, as uniform() computes it
        self._full_ones = np.ones(off)
        self._dst = np.concatenate(dst).astype(np.intp) if dst else np.zeros(0, dtype=np.intp)
        self._src = np.concatenate(src).astype(np.intp) if src else np.zeros(0, dtype=np.intp)
        self._scales_mass = any(t == "mass_scale" for t, _, _ in self._scale_terms)
        rewritten = {f for f, col, _ in self._writes if col is None}  # whole fields
        if self._scales_mass:
            rewritten.add("body_subtreemass")
        self._restore_fields = [f for f in NOMINAL_FIELDS if f not in rewritten]

    def _apply(self) -> None:
        """Write nominal * sampled scales into the model (always from the nominal copies; see _plan_scales)."""
        m, nom = self._u.model, self._nominal
        # Back to nominal first, except the fields rewritten whole below; mj_setConst runs once,
        # below, on the final values (it reads only the model, so the constants of the nominal
        # model computed in between would be overwritten unused).
        for f in self._restore_fields:
            getattr(m, f)[...] = nom[f]
        self._clear_push()
        full = self._full_ones.copy()
        full[self._dst] = self._scales[self._src]
        for f, col, seg in self._writes:
            scale = full[seg]
            if col is not None:
                np.multiply(nom[f][:, col], scale, out=getattr(m, f)[:, col])
            elif f == "body_inertia":
                np.multiply(nom[f], scale[:, None], out=m.body_inertia)
            else:
                np.multiply(nom[f], scale, out=getattr(m, f))
        if self._scales_mass:
            np.matmul(self._ancestors, m.body_mass, out=m.body_subtreemass)
            self._const_dirty = True
        if getattr(self, "_const_dirty", False):
            self._set_const()

    # ----------------------------------------------------------------------- gym API
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict]:
        if seed is not None:
            self._seed(seed)
        if self._enabled:
            self._sample()
            self._apply()  # before the inner reset, so its forward pass sees the new model
        else:
            self._restore_nominal()
            self._set_nominal_values()
        self._clear_push()
        self._push_wait = 0
        self._queue.clear()
        if self._latency > 0:
            self._queue.extend(self._act_hold.copy() for _ in range(self._latency))
        obs, info = self.env.reset(seed=seed, options=options)
        obs = self._noisy_obs(obs)
        info["dr_params"] = self.params
        return obs, info

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict]:
        # Per-step hot path: the noise is a row of a pre-scaled block (see
        # _NoiseRows) added in the data's own dtype, so action noise is one add
        # and one clip-ufunc call and observation noise one add (was 5 and 3 numpy calls, each
        # ~0.2-0.5 us); the noisy action goes to RescaleAction.step_clipped, which skips a
        # second clip. Results equal commanded = clip(action + dtype(std * z), low, high) and
        # obs + dtype(std * z) exactly (test_env_fastpaths.py).
        commanded = action
        latency = self._latency
        if self._act_std > 0:  # 0 while disabled
            rows = self._act_noise
            if type(action) is not np.ndarray or action.dtype is not rows.dtype or action.shape != rows.shape:
                action = np.asarray(action, dtype=rows.dtype).reshape(-1)
            commanded = np.add(action, rows.next())  # a new array: never edit the caller's
            self._act_clip(commanded, self._act_lo_c, self._act_hi_c, commanded)
            if self._act_cast:  # an integer Box: noise in float64, then cast
                commanded = commanded.astype(self._act_dtype)
            if not self._act_flat:
                commanded = commanded.reshape(self._act_shape)
        elif latency > 0:
            commanded = np.asarray(action, dtype=np.float64).astype(self._act_dtype, copy=False)
        applied = commanded
        if latency > 0:
            queue = self._queue
            queue.append(commanded)
            applied = queue.popleft()
        if self._push_on:
            if self._push_left > 0 or self._push_wait <= 1:
                self._push_step()
            else:  # the common case of _push_step: waiting for the next push
                self._push_wait -= 1
        if self._act_std > 0 and self._step_clipped is not None:
            # `applied` is a noisy action this wrapper clipped into the action space (or the
            # in-bounds hold action at an episode's start): RescaleAction need not clip it again
            obs, reward, terminated, truncated, info = self._step_clipped(applied)
        else:
            obs, reward, terminated, truncated, info = self.env.step(applied)
        if latency > 0:
            # The learner chose `commanded` now; the plant got an older action. Storing the
            # delayed one would pair s_t with an action the policy did not pick at t.
            info["dr_applied_action"] = info.get("executed_action", applied)
            if self._act_std > 0 and self._f32_bounds:
                # commanded = float32(x) with x clipped into float32-representable bounds, so
                # float32(clip(float64(commanded), low, high)) is commanded itself.
                info["executed_action"] = commanded.copy()
            else:
                executed = np.maximum(commanded, self._act_low)  # float64, like clip(asarray(commanded, float64))
                np.minimum(executed, self._act_high, out=executed)
                info["executed_action"] = executed.astype(np.float32)
        params = self._params.copy()
        if self._push_left > 0:
            params[-3:] = self._push_vec
        info["dr_params"] = params
        if self._obs_std > 0:  # 0 while disabled
            obs = self._noisy_obs(obs)
        return obs, reward, terminated, truncated, info

    def _push_step(self) -> None:
        """Advance the push process by one step: a push starts with probability ``push_prob`` per
        step while none is active, i.e. after a geometric number of steps (drawn once per push
        instead of one Bernoulli draw per step)."""
        if self._push_left > 0:
            self._push_left -= 1
            if self._push_left == 0:
                self._clear_push()
            return
        rng, c = self._step_rng, self.cfg
        if self._push_wait <= 0:
            self._push_wait = int(rng.geometric(c.push_prob))
        self._push_wait -= 1
        if self._push_wait > 0:
            return
        body = int(self._push_ids[rng.integers(len(self._push_ids))])
        d = rng.normal(size=3)
        d /= max(np.linalg.norm(d), 1e-12)
        self._push_vec = d * rng.uniform(*c.push_force)
        self._push_body = body
        self._push_left = int(rng.integers(c.push_duration[0], c.push_duration[1] + 1))
        data = self._u.data
        data.xfrc_applied[body, :3] = self._push_vec
        data.xfrc_applied[body, 3:] = 0.0

    def _noisy_obs(self, obs: Any) -> Any:
        if not (self._enabled and self._obs_std > 0):
            return obs
        rows = self._obs_noise
        if rows is not None and type(obs) is np.ndarray and obs.shape == rows.shape:
            if obs.dtype is rows.dtype:
                return np.add(obs, rows.next())  # in the observation's dtype; a new array
            return (obs + rows.next()).astype(obs.dtype, copy=False)
        normals, std = self._normals, self._obs_std

        def add(x: np.ndarray) -> np.ndarray:
            x = np.asarray(x)
            return (x + std * normals.take(x.size).reshape(x.shape)).astype(x.dtype, copy=False)

        def noisy(x: Any) -> Any:  # nested Dicts (pixels/<camera>): float leaves only, images untouched
            if isinstance(x, dict):
                return {k: noisy(v) for k, v in x.items()}
            return add(x) if np.issubdtype(np.asarray(x).dtype, np.floating) else x

        return noisy(obs)

    def close(self) -> None:
        try:
            self._restore_nominal()
        except Exception:  # noqa: BLE001 - the env may already be closed
            pass
        super().close()

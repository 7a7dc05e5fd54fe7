"""Domain randomization for any MuJoCo-backed env (issue 2 §4 "Domain randomization").

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
"""
from __future__ import annotations

import collections
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from roborl.config import field, unit_interval
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
        self._has_latency = tuple(c.latency_steps) != (0, 0)
        self._has_obs_noise = tuple(c.obs_noise_std) != (0.0, 0.0)
        self._has_act_noise = tuple(c.action_noise_std) != (0.0, 0.0)
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
            self._act_buf = np.empty(self._act_size)
            self._f32_bounds = bool(space.dtype == np.float32
                                    and np.all(self._act_low.astype(np.float32) == self._act_low)
                                    and np.all(self._act_high.astype(np.float32) == self._act_high))
        self._obs_buf = np.empty(0)
        self._act_std0 = np.zeros(())  # this episode's action/observation noise std as 0-d arrays
        self._obs_std0 = np.zeros(())

        self._seed(seed)
        # Episode state (nominal until the first reset).
        self._values: dict[str, np.ndarray] = {}
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
        self._normals = _NormalStream(self._step_rng)

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
        i = 0
        for term, _, _ in self._scale_terms:
            v = self._values[term]
            p[i:i + v.size] = v
            i += v.size
        for on, value in ((self._has_latency, self._latency), (self._has_obs_noise, self._obs_std),
                          (self._has_act_noise, self._act_std)):
            if on:
                p[i] = value
                i += 1
        self._params = p
        self._act_std0[()] = self._act_std
        self._obs_std0[()] = self._obs_std

    def nominal(self) -> dict[str, np.ndarray]:
        """Copies of the nominal model arrays (``NOMINAL_FIELDS``)."""
        return {k: v.copy() for k, v in self._nominal.items()}

    def _set_nominal_values(self) -> None:
        for term, _, ids in self._scale_terms:
            self._values[term] = np.ones(len(ids) if self.cfg.per_element else 1)
        self._latency, self._obs_std, self._act_std = 0, 0.0, 0.0
        self._pack_params()

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
        rng, c = self._episode_rng, self.cfg
        for term, (lo, hi), ids in self._scale_terms:
            self._values[term] = rng.uniform(lo, hi, size=len(ids) if c.per_element else 1)
        self._latency = int(rng.integers(c.latency_steps[0], c.latency_steps[1] + 1)) if self._has_latency else 0
        self._obs_std = float(rng.uniform(*c.obs_noise_std)) if self._has_obs_noise else 0.0
        self._act_std = float(rng.uniform(*c.action_noise_std)) if self._has_act_noise else 0.0
        self._pack_params()

    def _apply(self) -> None:
        """Write nominal * sampled scales into the model (always from the nominal copies)."""
        m, nom = self._u.model, self._nominal
        # mj_setConst runs once, below, on the final values (it reads only the model, so the
        # constants of the nominal model computed in between would be overwritten unused).
        self._restore_nominal(set_const=False)
        for term, _, ids in self._scale_terms:
            s = self._values[term]
            if term == "mass_scale":
                m.body_mass[ids] = nom["body_mass"][ids] * s
                m.body_inertia[ids] = nom["body_inertia"][ids] * s[:, None]
                m.body_subtreemass[:] = self._ancestors @ m.body_mass
                self._const_dirty = True
            elif term == "friction_scale":
                m.geom_friction[ids, 0] = nom["geom_friction"][ids, 0] * s
            elif term == "damping_scale":
                m.dof_damping[ids] = nom["dof_damping"][ids] * s
            elif term == "gain_scale":
                full = np.ones(m.nu)
                full[ids] = s
                m.actuator_gainprm[ids, 0] = nom["actuator_gainprm"][ids, 0] * full[ids]
                m.actuator_biasprm[self._bias_kp, 1] = nom["actuator_biasprm"][self._bias_kp, 1] * full[self._bias_kp]
                m.actuator_biasprm[self._bias_kv, 2] = nom["actuator_biasprm"][self._bias_kv, 2] * full[self._bias_kv]
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
        # Per-step hot path (issue 2 bench): few ufuncs, float64 buffers reused through `out=`,
        # per-episode scalars as 0-d arrays (numpy takes them ~40 % faster than Python floats).
        # The float operations are those of commanded = clip(action + std * noise, low, high)
        # and obs + std * noise, so results are bit-identical to the plain formulation.
        commanded = action
        latency, act_std = self._latency, self._act_std
        if act_std > 0 or latency > 0:  # both are 0 while disabled
            if act_std > 0:
                buf, ns, k = self._act_buf, self._normals, self._act_size
                i = ns.i
                if i + k > ns.buf.size:  # inlined _NormalStream.take
                    noise = ns.take(k)
                else:
                    noise = ns.buf[i:i + k]
                    ns.i = i + k
                np.multiply(noise, self._act_std0, out=buf)
                np.add(buf, action if self._act_flat else np.asarray(action).reshape(-1), out=buf)
                np.maximum(buf, self._act_low_flat, out=buf)
                np.minimum(buf, self._act_high_flat, out=buf)
                commanded = buf.astype(self._act_dtype)
                if not self._act_flat:
                    commanded = commanded.reshape(self._act_shape)
            else:
                commanded = np.asarray(action, dtype=np.float64).astype(self._act_dtype, copy=False)
        applied = commanded
        if latency > 0:
            self._queue.append(commanded)
            applied = self._queue.popleft()
        if self._push_on:
            if self._push_left > 0 or self._push_wait <= 1:
                self._push_step()
            else:  # the common case of _push_step: waiting for the next push
                self._push_wait -= 1
        obs, reward, terminated, truncated, info = self.env.step(applied)
        if latency > 0:
            # The learner chose `commanded` now; the plant got an older action. Storing the
            # delayed one would pair s_t with an action the policy did not pick at t.
            info["dr_applied_action"] = info.get("executed_action", applied)
            if act_std > 0 and self._f32_bounds:
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
        if self._obs_std > 0 and self._enabled:
            if type(obs) is np.ndarray and obs.ndim == 1:
                buf = self._obs_buf
                if buf.size != obs.size:
                    buf = self._obs_buf = np.empty(obs.size)
                np.multiply(self._normals.take(obs.size), self._obs_std0, out=buf)
                np.add(buf, obs, out=buf)
                obs = buf.astype(obs.dtype)
            else:
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
        normals, std = self._normals, self._obs_std

        def add(x: np.ndarray) -> np.ndarray:
            x = np.asarray(x)
            return (x + std * normals.take(x.size).reshape(x.shape)).astype(x.dtype, copy=False)

        if isinstance(obs, dict):
            return {k: add(v) if np.issubdtype(np.asarray(v).dtype, np.floating) else v for k, v in obs.items()}
        return add(obs)

    def close(self) -> None:
        try:
            self._restore_nominal()
        except Exception:  # noqa: BLE001 - the env may already be closed
            pass
        super().close()

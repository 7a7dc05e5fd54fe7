"""The arm env shared by all our tasks: robot, controller, action and observation plumbing.

Action (float32, ``Box(-1, 1)``): ``[dx, dy, dz, grip]``, or ``[dx, dy, dz, dyaw, grip]`` with
``yaw=True``. ``1.0`` on a position axis means ``max_delta`` metres (default 0.03 m) of
end-effector motion in that control step, ``1.0`` on yaw means ``max_dyaw`` radians
(default 0.2 rad, accumulated and held within +-``yaw_limit``). ``grip`` maps linearly onto
the gripper actuator's control range: -1 = fully closed, +1 = fully open.

Control: ``control_hz`` (10-20 Hz, default 10) target updates; between them MuJoCo runs
``1 / (control_hz * timestep)`` physics steps (20 at 10 Hz with the 5 ms step) of the
Cartesian impedance controller built by :mod:`roborl.envs.arm.robot`. The commanded target
is ``ee_pos + delta`` (so a blocked arm never winds up), clipped to the reach box (the
workspace grown by ``reach_margin``); the :class:`~roborl.envs.safety.SafetyLayer` that
``gym.make`` applies projects it into the workspace itself.
"""
from __future__ import annotations

from typing import Any, ClassVar, Sequence

import gymnasium as gym
import mujoco
import numpy as np
from gymnasium import spaces

from roborl.envs.arm.robot import PREFIX, RobotDescription, asset_path, build_model, default_robot
from roborl.errors import UsageError

OBS_MODES = ("state", "pixels", "state+pixels", "proprio", "proprio+pixels")
#: Modes with camera images / with the robot's own state vector.
_PIXEL_MODES = ("pixels", "state+pixels", "proprio+pixels")
_PROPRIO_MODES = ("proprio", "proprio+pixels", "state+pixels")
#: The offscreen framebuffer every scene declares (<global offwidth="640" offheight="480">).
MAX_IMAGE_SIZE = 480


def _new_renderer(model: mujoco.MjModel, height: int, width: int) -> mujoco.Renderer:
    """A ``mujoco.Renderer``, or one UsageError line saying how to get an OpenGL backend."""
    try:
        return mujoco.Renderer(model, height, width)
    except Exception as e:  # noqa: BLE001 - mujoco.FatalError, GLFW/EGL/OSMesa errors: all mean "no GL"
        import os

        import roborl.envs

        why = (str(e).strip().splitlines() or [type(e).__name__])[0]
        late = " (mujoco was imported before roborl.envs could choose it)" if roborl.envs.GL_DEFAULT_TOO_LATE else ""
        raise UsageError(f"camera images need an OpenGL backend (MUJOCO_GL={os.environ.get('MUJOCO_GL', '')!r}{late}): "
                         f"set MUJOCO_GL=osmesa PYOPENGL_PLATFORM=osmesa (apt libosmesa6) or egl in the environment "
                         f"({why})") from None


def _safe_close(renderer: mujoco.Renderer) -> None:
    """Close a renderer with its own GL context current.

    ``mujoco.Renderer.close`` frees its GL objects in whatever context is current; with two
    renderers in one process (obs and ``render()``, or two envs) that frees the *other*
    renderer's buffers, whose next frames are garbage (seen with OSMesa).
    """
    ctx = getattr(renderer, "_gl_context", None)
    if ctx is not None:
        ctx.make_current()
    renderer.close()


def _robot_from_kwargs(robot_xml: str | None, ee_site: str | None, arm_joints: Sequence[str] | None,
                       gripper_actuator: str | None, finger_joints: Sequence[str] | None,
                       home_qpos: Sequence[float] | None, robot_base_pos: Sequence[float] | None,
                       joint_vel_limit: float | None) -> RobotDescription:
    base = default_robot()
    if robot_xml is None:
        if any(v is not None for v in (ee_site, arm_joints, gripper_actuator, finger_joints)):
            raise UsageError("ee_site/arm_joints/gripper_actuator/finger_joints need robot_xml (bring-your-own robot)")
        desc = base
    else:
        missing = [k for k, v in (("ee_site", ee_site), ("arm_joints", arm_joints),
                                  ("gripper_actuator", gripper_actuator)) if v is None]
        if missing:
            raise UsageError(f"robot_xml={robot_xml!r} also needs {', '.join(missing)}")
        desc = RobotDescription(xml=str(robot_xml), ee_site=str(ee_site), arm_joints=tuple(arm_joints or ()),
                                gripper_actuator=str(gripper_actuator), finger_joints=tuple(finger_joints or ()),
                                home_qpos=None if home_qpos is None else tuple(float(q) for q in home_qpos))
    if robot_base_pos is not None:
        desc = RobotDescription(**{**desc.__dict__, "base_pos": tuple(float(v) for v in robot_base_pos)})
    if joint_vel_limit is not None:
        desc = RobotDescription(**{**desc.__dict__, "joint_vel_limit": float(joint_vel_limit)})
    return desc


class ArmEnv(gym.Env):
    """Base class of Reach/Push/PickPlace/PegInsert. Subclasses set the class attributes and hooks.

    Public attributes used by other components (safety layer, domain randomization, experts):
    ``model`` (mujoco.MjModel), ``data`` (mujoco.MjData), ``ee_pos`` [3], ``workspace_bounds``
    (low [3], high [3]), ``max_delta`` (m per unit action), ``control_dt`` (s), ``grip_command``
    (last executed grip in [-1, 1]), ``yaw`` (bool), ``arm_jacobian()`` [3, n_arm],
    ``joint_vel_limits`` [n_arm] (rad/s). Cameras: ``cameras`` (the observation cameras),
    ``camera_names()`` (all of the model's), ``render_cameras()`` -> ``{camera: uint8 [H, W, 3]}``;
    layouts: ``state_layout``, ``proprio_layout``, ``privileged_state_names``.
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["rgb_array"], "render_fps": 10}

    scene_xml: ClassVar[str] = ""
    task_name: ClassVar[str] = ""
    default_max_steps: ClassVar[int] = 50
    workspace_low: ClassVar[np.ndarray] = np.array([0.25, -0.25, 0.015])
    workspace_high: ClassVar[np.ndarray] = np.array([0.65, 0.25, 0.40])
    home_tcp: ClassVar[np.ndarray] = np.array([0.45, 0.0, 0.20])
    obs_names: ClassVar[tuple[tuple[str, int], ...]] = ()
    #: The robot's own part of ``obs_names`` (a prefix of it); ``ee_yaw`` follows with ``yaw=True``.
    proprio_names: ClassVar[tuple[tuple[str, int], ...]] = (("ee_pos", 3), ("ee_vel", 3), ("gripper_opening", 1))
    #: Observation Dict entries that carry ground truth a real robot lacks (object pose, goal).
    privileged_obs_keys: ClassVar[tuple[str, ...]] = ("environment_state",)
    #: info entries that carry such ground truth (``is_success`` is not one: it is the score).
    privileged_info_keys: ClassVar[tuple[str, ...]] = ("privileged_state",)

    def __init__(self, *, reward_type: str = "dense", obs_mode: str = "state", render_mode: str | None = None,
                 yaw: bool = False, control_hz: float = 10.0, max_delta: float = 0.03, max_dyaw: float = 0.2,
                 yaw_limit: float = np.pi / 2, image_size: int = 64, camera: str = "front",
                 cameras: Sequence[str] | None = ("front", "wrist"), antialias: bool = True,
                 reach_margin: float = 0.05, robot_xml: str | None = None, ee_site: str | None = None,
                 arm_joints: Sequence[str] | None = None, gripper_actuator: str | None = None,
                 finger_joints: Sequence[str] | None = None, home_qpos: Sequence[float] | None = None,
                 robot_base_pos: Sequence[float] | None = None, joint_vel_limit: float | None = None) -> None:
        if reward_type not in ("dense", "sparse"):
            raise UsageError(f"reward_type: expected 'dense' or 'sparse', got {reward_type!r}")
        if obs_mode not in OBS_MODES:
            raise UsageError(f"obs_mode: expected one of {OBS_MODES}, got {obs_mode!r}")
        if render_mode not in (None, "rgb_array"):
            raise UsageError(f"render_mode: expected None or 'rgb_array', got {render_mode!r}")
        if not 10.0 <= float(control_hz) <= 20.0:
            raise UsageError(f"control_hz: expected 10-20 Hz, got {control_hz!r}")
        if not 0.0 < float(max_delta) <= 0.05:
            raise UsageError(f"max_delta: expected (0, 0.05] m per step, got {max_delta!r}")
        self.reward_type = reward_type
        self.obs_mode = obs_mode
        self.render_mode = render_mode
        self.yaw = bool(yaw)
        self.max_delta = float(max_delta)
        self.max_dyaw = float(max_dyaw)
        self.yaw_limit = float(yaw_limit)
        if isinstance(image_size, bool) or not isinstance(image_size, (int, np.integer)) \
                or not 8 <= int(image_size) <= MAX_IMAGE_SIZE:
            raise UsageError(f"image_size: expected an integer in [8, {MAX_IMAGE_SIZE}] pixels, got {image_size!r}")
        self.image_size = int(image_size)
        self.robot = _robot_from_kwargs(robot_xml, ee_site, arm_joints, gripper_actuator, finger_joints,
                                        home_qpos, robot_base_pos, joint_vel_limit)
        self.model, self._r = build_model(asset_path(self.scene_xml), self.robot, self.home_tcp)
        if cameras is None:  # YAML null: the default pair
            cameras = ("front", "wrist")
        elif isinstance(cameras, str):
            cameras = (cameras,)
        self.cameras: tuple[str, ...] = tuple(str(c) for c in cameras)
        if obs_mode in _PIXEL_MODES and not self.cameras:
            raise UsageError(f"cameras: obs_mode={obs_mode!r} needs at least one camera (available: "
                             f"{', '.join(self.camera_names())})")
        if len(set(self.cameras)) != len(self.cameras):
            raise UsageError(f"cameras: {list(self.cameras)} names a camera twice")
        self._cam_ids = {c: self._camera_id(c, "cameras") for c in self.cameras}
        self.camera = str(camera)
        self._render_cam = self._camera_id(self.camera, "camera")
        if not antialias:
            # 4x multisampling (MuJoCo's default) makes edges look like a real camera's, which
            # integrates light over each pixel; without it a software renderer (OSMesa) draws a
            # frame ~3x faster (BENCHMARKS.md, "Cameras: rendering"), with jagged edges.
            self.model.vis.quality.offsamples = 0
        self.data = mujoco.MjData(self.model)
        self.n_substeps = max(1, int(round(1.0 / (float(control_hz) * self.model.opt.timestep))))
        self.control_dt = self.n_substeps * self.model.opt.timestep
        self.metadata = {**self.metadata, "render_fps": int(round(1.0 / self.control_dt))}
        self._ws_low = np.array(self.workspace_low, dtype=np.float64)
        self._ws_high = np.array(self.workspace_high, dtype=np.float64)
        self._reach_low = self._ws_low - reach_margin
        self._reach_high = self._ws_high + reach_margin
        self._reach_low[2] = max(self._reach_low[2], 0.0)
        self.joint_vel_limits = self._r.joint_vel_limit.copy()
        self._jacp = np.zeros((3, self.model.nv))
        # Arm dofs as a slice when contiguous (they are for every MJCF chain): a view, not a gather.
        dof = np.asarray(self._r.arm_dof)
        contiguous = dof.size > 0 and np.array_equal(dof, np.arange(dof[0], dof[0] + dof.size))
        self._arm_cols: Any = slice(int(dof[0]), int(dof[0]) + dof.size) if contiguous else dof
        self._grip_lo, self._grip_hi = (float(v) for v in self._r.gripper_range)
        n_act = 5 if self.yaw else 4
        self.action_space = spaces.Box(-1.0, 1.0, (n_act,), dtype=np.float32)
        self._obs_dim = sum(n for _, n in self.obs_names) + (1 if self.yaw else 0)
        self._n_proprio = sum(n for _, n in self.proprio_names)
        self.observation_space = self._observation_space(obs_mode)
        self._obj_body = self._maybe_id(mujoco.mjtObj.mjOBJ_BODY, "object")
        self._obj_qpos = self._maybe_qadr("object")
        self._renderer: mujoco.Renderer | None = None
        self._obs_renderer: mujoco.Renderer | None = None
        # Camera images show what a camera would: geoms, not sites (the tool-centre marker
        # and other debug sites stay out of observations; render() still draws them).
        self._obs_scene_option = mujoco.MjvOption()
        self._obs_scene_option.sitegroup[:] = 0
        self.grip_command = 1.0
        self._yaw_target = 0.0
        self._prev_ee = np.zeros(3)
        self._ee_vel = np.zeros(3)
        self._reset_physics()

    # ------------------------------------------------------------------ helpers
    def _maybe_id(self, kind: mujoco.mjtObj, name: str) -> int:
        return int(mujoco.mj_name2id(self.model, kind, name))

    def _maybe_qadr(self, joint: str) -> int:
        j = mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_JOINT, joint)
        return int(self.model.jnt_qposadr[j]) if j >= 0 else -1

    def _camera_id(self, name: str, what: str) -> int:
        """Model id of camera ``name`` (scene cameras by name, robot cameras without the ``robot/`` prefix)."""
        for full in (name, PREFIX + name):
            cid = mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_CAMERA, full)
            if cid >= 0:
                return int(cid)
        raise UsageError(f"{what}: unknown camera {name!r} for {type(self).__name__} "
                         f"(available: {', '.join(self.camera_names())})")

    def camera_names(self) -> list[str]:
        """Every camera of the task model (robot cameras without the ``robot/`` prefix)."""
        names = [self.model.camera(i).name for i in range(self.model.ncam)]
        return [n[len(PREFIX):] if n.startswith(PREFIX) else n for n in names]

    @property
    def proprio_layout(self) -> tuple[tuple[str, int], ...]:
        """(name, size) of each part of the ``proprio`` vector [P] (``ee_yaw`` last with ``yaw=True``)."""
        return self.proprio_names + ((("ee_yaw", 1),) if self.yaw else ())

    @property
    def state_layout(self) -> tuple[tuple[str, int], ...]:
        """(name, size) of each part of the ``state`` vector [S] (``ee_yaw`` last with ``yaw=True``)."""
        return self.obs_names + ((("ee_yaw", 1),) if self.yaw else ())

    @property
    def privileged_state_names(self) -> tuple[str, ...]:
        """Names of the state-vector parts a real robot does not measure (object pose, goal, ...)."""
        own = {n for n, _ in self.proprio_layout}
        return tuple(n for n, _ in self.state_layout if n not in own)

    def _observation_space(self, mode: str) -> spaces.Space:
        p = self._n_proprio + (1 if self.yaw else 0)
        state = spaces.Box(-np.inf, np.inf, (self._obs_dim,), dtype=np.float32)
        if mode == "state":
            return state
        parts: dict[str, spaces.Space] = {}
        if mode in _PROPRIO_MODES:
            parts["proprio"] = spaces.Box(-np.inf, np.inf, (p,), dtype=np.float32)
        if mode == "state+pixels":
            parts["environment_state"] = spaces.Box(-np.inf, np.inf, (self._obs_dim - p,), dtype=np.float32)
        if mode in _PIXEL_MODES:
            hw3 = (self.image_size, self.image_size, 3)
            parts["pixels"] = spaces.Dict({c: spaces.Box(0, 255, hw3, dtype=np.uint8) for c in self.cameras})
        return spaces.Dict(parts)

    @property
    def ee_pos(self) -> np.ndarray:
        """Tool centre point position [3] (world frame, m)."""
        return self.data.site_xpos[self._r.ee_site].copy()

    @property
    def workspace_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """(low [3], high [3]) box the end effector should stay in (m, world frame)."""
        return self._ws_low.copy(), self._ws_high.copy()

    @property
    def gripper_opening(self) -> float:
        """Distance between the finger pads (m); the gripper actuator's length if no finger joints are known."""
        if len(self._r.finger_qpos):
            return float(self.data.qpos[self._r.finger_qpos].sum())
        return float(self.data.actuator_length[self._r.gripper_act])

    @property
    def ee_yaw(self) -> float:
        """Rotation of the tool about the world vertical relative to the home pose (rad)."""
        return -float(self.data.actuator_length[self._r.osc_act[5]])

    def arm_jacobian(self) -> np.ndarray:
        """Position Jacobian of the tool centre point w.r.t. the arm joints, [3, n_arm]."""
        mujoco.mj_jacSite(self.model, self.data, self._jacp, None, self._r.ee_site)
        return self._jacp[:, self._arm_cols].copy()

    def _grip_ctrl(self, g: float) -> float:
        return self._grip_lo + 0.5 * (g + 1.0) * (self._grip_hi - self._grip_lo)

    def _set_targets(self, target: np.ndarray, grip: float) -> None:
        ctrl = self.data.ctrl
        ctrl[self._r.osc_act[:3]] = target
        ctrl[self._r.osc_act[3:]] = (0.0, 0.0, -self._yaw_target)  # rotation reference z points down
        ctrl[self._r.gripper_act] = self._grip_ctrl(grip)

    # The position setpoint ramps linearly to the new target over the first RAMP_CHUNKS of
    # SETPOINT_CHUNKS equal parts of the control period, then holds. A step change made the
    # impedance controller snap across 3 cm in a few ms and kick a pushed cube, which then
    # slid unpredictably; the ramp (as a real arm's trajectory interpolator does) cut the
    # noisy expert's failures on Push from 7/40 to 0/40, while the tool still covers ~97%
    # of a commanded step within the step.
    SETPOINT_CHUNKS = 5
    RAMP_CHUNKS = 3  # the setpoint reaches the target after 3 of 5 chunks; the tool settles in the rest

    def _move_to(self, target: np.ndarray, grip: float) -> None:
        """Drive the tool to ``target`` [3] over one control period with a ramped setpoint."""
        pos_act = self._r.osc_act[:3]
        start = np.array(self.data.ctrl[pos_act])
        self._set_targets(target, grip)
        k = self.SETPOINT_CHUNKS if self.n_substeps % self.SETPOINT_CHUNKS == 0 else 1
        sub = self.n_substeps // k
        for i in range(1, k + 1):
            self.data.ctrl[pos_act] = start + (target - start) * min(1.0, i / min(k, self.RAMP_CHUNKS))
            mujoco.mj_step(self.model, self.data, nstep=sub)
        mujoco.mj_kinematics(self.model, self.data)

    def _simulate(self, n_control_steps: int = 1) -> None:
        mujoco.mj_step(self.model, self.data, nstep=self.n_substeps * n_control_steps)
        # mj_step leaves positions-dependent quantities one substep stale; refresh them so
        # that observations, rewards and ee_pos describe the state after the step.
        mujoco.mj_kinematics(self.model, self.data)

    def _reset_physics(self) -> None:
        mujoco.mj_resetData(self.model, self.data)
        self.data.qpos[self._r.arm_qpos] = self._r.home_qpos
        if len(self._r.finger_qpos):
            self.data.qpos[self._r.finger_qpos] = 0.5 * (self._grip_hi - self._grip_lo) + self._grip_lo
        self._yaw_target = 0.0
        self.grip_command = 1.0
        mujoco.mj_forward(self.model, self.data)
        self._set_targets(self.ee_pos, self.grip_command)

    def _set_object_pose(self, pos: np.ndarray, yaw: float = 0.0) -> None:
        a = self._obj_qpos
        self.data.qpos[a:a + 3] = pos
        self.data.qpos[a + 3:a + 7] = (np.cos(yaw / 2), 0.0, 0.0, np.sin(yaw / 2))

    # ------------------------------------------------------------------ task hooks
    def _task_reset(self, rng: np.random.Generator) -> None:
        raise NotImplementedError

    def _task_obs(self) -> list[np.ndarray]:
        raise NotImplementedError

    def _task_eval(self) -> tuple[float, float, bool]:
        """(dense reward, sparse reward, success) for the current state."""
        raise NotImplementedError

    def task_state(self) -> dict[str, Any]:
        """Ground-truth positions for scripted experts (independent of observation wrappers)."""
        return {"ee": self.ee_pos, "grip_open": self.gripper_opening}

    # ------------------------------------------------------------------ gym API
    def _state_obs(self) -> np.ndarray:
        ee = self.ee_pos
        parts = [ee, self._ee_vel, np.array([self.gripper_opening]), *self._task_obs()]
        if self.yaw:
            parts.append(np.array([self.ee_yaw]))
        return np.concatenate(parts).astype(np.float32)

    def _obs(self) -> Any:
        mode = self.obs_mode
        if mode == "state":
            return self._state_obs()
        out: dict[str, Any] = {}
        if mode in _PROPRIO_MODES:
            state = self._state_obs()
            n = self._n_proprio
            # proprio = the robot's prefix of the state (+ ee_yaw, the state's last value)
            out["proprio"] = np.concatenate([state[:n], state[-1:]]) if self.yaw else state[:n].copy()
            if mode == "state+pixels":
                out["environment_state"] = state[n:-1].copy() if self.yaw else state[n:].copy()
        if mode in _PIXEL_MODES:
            out["pixels"] = self.render_cameras()
        return out

    def _info(self, success: bool) -> dict[str, Any]:
        info = {"is_success": bool(success), "ee_pos": self.ee_pos}
        if self.obs_mode != "state":
            info["privileged_state"] = self._state_obs()
        return info

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        super().reset(seed=seed)
        self._reset_physics()
        self._task_reset(self.np_random)
        mujoco.mj_forward(self.model, self.data)
        self._prev_ee = self.ee_pos
        self._ee_vel = np.zeros(3)
        _, _, success = self._task_eval()
        return self._obs(), self._info(success)

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        a = np.asarray(action, dtype=np.float64).reshape(-1)
        if a.shape != self.action_space.shape:
            raise UsageError(f"action: expected shape {self.action_space.shape}, got {a.shape}")
        # The raw env is robust on its own: non-finite entries hold (0 delta, keep the
        # gripper); counting and reporting them is the SafetyLayer's job.
        if not np.all(np.isfinite(a)):
            finite = np.isfinite(a)
            a = np.where(finite, a, 0.0)
            if not finite[-1]:
                a[-1] = self.grip_command
        return self._step_clipped(np.clip(a, -1.0, 1.0))

    def step_in_bounds(self, action: np.ndarray) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        """``step`` for an action known to be finite and inside ``action_space`` (shape ``[n_act]``).

        The :class:`~roborl.envs.safety.SafetyLayer` calls this after its own finite check and
        clip, which ``step`` would only repeat; the result is the same as ``step(action)``.
        """
        return self._step_clipped(np.asarray(action, dtype=np.float64))

    def _step_clipped(self, a: np.ndarray) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        """One control step with a finite float64 action ``a`` [n_act] in [-1, 1]."""
        ee = self.ee_pos
        target = np.clip(ee + a[:3] * self.max_delta, self._reach_low, self._reach_high)
        if self.yaw:
            self._yaw_target = float(np.clip(self._yaw_target + a[3] * self.max_dyaw, -self.yaw_limit, self.yaw_limit))
        self.grip_command = float(a[-1])
        self._move_to(target, self.grip_command)
        new_ee = self.ee_pos
        self._ee_vel = (new_ee - self._prev_ee) / self.control_dt
        self._prev_ee = new_ee
        dense, sparse, success = self._task_eval()
        reward = dense if self.reward_type == "dense" else sparse
        return self._obs(), float(reward), False, False, self._info(success)

    # ------------------------------------------------------------------ rendering
    def render_cameras(self, cameras: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """``{camera: uint8 [image_size, image_size, 3]}`` of the current state (fresh arrays).

        ``cameras`` defaults to the observation cameras; one renderer serves them all.
        """
        ids = self._cam_ids if cameras is None else {c: self._camera_id(c, "cameras") for c in cameras}
        if self._obs_renderer is None:
            self._obs_renderer = _new_renderer(self.model, self.image_size, self.image_size)
        r = self._obs_renderer
        out = {}
        for name, cid in ids.items():
            r.update_scene(self.data, camera=cid, scene_option=self._obs_scene_option)
            out[name] = r.render()  # a new array per call
        return out

    def render(self) -> np.ndarray | None:
        """``uint8 [240, 320, 3]`` from camera ``camera`` (``render_mode="rgb_array"``)."""
        if self.render_mode != "rgb_array":
            return None
        if self._renderer is None:
            self._renderer = _new_renderer(self.model, 240, 320)
        self._renderer.update_scene(self.data, camera=self._render_cam)
        return self._renderer.render()

    def close(self) -> None:
        for r in (self._renderer, self._obs_renderer):
            if r is not None:
                _safe_close(r)
        self._renderer = self._obs_renderer = None

    def __del__(self) -> None:
        # An env dropped without close() must free its renderers safely too (see _safe_close).
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown: GL may already be gone
            pass

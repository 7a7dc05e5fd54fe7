"""Build a task model from a scene MJCF plus a robot MJCF ("bring your own robot").

The robot file is any MJCF whose world body holds an arm with an end-effector site, a set
of arm joints and one gripper actuator. :func:`build_model` turns it into a controllable
arm the same way for our own arm (``envs/arm.xml``) and for a user-supplied one:

1. actuators that drive the arm joints are removed (the Cartesian controller replaces them);
2. gravity compensation is switched on for every robot body (``body.gravcomp = 1``);
3. the robot is attached into the task scene at ``base_pos`` with the name prefix ``robot/``;
4. six Cartesian impedance actuators are added on the end-effector site: three for the
   position (reference site at the world origin, world-aligned) and three for the
   orientation (reference site oriented like the end effector at the home pose);
5. a camera ``wrist`` is added on the body that carries the end-effector site, placed in
   the site's frame (``wrist_camera_pos``, looking at ``wrist_camera_target``), unless the
   robot file already has a camera named ``wrist``. In the compiled model it is
   ``robot/wrist``; it moves with the gripper and sees the fingers and what is in front of them.

The controller is thus a Jacobian-transpose operational-space (Cartesian impedance)
controller: MuJoCo's site transmission with a reference site maps the Cartesian PD force
``kp (target - x) - kv xdot`` through ``J^T`` onto the arm joints on *every* physics step,
in C (MuJoCo docs, "actuator/general: refsite"). Python sets targets once per control
step, so the hot path is a single ``mj_step(model, data, nstep)`` call. Joint limits are
MuJoCo joint-limit constraints, so they are respected by the physics.
"""
from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import mujoco
import numpy as np

from roborl.errors import UsageError

PREFIX = "robot/"



def asset_path(name: str) -> str:
    """Absolute path of one of our MJCF assets (package ``roborl.assets`` = top-level ``envs/``)."""
    return str(resources.files("roborl.assets").joinpath(name))


@dataclass(frozen=True)
class RobotDescription:
    """Which robot to build a task on, and how to control it.

    ``xml`` is an MJCF file; names are as written in that file (without prefix).
    """

    xml: str
    ee_site: str
    arm_joints: tuple[str, ...]
    gripper_actuator: str
    finger_joints: tuple[str, ...] = ()
    home_qpos: tuple[float, ...] | None = None
    base_pos: tuple[float, float, float] = (0.0, 0.0, 0.0)
    joint_vel_limit: float = 2.0
    # Gains of the Cartesian impedance controller (N/m, N s/m, N m/rad, N m s/rad). With our
    # arm they track a 3 cm step within one 0.1 s control step (ratio 0.99-1.03) and keep the
    # tool within 0.3 degrees of vertical (measured by a step-response sweep).
    kp_pos: float = 5000.0
    kv_pos: float = 120.0
    kp_rot: float = 200.0
    kv_rot: float = 5.0
    force_limit: float = 60.0
    torque_limit: float = 30.0
    # Wrist camera in the end-effector site's frame (z = approach axis, y = finger closing axis):
    # behind the finger tips and off to the side of the fingers, looking at a point just past the
    # tool centre point, so both fingers and a grasped or approached object are in view.
    wrist_camera_pos: tuple[float, float, float] = (0.075, 0.0, -0.115)
    wrist_camera_target: tuple[float, float, float] = (0.0, 0.0, 0.04)
    wrist_camera_fovy: float = 75.0


def default_robot() -> RobotDescription:
    """Our 6-DOF primitive arm with a parallel gripper (``envs/arm.xml``)."""
    return RobotDescription(
        xml=asset_path("arm.xml"), ee_site="ee", arm_joints=("j1", "j2", "j3", "j4", "j5", "j6"),
        gripper_actuator="gripper", finger_joints=("finger_l", "finger_r"), home_qpos=_ARM_HOME)


@dataclass
class BuiltRobot:
    """Indices into the compiled model for the controller and the observations."""

    ee_site: int
    arm_qpos: np.ndarray  # [n_arm] int, qpos addresses of the arm joints
    arm_dof: np.ndarray  # [n_arm] int, dof addresses of the arm joints
    finger_qpos: np.ndarray  # [n_fingers] int
    gripper_act: int
    gripper_range: np.ndarray  # [2] ctrl range of the gripper actuator
    osc_act: np.ndarray  # [6] actuator ids: x, y, z, rx, ry, rz
    home_qpos: np.ndarray  # [n_arm]
    ref_rot_quat: np.ndarray  # [4] world orientation of the rotation reference (= ee at home)
    joint_vel_limit: np.ndarray  # [n_arm] rad/s (or m/s)


def _check_names(spec: mujoco.MjSpec, desc: RobotDescription) -> None:
    sites = {s.name for s in spec.sites}
    joints = {j.name for j in spec.joints}
    acts = {a.name for a in spec.actuators}
    if desc.ee_site not in sites:
        raise UsageError(f"robot_xml {desc.xml}: ee_site {desc.ee_site!r} not found (sites: {sorted(sites)})")
    for j in (*desc.arm_joints, *desc.finger_joints):
        if j not in joints:
            raise UsageError(f"robot_xml {desc.xml}: joint {j!r} not found (joints: {sorted(joints)})")
    if desc.gripper_actuator not in acts:
        raise UsageError(
            f"robot_xml {desc.xml}: gripper_actuator {desc.gripper_actuator!r} not found (actuators: {sorted(acts)})")
    if not desc.arm_joints:
        raise UsageError(f"robot_xml {desc.xml}: arm_joints is empty")
    if desc.home_qpos is not None and len(desc.home_qpos) != len(desc.arm_joints):
        raise UsageError(f"home_qpos has {len(desc.home_qpos)} values but arm_joints has {len(desc.arm_joints)}")


def _load_robot_spec(desc: RobotDescription) -> mujoco.MjSpec:
    path = Path(desc.xml)
    if not path.is_file():
        raise UsageError(f"robot_xml: file not found: {desc.xml}")
    try:
        spec = mujoco.MjSpec.from_file(str(path))
    except Exception as e:  # mujoco raises ValueError with a multi-line message
        raise UsageError(f"robot_xml {desc.xml}: cannot parse MJCF ({str(e).splitlines()[0]})") from None
    _check_names(spec, desc)
    for act in list(spec.actuators):
        if act.trntype == mujoco.mjtTrn.mjTRN_JOINT and act.target in desc.arm_joints:
            spec.delete(act)  # the Cartesian controller drives these joints
    for body in spec.bodies:
        if body.name != "world":
            body.gravcomp = 1.0
    return spec


def home_ik(model: mujoco.MjModel, data: mujoco.MjData, site: int, dofs: np.ndarray, qadr: np.ndarray,
            pos: np.ndarray, quat: np.ndarray, iters: int = 300) -> np.ndarray:
    """Damped-least-squares IK for a full pose (position ``pos`` [3], orientation ``quat`` [4]).

    Used once at build time when the robot gives no ``home_qpos``. Returns arm qpos [n_arm].
    """
    jacp = np.zeros((3, model.nv))
    jacr = np.zeros((3, model.nv))
    target_mat = np.zeros(9)
    mujoco.mju_quat2Mat(target_mat, quat)
    target_mat = target_mat.reshape(3, 3)
    lo = model.jnt_range[[np.where(model.jnt_qposadr == a)[0][0] for a in qadr]]
    for _ in range(iters):
        mujoco.mj_kinematics(model, data)
        mujoco.mj_comPos(model, data)
        xmat = data.site_xmat[site].reshape(3, 3)
        err_p = pos - data.site_xpos[site]
        rot_err = 0.5 * sum(np.cross(xmat[:, i], target_mat[:, i]) for i in range(3))
        err = np.concatenate([err_p, rot_err])
        if np.linalg.norm(err) < 1e-7:
            break
        mujoco.mj_jacSite(model, data, jacp, jacr, site)
        jac = np.vstack([jacp[:, dofs], jacr[:, dofs]])
        dq = jac.T @ np.linalg.solve(jac @ jac.T + 1e-4 * np.eye(6), err)
        q = data.qpos[qadr] + dq
        data.qpos[qadr] = np.clip(q, lo[:, 0], lo[:, 1])
    return data.qpos[qadr].copy()


WRIST_CAMERA = "wrist"


def _add_wrist_camera(scene: mujoco.MjSpec, model: mujoco.MjModel, site: int, desc: RobotDescription) -> None:
    """Add camera ``robot/wrist`` to the body of the end-effector site (see the module docstring).

    ``model`` is ``scene`` compiled once, for the site's pose in its body (MJCF may give it as
    zaxis/euler/..., which only the compiler resolves). MuJoCo cameras look along their -z with
    image-up +y: camera z = (pos - target) / |pos - target|, camera x = the finger closing axis
    (the fingers appear left and right), camera y = z x x.
    """
    if mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, PREFIX + WRIST_CAMERA) >= 0:
        return  # the robot brings its own wrist camera
    body = scene.body(model.body(int(model.site_bodyid[site])).name)
    site_rot = np.zeros(9)
    mujoco.mju_quat2Mat(site_rot, model.site_quat[site])
    site_rot = site_rot.reshape(3, 3)  # columns: site axes in the body frame
    pos_s = np.asarray(desc.wrist_camera_pos, dtype=np.float64)
    z = pos_s - np.asarray(desc.wrist_camera_target, dtype=np.float64)
    z /= np.linalg.norm(z)
    x = np.array([0.0, 1.0, 0.0]) - z[1] * z  # finger axis, made orthogonal to z
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    cam_rot = site_rot @ np.stack([x, y, z], axis=1)
    quat = np.zeros(4)
    mujoco.mju_mat2Quat(quat, cam_rot.reshape(-1))
    body.add_camera(name=PREFIX + WRIST_CAMERA, pos=list(model.site_pos[site] + site_rot @ pos_s), quat=list(quat),
                    fovy=float(desc.wrist_camera_fovy))


DOWN_QUAT = np.array([0.0, 0.0, 1.0, 0.0])  # site z along world -z, site y along world +y


def build_model(scene_xml: str, desc: RobotDescription, home_tcp: np.ndarray) -> tuple[mujoco.MjModel, BuiltRobot]:
    """Compile ``scene_xml`` with the robot attached and the Cartesian controller added.

    ``home_tcp`` [3]: where the tool centre point should be at the home pose when the robot
    gives no ``home_qpos`` (then the home orientation is "pointing down", site z = world -z).
    """
    robot = _load_robot_spec(desc)
    scene = mujoco.MjSpec.from_file(scene_xml)
    frame = scene.worldbody.add_frame(pos=list(desc.base_pos))
    scene.attach(robot, prefix=PREFIX, frame=frame)
    ref_pos = scene.worldbody.add_site(name="osc_ref_pos", pos=[0, 0, 0], size=[0.005] * 3, group=5)
    ref_rot = scene.worldbody.add_site(name="osc_ref_rot", pos=[0, 0, 0], size=[0.005] * 3, group=5)
    model = scene.compile()
    data = mujoco.MjData(model)
    site = model.site(PREFIX + desc.ee_site).id
    jids = [model.joint(PREFIX + j).id for j in desc.arm_joints]
    qadr = model.jnt_qposadr[jids].astype(np.int64)
    dofs = model.jnt_dofadr[jids].astype(np.int64)
    if desc.home_qpos is not None:
        home = np.asarray(desc.home_qpos, dtype=np.float64)
        data.qpos[qadr] = home
        mujoco.mj_kinematics(model, data)
        quat = np.zeros(4)
        mujoco.mju_mat2Quat(quat, data.site_xmat[site])
    else:
        quat = DOWN_QUAT.copy()
        home = home_ik(model, data, site, dofs, qadr, np.asarray(home_tcp, dtype=np.float64), quat)
    ref_rot.quat = list(quat)
    del ref_pos
    _add_wrist_camera(scene, model, site, desc)
    names = ("osc_x", "osc_y", "osc_z", "osc_rx", "osc_ry", "osc_rz")
    for i, name in enumerate(names):
        gear = [0.0] * 6
        gear[i] = 1.0
        rot = i >= 3
        act = scene.add_actuator(name=name, trntype=mujoco.mjtTrn.mjTRN_SITE, target=PREFIX + desc.ee_site,
                                 refsite="osc_ref_rot" if rot else "osc_ref_pos", gear=gear)
        kp, kv = (desc.kp_rot, desc.kv_rot) if rot else (desc.kp_pos, desc.kv_pos)
        act.set_to_position(kp=kp, kv=kv)
        act.ctrllimited = mujoco.mjtLimited.mjLIMITED_FALSE
        act.forcelimited = mujoco.mjtLimited.mjLIMITED_TRUE
        lim = desc.torque_limit if rot else desc.force_limit
        act.forcerange = [-lim, lim]
    model = scene.compile()
    grip = model.actuator(PREFIX + desc.gripper_actuator).id
    fq = np.array([model.jnt_qposadr[model.joint(PREFIX + j).id] for j in desc.finger_joints], dtype=np.int64)
    built = BuiltRobot(
        ee_site=model.site(PREFIX + desc.ee_site).id, arm_qpos=qadr, arm_dof=dofs, finger_qpos=fq,
        gripper_act=grip, gripper_range=model.actuator_ctrlrange[grip].copy(),
        osc_act=np.array([model.actuator(n).id for n in names], dtype=np.int64), home_qpos=home,
        ref_rot_quat=quat, joint_vel_limit=np.full(len(jids), float(desc.joint_vel_limit)))
    return model, built


# Found with home_ik (tool centre point at (0.45, 0, 0.20), pointing down) and frozen here so
# that building our arm needs no IK and the home pose is exactly reproducible.
_ARM_HOME: tuple[float, ...] = (0.0, -1.14898511, 1.86679384, 0.0, 0.8529876, 0.0)

"""roborl.teleop: teleoperation devices, demo collection, the fixed-rate control loop and
interventions during online training (HIL-SERL).

- :mod:`~roborl.teleop.device`: the :class:`Device` protocol, :class:`Command`, :class:`Event`,
  action-layout mapping and the :class:`ZeroWatchdog`;
- :data:`DEVICES` (explicit registry) and :func:`make_device`: keyboard, gamepad, spacemouse, scripted;
- :class:`RateLoop`: fixed-rate loop with timestamps and overrun reporting;
- :class:`DemoCollector`: the ``roborl teleop`` session (keep / discard / resume);
- :mod:`~roborl.teleop.intervention`: :class:`InterventionSource` for the SAC runner.

pygame (gamepad) and hidapi (spacemouse) are optional: ``pip install 'roborl[teleop]'``.
"""
from roborl.teleop.collect import CollectSummary, DemoCollector
from roborl.teleop.config import (GamepadConfig, InterventionConfig, KeyboardConfig, ScriptedConfig,
                                  SpaceMouseConfig, TeleopConfig)
from roborl.teleop.device import (Command, Device, DeviceBase, Event, ZeroReportWarning, ZeroWatchdog,
                                  action_layout, from_env_action, to_env_action)
from roborl.teleop.intervention import (DeviceIntervention, InterventionRecorder, InterventionSource,
                                        ScriptedIntervention, build_intervention, run_episode)
from roborl.teleop.rate import RateLoop, RateStats
from roborl.teleop.registry import DEVICES, make_device

__all__ = [
    "Command", "Device", "DeviceBase", "Event", "ZeroReportWarning", "ZeroWatchdog", "action_layout",
    "from_env_action", "to_env_action", "DEVICES", "make_device", "RateLoop", "RateStats",
    "CollectSummary", "DemoCollector", "TeleopConfig", "KeyboardConfig", "GamepadConfig", "SpaceMouseConfig",
    "ScriptedConfig", "InterventionConfig", "InterventionSource", "DeviceIntervention", "ScriptedIntervention",
    "InterventionRecorder", "build_intervention", "run_episode",
]

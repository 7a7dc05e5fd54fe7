"""3Dconnexion SpaceMouse through hidapi (``import hid``; optional extra ``roborl[teleop]``).

Reads the raw HID reports directly (the protocol pyspacemouse decodes): report 1 carries
the translation x, y, z as little-endian int16 (newer models append rx, ry, rz in the
same report), report 2 the rotation, report 3 the button bitmask. The device only sends a
report when its state changes, so the last values are held. The frame mapping follows
HIL-SERL's SpaceMouse expert (push away = +x, left = +y, lift = +z).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from roborl.errors import UsageError
from roborl.teleop.config import SpaceMouseConfig
from roborl.teleop.device import Command, DeviceBase, _EventQueue

VENDOR_IDS = (0x046D, 0x256F)  # Logitech-era 3Dconnexion, 3Dconnexion


def _import_hid() -> Any:
    try:
        import hid
    except ImportError:
        raise UsageError("device 'spacemouse' needs hidapi (found: not installed); pip install 'roborl[teleop]'") from None
    return hid


def _describe(d: dict[str, Any]) -> str:
    name = (d.get("product_string") or "?").strip()
    return f"{d.get('vendor_id', 0):04x}:{d.get('product_id', 0):04x} {name} ({d.get('path', b'')!r})"


def find_spacemice(devices: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The HID entries that look like a 3Dconnexion SpaceMouse."""
    out = []
    for d in devices:
        name = (d.get("product_string") or "").lower()
        if d.get("vendor_id") in VENDOR_IDS and ("space" in name or "3dconnexion" in (d.get("manufacturer_string") or "").lower()):
            out.append(d)
    return out


def decode_report(data: list[int] | bytes, axes: np.ndarray, buttons: set[int]) -> None:
    """Update ``axes`` [6] (raw counts x, y, z, rx, ry, rz) and the pressed ``buttons`` from one report."""
    if not data:
        return
    b = bytes(data)

    def i16(k: int) -> int:
        return int.from_bytes(b[k:k + 2], "little", signed=True)

    rid = b[0]
    if rid == 1 and len(b) >= 7:
        axes[0:3] = (i16(1), i16(3), i16(5))
        if len(b) >= 13:
            axes[3:6] = (i16(7), i16(9), i16(11))
    elif rid == 2 and len(b) >= 7:
        axes[3:6] = (i16(1), i16(3), i16(5))
    elif rid == 3:
        buttons.clear()
        for byte_i, byte in enumerate(b[1:]):
            for bit in range(8):
                if byte & (1 << bit):
                    buttons.add(byte_i * 8 + bit)


class SpaceMouseDevice(DeviceBase):
    name = "spacemouse"

    def __init__(self, cfg: SpaceMouseConfig | None = None, *, deadzone: float = 0.05, sensitivity: float = 1.0,
                 rot_sensitivity: float = 1.0) -> None:
        super().__init__(deadzone=deadzone, sensitivity=sensitivity, rot_sensitivity=rot_sensitivity)
        self.cfg = cfg or SpaceMouseConfig()
        self._dev: Any = None
        self._raw = np.zeros(6)
        self._buttons: set[int] = set()
        self._events = _EventQueue()
        self._fresh = False

    def open(self) -> None:
        hid = _import_hid()
        devices = list(hid.enumerate())
        mice = find_spacemice(devices)
        if self.cfg.path is not None:
            mice = [d for d in devices if d.get("path") in (self.cfg.path, self.cfg.path.encode())]
        if not mice:
            listing = "; ".join(_describe(d) for d in devices) or "none"
            raise UsageError(f"device 'spacemouse': no SpaceMouse found (HID devices found: {listing}); "
                             f"plug it in and check permissions on /dev/hidraw* (udev rule)")
        dev = hid.device()
        try:
            dev.open_path(mice[0]["path"])
            dev.set_nonblocking(1)
        except (OSError, IOError) as e:
            raise UsageError(f"device 'spacemouse': cannot open {_describe(mice[0])}: {e}; "
                             f"check permissions on /dev/hidraw* (udev rule)") from None
        self._dev = dev

    def close(self) -> None:
        if self._dev is not None:
            self._dev.close()
            self._dev = None

    def read(self, obs: np.ndarray | None = None) -> Command:
        if self._dev is None:
            raise UsageError("device 'spacemouse': read() before open()")
        for _ in range(64):  # drain everything queued since the last control step
            try:
                data = self._dev.read(64)
            except (OSError, IOError) as e:
                raise UsageError(f"device 'spacemouse': read failed ({e}); was it unplugged?") from None
            if not data:
                break
            self._fresh = True
            before = set(self._buttons)
            decode_report(data, self._raw, self._buttons)
            for btn in sorted(self._buttons - before):
                command = self.cfg.buttons.get(str(btn))
                if command is not None:
                    self._events.push(self.command_events(command))
        x, y, z, rx, ry, rz = self._raw / self.cfg.full_scale
        motion = self.shape(np.array([y, x, -z, rx, ry, -rz]))
        active = self._fresh or bool(np.any(motion != 0))
        self._fresh = False
        return Command(motion=motion, grip=self.grip, events=self._events.drain(), active=active)

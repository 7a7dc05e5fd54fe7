"""Terminal keyboard device: no display server needed.

A reader thread takes bytes from a file descriptor (the terminal by default, switched to
cbreak mode with termios and restored on close; or any pipe/stream a test writes key
events into) and turns them into key names ("w", "space", "up", ...). Terminals send no
key-up events, so a motion key drives its axis for ``hold_s`` seconds after each press;
the OS autorepeat keeps a held key alive.
"""
from __future__ import annotations

import os
import select
import sys
import threading
import time
from typing import IO, Any

import numpy as np

from roborl.errors import UsageError
from roborl.teleop.config import KeyboardConfig
from roborl.teleop.device import MOTION_NAMES, Command, DeviceBase, _EventQueue

_SPECIAL = {"\r": "enter", "\n": "enter", " ": "space", "\x7f": "backspace", "\x08": "backspace", "\t": "tab"}
_ARROWS = {"A": "up", "B": "down", "C": "right", "D": "left"}


def parse_keys(data: str) -> list[str]:
    """Bytes from a terminal -> key names. ``"w\\x1b[A "`` -> ``["w", "up", "space"]``."""
    keys: list[str] = []
    i = 0
    while i < len(data):
        ch = data[i]
        if ch == "\x1b":
            if data[i + 1:i + 2] in ("[", "O") and i + 2 < len(data):
                keys.append(_ARROWS.get(data[i + 2], "esc"))
                i += 3
                continue
            keys.append("esc")
        else:
            keys.append(_SPECIAL.get(ch, ch.lower()))
        i += 1
    return keys


class KeyboardDevice(DeviceBase):
    """Keyboard in a terminal (or any byte stream).

    ``stream``: a file object or fd to read key bytes from; default: stdin (must be a TTY).
    ``clock``: time source for key holds (monotonic seconds).
    """

    name = "keyboard"

    def __init__(self, cfg: KeyboardConfig | None = None, *, stream: IO[Any] | int | None = None, deadzone: float = 0.0,
                 sensitivity: float = 1.0, rot_sensitivity: float = 1.0, clock=time.monotonic) -> None:
        super().__init__(deadzone=deadzone, sensitivity=sensitivity, rot_sensitivity=rot_sensitivity)
        self.cfg = cfg or KeyboardConfig()
        self._stream = stream
        self._fd: int | None = None
        self._clock = clock
        self._lock = threading.Lock()
        self._held: dict[str, float] = {}       # axis command ("+x") -> time of the last press
        self._events = _EventQueue()
        self._fresh = False                     # a key arrived since the last read
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._saved_tty: Any = None
        self.keys_read = 0                      # total keys parsed (tests wait on it)
        self.unknown_keys: list[str] = []

    # --- lifecycle
    def open(self) -> None:
        if self._thread is not None:
            return
        if self._stream is None:
            if not sys.stdin.isatty():
                raise UsageError("device 'keyboard': stdin is not a terminal (found: no TTY); run in a terminal "
                                 "or use --device scripted for headless collection")
            self._fd = sys.stdin.fileno()
        else:
            self._fd = self._stream if isinstance(self._stream, int) else self._stream.fileno()
        if os.isatty(self._fd):
            import termios
            import tty

            self._saved_tty = termios.tcgetattr(self._fd)
            tty.setcbreak(self._fd)  # keys arrive one by one, no echo; Ctrl-C still interrupts
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="roborl-keyboard", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=1.0)
            self._thread = None
        if self._saved_tty is not None and self._fd is not None:
            import termios

            termios.tcsetattr(self._fd, termios.TCSADRAIN, self._saved_tty)
            self._saved_tty = None

    def _run(self) -> None:
        assert self._fd is not None
        while not self._stop.is_set():
            try:
                ready, _, _ = select.select([self._fd], [], [], 0.05)
                if not ready:
                    continue
                data = os.read(self._fd, 64)
            except (OSError, ValueError):
                return
            if not data:  # EOF: the stream was closed
                return
            # An escape sequence may be split across reads; give it a moment to complete.
            if data.endswith(b"\x1b") or data[-2:] in (b"\x1b[", b"\x1bO"):
                more, _, _ = select.select([self._fd], [], [], 0.02)
                if more:
                    data += os.read(self._fd, 8)
            self.feed(parse_keys(data.decode("utf-8", errors="ignore")))

    # --- input
    def feed(self, keys: list[str]) -> None:
        """Apply key presses (the reader thread calls this; programs may inject keys too)."""
        now = self._clock()
        with self._lock:
            for key in keys:
                self.keys_read += 1
                command = self.cfg.keymap.get(key)
                if command is None:
                    self.unknown_keys.append(key)
                    continue
                self._fresh = True
                if command[0] in "+-":
                    opposite = ("-" if command[0] == "+" else "+") + command[1:]
                    self._held.pop(opposite, None)  # the latest direction wins
                    self._held[command] = now
                else:
                    self._events.push(self.command_events(command))

    def read(self, obs: np.ndarray | None = None) -> Command:
        now = self._clock()
        raw = np.zeros(6)
        with self._lock:
            for command, t in list(self._held.items()):
                if now - t > self.cfg.hold_s:
                    del self._held[command]
                    continue
                raw[MOTION_NAMES.index(command[1:])] += 1.0 if command[0] == "+" else -1.0
            events = self._events.drain()
            active = self._fresh or bool(self._held)
            self._fresh = False
        return Command(motion=self.shape(raw), grip=self.grip, events=events, active=active)

"""Dataset interop: replay stores to and from LeRobot (v3) and Minari datasets.

Built on :class:`roborl.store.ReplayStore`'s public methods only (``open``/``create``,
``episodes``, ``read_rows``, ``start_episode``/``add_step``/``end_episode``).

:data:`FORMATS` maps ``--format`` to ``"module"``; each module has
``export_store(store: Path, out: Path, **opts) -> dict`` and
``import_dataset(src: str, store: Path, partition: str, **opts) -> dict``. The optional
packages (pyarrow; minari) are the ``interop`` extra: ``pip install 'roborl[interop]'``.
"""
from __future__ import annotations

FORMATS: dict[str, str] = {
    "lerobot": "roborl.interop.lerobot",
    "minari": "roborl.interop.minari",
}

__all__ = ["FORMATS"]

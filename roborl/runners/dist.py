"""Process-group helpers for data-parallel on-policy training (torch.distributed).

The layout follows rsl_rl's multi-GPU PPO: one process per rank, each with its own envs; the
launcher (``torchrun`` or ``roborl train --nproc N``, both torch's elastic launcher) sets
``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``; the learner
broadcasts rank 0's parameters at start and all-reduces one flat gradient per minibatch.

* :func:`world_from_env` reads the launcher's variables (a single process when absent).
* :func:`init` starts the default process group: gloo on CPU, NCCL on CUDA, with a timeout on
  every collective so a rank that stops answering ends the job instead of hanging it.
* :func:`launch` runs ``python -m roborl ARGS`` on ``nproc`` local processes through
  ``torch.distributed.run`` (no home-made process management) and turns a failed rank into one
  line and a nonzero exit code.
* :func:`all_mean_` / :func:`agree_any` are the small collectives the runner needs.
"""
from __future__ import annotations

import datetime
import os
import sys
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.distributed as dist

__all__ = ["World", "world_from_env", "init", "shutdown", "launch", "all_mean_", "agree_any", "broadcast_module_"]

# Seconds a collective may wait for the other ranks. Rank 0 evaluates and writes checkpoints
# while the others wait in the next all-reduce, so this must exceed the longest eval.
COLLECTIVE_TIMEOUT_S = 600.0
# Exit code of a rank whose collective failed because another rank went away: it exits quietly and
# the launcher names the rank that failed first (see launch).
PEER_LOST_EXIT = 75
# Env seeds of rank r start at run.seed + SEED_STRIDE * r (far from the n_envs seeds of rank 0).
SEED_STRIDE = 100_003


@dataclass(frozen=True)
class World:
    """Where this process is: ``rank`` in ``[0, size)``, ``local_rank`` on its machine."""

    size: int = 1
    rank: int = 0
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def world_from_env(env: dict[str, str] | None = None) -> World:
    """The launcher's ``WORLD_SIZE`` / ``RANK`` / ``LOCAL_RANK`` (absent: one process)."""
    from roborl.errors import UsageError

    e = os.environ if env is None else env
    try:
        size = int(e.get("WORLD_SIZE", "1"))
        rank = int(e.get("RANK", "0"))
        local = int(e.get("LOCAL_RANK", str(rank)))
    except ValueError:
        raise UsageError(f"WORLD_SIZE/RANK/LOCAL_RANK must be integers, got "
                         f"{e.get('WORLD_SIZE')!r}/{e.get('RANK')!r}/{e.get('LOCAL_RANK')!r}") from None
    if size < 1 or not 0 <= rank < size:
        raise UsageError(f"RANK {rank} is outside WORLD_SIZE {size}")
    return World(size, rank, local)


def rank_device(device: str, world: World) -> str:
    """``cuda`` -> ``cuda:LOCAL_RANK`` for a distributed run (one GPU per process); else unchanged."""
    if world.distributed and device == "cuda":
        return f"cuda:{world.local_rank}"
    return device


def init(world: World, device: str) -> None:
    """Start the default process group for ``world`` (a no-op for one process or when already started).

    gloo for CPU tensors, NCCL for CUDA. ``MASTER_ADDR``/``MASTER_PORT`` come from the launcher.
    """
    if not world.distributed or dist.is_initialized():
        return
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.set_device(torch.device(device))
    # torch.distributed.nn.functional binds ``group=group.WORLD`` as default arguments when it is
    # imported. Imported after the group starts (torch imports it lazily), those defaults keep the
    # default group alive past destroy_process_group: gloo's worker threads then outlive it and
    # free their last work while the interpreter finalizes, which aborts the process ("terminate
    # called without an active exception"; pytorch/pytorch PR 179291 describes the crash). Imported
    # first, the defaults hold None.
    import torch.distributed.nn  # noqa: F401

    dist.init_process_group("nccl" if cuda else "gloo", rank=world.rank, world_size=world.size,
                            timeout=datetime.timedelta(seconds=COLLECTIVE_TIMEOUT_S))


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def active() -> bool:
    """A process group with more than one rank is running."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def all_mean_(t: torch.Tensor) -> torch.Tensor:
    """In place: ``t`` <- mean of ``t`` over ranks (identity for one process)."""
    if active():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        t.div_(dist.get_world_size())
    return t


def agree_any(flag: bool, device: str | torch.device = "cpu") -> bool:
    """True on every rank when ``flag`` is true on any rank (one all-reduce; identity for one process)."""
    if not active():
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


@torch.no_grad()
def broadcast_module_(module: torch.nn.Module, src: int = 0) -> None:
    """Copy rank ``src``'s parameters and buffers into every rank's ``module`` (in place, so views survive)."""
    if not active():
        return
    for t in list(module.parameters()) + list(module.buffers()):
        if not t.is_contiguous():
            raise ValueError("broadcast_module_ needs contiguous tensors (broadcast a flat parameter buffer instead)")
        dist.broadcast(t.data, src)


def launch(nproc: int, module_args: Sequence[str]) -> int:
    """Run ``python -m roborl MODULE_ARGS`` on ``nproc`` local ranks with torch's elastic launcher.

    ``torch.distributed.run`` in standalone mode: a c10d rendezvous on a free localhost port, no
    restarts. When a rank fails, the launcher stops the others and this returns 1 after printing
    one line naming the rank and its exit code or signal (the launcher's own warnings are muted).
    """
    import logging

    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    for name in ("torch.distributed.elastic", "torch.distributed.run"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    args = get_args_parser().parse_args(["--standalone", "--nnodes", "1", "--nproc-per-node", str(nproc),
                                         "--max-restarts", "0", "--monitor-interval", "0.1",
                                         "--module", "roborl", *module_args])
    try:
        run(args)
    except ChildFailedError as e:
        # The first rank that failed on its own; the others were stopped by the launcher (SIGTERM).
        rank, f = min(e.failures.items(),
                      key=lambda kv: (kv[1].exitcode in (-15, PEER_LOST_EXIT), kv[1].timestamp, kv[0]))
        why = f"signal {f.signal_name()}" if f.exitcode < 0 else f"exit code {f.exitcode}"
        print(f"roborl: error: rank {rank} of {nproc} failed ({why}); the job was stopped", file=sys.stderr)
        return 1
    return 0

"""The processes of a run: accelerate's Accelerator (device and process group) and a clean end."""

from __future__ import annotations

import os
from typing import Any

import torch


def make_accelerator() -> Any:
    """Accelerate for this process: its device and, with several processes, the process group
    (gloo on CPUs, NCCL on GPUs). DDP comes from `accelerator.prepare`; FSDP from `shard_model`,
    because accelerate ignores an FSDP plugin on CPUs (see sharding.py)."""
    from accelerate import Accelerator

    several = int(os.environ.get("WORLD_SIZE", "1")) > 1
    # accelerate sets up a gloo process group for several CPU processes only when told cpu=True;
    # without it each process would silently train alone.
    return Accelerator(cpu=several and not torch.cuda.is_available())


def end_processes() -> None:
    """Wait for every rank, then close the process group. A rank that exits while another still
    writes the run can abort in the process group's teardown ("terminate called without an active
    exception", seen with gloo); the launcher then reports the whole run as failed."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()

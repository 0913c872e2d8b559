"""Resumable checkpoints: written to a staging folder, fsynced, renamed, and marked complete last.

Nothing in a checkpoint can run code when loaded: tensors go through safetensors, everything else
(optimizer hyper-parameters, scheduler, RNG, data position) through JSON.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from ..errors import CheckpointError
from ..model.loading import refuse_pickles

COMPLETE = "COMPLETE"
STAGING_PREFIX = ".staging-"
_STEP_DIR = re.compile(r"^step-(\d+)$")



@dataclass(frozen=True)
class TrainState:
    """Where the run is: enough to continue exactly as if it had never stopped."""

    step: int
    """Optimizer steps done."""
    epoch: int
    """Epoch of the next micro-batch."""
    index_in_epoch: int
    """Position of the next micro-batch's first example in that epoch's shuffled order."""
    accum_index: int
    """Micro-batches of the current accumulation cycle already done (0: saves happen at step boundaries)."""
    train_tokens: int
    val_loss: float | None
    """Validation loss measured at this step, if an evaluation ran here (used to pick the best)."""
    skipped_steps: int = 0
    """Steps skipped for a non-finite loss (with `skip_nonfinite`)."""
    replay_position: int = 0
    """Tokens of the general-text replay stream consumed (forgetting.replay_fraction / kl_weight)."""
    wall_seconds: float = 0.0
    """Wall time of the run's sessions up to this state (a resumed run adds its own to it)."""


def checkpoint_root(run_dir: Path) -> Path:
    return run_dir / "checkpoints"


def list_complete(run_dir: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints sorted by step number (numerically: step-10 after step-9)."""
    root = checkpoint_root(run_dir)
    found = []
    if root.is_dir():
        for child in root.iterdir():
            match = _STEP_DIR.match(child.name)
            if match and (child / COMPLETE).exists():
                found.append((int(match.group(1)), child))
    return sorted(found)


def clean_stale(run_dir: Path) -> list[Path]:
    """Remove staging folders and step folders without a completion marker (a crash mid-save)."""
    root = checkpoint_root(run_dir)
    removed = []
    if root.is_dir():
        for child in root.iterdir():
            incomplete = _STEP_DIR.match(child.name) and not (child / COMPLETE).exists()
            if child.name.startswith(STAGING_PREFIX) or incomplete:
                shutil.rmtree(child, ignore_errors=True)
                removed.append(child)
    return removed


def _state_dict_options(**kwargs: Any) -> Any:
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, **kwargs)


def gather_weights(model: Any, frozen: bool = False) -> dict[str, torch.Tensor]:
    """The full (unsharded) weights of `model` by parameter name: the trained ones, or with `frozen`
    every parameter and persistent buffer (full fine-tuning's final model).

    torch's distributed-checkpoint helpers do the gathering, so one call serves one process, DDP
    (pass the unwrapped model) and FSDP (sharded DTensors are all-gathered). With several
    processes it is a collective: every rank calls it, rank 0 receives the tensors on the CPU and
    the others get an empty dict.
    """
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    state = get_model_state_dict(model, options=_state_dict_options(cpu_offload=True, ignore_frozen_params=not frozen))
    # Tied weights appear under two names in a state dict; named_parameters() lists each once.
    keep = {name for name, p in model.named_parameters() if frozen or p.requires_grad}
    if frozen:
        keep |= {name for name, _ in model.named_buffers()}
    return {k: v.contiguous() for k, v in state.items() if k in keep}


def gather_trained(model: Any, optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The trained weights and the optimizer state (keyed by parameter name) for a checkpoint;
    a collective like `gather_weights`."""
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    state = get_optimizer_state_dict(model, optimizer, options=_state_dict_options(cpu_offload=True))
    return gather_weights(model), state


def save_checkpoint(run_dir: Path, weights: dict[str, torch.Tensor], optimizer_state: dict[str, Any], scheduler: Any,
                    state: TrainState, metrics: list[dict[str, Any]],
                    rng_states: list[tuple[dict[str, torch.Tensor], dict[str, Any]]] | None = None) -> Path:
    """Write checkpoints/step-N atomically; only a folder with its COMPLETE marker counts.

    `weights` and `optimizer_state` come from `gather_trained`; `rng_states` holds every
    process's `rng_state()` (rank order); default: this process only.
    """
    root = checkpoint_root(run_dir)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{state.step}"
    staging = root / f"{STAGING_PREFIX}step-{state.step}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    save_file(weights, str(staging / "trainable.safetensors"))
    opt_tensors, opt_meta = _optimizer_to_flat(optimizer_state)
    save_file(opt_tensors, str(staging / "optimizer.safetensors"))
    rng_states = rng_states or [rng_state()]
    rng_tensors = {f"rank{r}.{k}": v for r, (tensors, _) in enumerate(rng_states) for k, v in tensors.items()}
    rng_meta = [meta for _, meta in rng_states]
    save_file(rng_tensors, str(staging / "rng.safetensors"))
    _write_json(staging / "state.json", {
        "train_state": asdict(state), "optimizer": opt_meta, "scheduler": scheduler.state_dict(), "rng": rng_meta,
        "metrics": metrics,
    })
    for path in staging.iterdir():
        _fsync_file(path)
    _write_json(staging / COMPLETE, {"step": state.step})
    _fsync_file(staging / COMPLETE)
    if final.exists():
        shutil.rmtree(final)
    os.replace(staging, final)
    _fsync_dir(root)
    return final


def load_checkpoint(path: Path, model: Any, optimizer: torch.optim.Optimizer, scheduler: Any,
                    rank: int = 0, world_size: int = 1) -> tuple[TrainState, list[dict[str, Any]]]:
    """Restore weights, optimizer, scheduler and this process's RNG; safetensors and JSON only.

    Every rank reads the full tensors; under FSDP each keeps its own shard of them.
    """
    from torch.distributed.checkpoint.state_dict import set_optimizer_state_dict

    if not path.is_dir():
        raise CheckpointError(f"checkpoint '{path}' does not exist; complete ones: "
                              f"{', '.join(p.name for _, p in list_complete(path.parent.parent)) or 'none'}")
    if not (path / COMPLETE).exists():
        raise CheckpointError(f"checkpoint '{path}' is incomplete (no {COMPLETE} marker): a save was interrupted")
    refuse_pickles(path)
    meta = json.loads((path / "state.json").read_text(encoding="utf-8"))
    if len(meta["rng"]) != world_size:
        raise CheckpointError(f"checkpoint '{path}' was written by {len(meta['rng'])} process(es); resume it with "
                              f"the same number (now {world_size}) so every rank continues its own random stream")
    if any(isinstance(p, int) for group in meta["optimizer"]["param_groups"] for p in group["params"]):
        raise CheckpointError(f"checkpoint '{path}' keys its optimizer state by position (tunesmith before "
                              "FSDP support); resume it with the version that wrote it, or start the run again")
    load_trainable(path, model)
    set_optimizer_state_dict(model, optimizer, _optimizer_from_flat(load_file(str(path / "optimizer.safetensors")),
                                                                     meta["optimizer"]),
                             options=_state_dict_options())
    scheduler.load_state_dict(meta["scheduler"])
    prefix = f"rank{rank}."
    rng_tensors = {k[len(prefix):]: v for k, v in load_file(str(path / "rng.safetensors")).items()
                   if k.startswith(prefix)}
    _set_rng_state(rng_tensors, meta["rng"][rank])
    return TrainState(**meta["train_state"]), meta["metrics"]


def read_trainable(path: Path) -> dict[str, torch.Tensor]:
    """A checkpoint's trained weights by parameter name (safetensors only)."""
    refuse_pickles(path)
    return load_file(str(path / "trainable.safetensors"))


def load_trainable(path: Path, model: Any) -> None:
    """Copy a checkpoint's trained weights into `model` (sharded or not; frozen weights untouched)."""
    from torch.distributed.checkpoint.state_dict import set_model_state_dict

    weights = read_trainable(path)
    missing = [n for n, p in model.named_parameters() if p.requires_grad and n not in weights]
    if missing:
        raise CheckpointError(f"checkpoint '{path}' lacks {len(missing)} trained tensors (first: {missing[0]}): "
                              "it belongs to a different method or model")
    set_model_state_dict(model, weights, options=_state_dict_options(strict=False))


def read_train_state(path: Path) -> TrainState:
    meta = json.loads((path / "state.json").read_text(encoding="utf-8"))
    return TrainState(**meta["train_state"])


def apply_retention(run_dir: Path, keep_last: int, newest_step: int, protected: set[int] = frozenset()) -> list[Path]:
    """Delete old checkpoints, keeping the last `keep_last`, the best by val_loss, the newest, and
    the `protected` steps (the best within the forgetting budget)."""
    complete = list_complete(run_dir)
    keep = {step for step, _ in complete[-keep_last:]} if keep_last > 0 else set()
    keep.add(newest_step)
    keep.update(protected)
    scored = [(read_train_state(p).val_loss, step) for step, p in complete]
    scored = [(v, s) for v, s in scored if v is not None]
    if scored:
        keep.add(min(scored)[1])
    removed = []
    for step, path in complete:
        if step not in keep:
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def checkpoint_bytes(model: Any) -> int:
    """Estimated size of one checkpoint: trained weights plus AdamW's two moments, fp32."""
    n = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return n * 4 * 3 + (1 << 20)


# --- optimizer state <-> flat tensors + JSON (torch's own format would need pickle)

def _optimizer_to_flat(state_dict: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """A state dict keyed by parameter name (`gather_trained`) as `name.key` tensors + JSON."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for param, param_state in state_dict.get("state", {}).items():
        for key, value in param_state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{param}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(param), {})[key] = value
    if not tensors:  # safetensors wants at least one tensor
        tensors["_empty"] = torch.zeros(1)
    return tensors, {"param_groups": state_dict.get("param_groups", []), "scalars": scalars}


def _optimizer_from_flat(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[str, dict[str, Any]] = {}
    for name, tensor in tensors.items():
        if name == "_empty":
            continue
        param, key = name.rsplit(".", 1)  # parameter names hold dots, AdamW's keys (exp_avg, step) do not
        state.setdefault(param, {})[key] = tensor
    for param, values in meta["scalars"].items():
        state.setdefault(param, {}).update(values)
    return {"state": state, "param_groups": meta["param_groups"]}


# --- RNG state

def rng_state() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """This process's random generators: Python and NumPy as JSON-able data, torch as tensors."""
    version, internal, gauss = random.getstate()
    np_state = np.random.get_state()
    tensors = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"torch_cuda_{i}"] = s
    meta = {
        "python": [version, list(internal), gauss],
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
    }
    return tensors, meta


def _set_rng_state(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    version, internal, gauss = meta["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = meta["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(tensors["torch_cpu"])
    cuda = [tensors[k] for k in sorted(tensors) if k.startswith("torch_cuda_")]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data), encoding="utf-8")


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

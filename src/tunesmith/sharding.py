"""FSDP for several processes: torch's FSDP2 `fully_shard` on each decoder layer, then the root.

tunesmith calls torch directly, the same way on CPUs and GPUs (as torchtune's distributed recipes
do), because Accelerate 1.15 shards only on accelerators: with CPU processes it keeps
`distributed_type` MULTI_CPU and wraps the model in DDP, silently ignoring an FSDP plugin
(accelerate/state.py, AcceleratorState.__init__). torch's FSDP2 itself runs on CPUs over gloo.
"""

from __future__ import annotations

from typing import Any


def layer_classes(model: Any) -> set[str]:
    """Class names of the model's repeated blocks: transformers' `_no_split_modules` (e.g.
    LlamaDecoderLayer), the same units accelerate's FSDP auto-wrap policy shards."""
    return {name for module in model.modules() for name in (getattr(module, "_no_split_modules", None) or [])}


def shard_model(model: Any) -> Any:
    """Shard `model` in place across the default process group and return it.

    Each decoder layer is its own unit (its weights are gathered just for its forward and backward,
    then freed), and the root holds the rest: embeddings, the tied LM head, the final norm. Tied
    weights must stay in one unit, which the root guarantees. Parameter names do not change, so
    checkpoints keep the names of an unsharded model.
    """
    from torch.distributed.fsdp import fully_shard

    names = layer_classes(model)
    for module in [m for m in model.modules() if type(m).__name__ in names]:
        fully_shard(module, reshard_after_forward=True)
    # The root too, although torch keeps it gathered by default: after a forward without a backward
    # (evaluation) its parameters would stay unsharded, and the optimizer, which holds the sharded
    # ones, could no longer be matched to the model by the checkpoint's state-dict helpers.
    fully_shard(model, reshard_after_forward=True)
    return model


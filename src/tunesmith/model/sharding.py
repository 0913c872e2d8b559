"""The model's decoder layers as units: FSDP for several processes (torch's FSDP2 `fully_shard` on
each decoder layer, then the root) and `compile: true` (torch.compile per layer).

tunesmith calls torch directly, the same way on CPUs and GPUs (as torchtune's distributed recipes
do), because Accelerate 1.15 shards only on accelerators: with CPU processes it keeps
`distributed_type` MULTI_CPU and wraps the model in DDP, silently ignoring an FSDP plugin
(accelerate/state.py, AcceleratorState.__init__). torch's FSDP2 itself runs on CPUs over gloo.
"""

from __future__ import annotations

import os
import shutil
from typing import Any

from ..config import ConfigError


def transformers_model(model: Any) -> Any:
    """The outermost transformers model in `model` (inside a peft wrapper, or `model` itself): the
    module whose class declares `_no_split_modules`; `model` when none does."""
    return next((m for m in model.modules() if getattr(type(m), "_no_split_modules", None)), model)


def decoder_layers(model: Any) -> list[Any]:
    """The repeated blocks of `model`: the classes in transformers' `_no_split_modules` (e.g. LlamaDecoderLayer)."""
    root = transformers_model(model)
    names = set(getattr(type(root), "_no_split_modules", None) or [])
    return [m for m in root.modules() if type(m).__name__ in names]


def compile_layers(model: Any) -> int:
    """torch.compile each decoder layer in place; returns how many. In place (`Module.compile`), so
    parameter names, checkpoints and the adapter files stay those of the eager model; per layer,
    so one compiled graph serves every layer and the packed attention's per-example loop only
    breaks the graph inside attention. Shapes are dynamic: packed rows change length every step."""
    if not any(shutil.which(c) for c in (os.environ.get("CXX", "g++"), "c++", "clang++")):
        raise ConfigError("compile: true needs a C++ compiler for torch.compile's inductor and none was found "
                          "(g++, c++, clang++ or $CXX); install one (e.g. apt install g++) or set compile: false")
    layers = decoder_layers(model)
    for layer in layers:
        layer.compile(dynamic=True)
    return len(layers)


def shard_model(model: Any) -> Any:
    """Shard `model` in place across the default process group and return it.

    Each decoder layer (the classes in transformers' `_no_split_modules`, e.g. LlamaDecoderLayer,
    the units accelerate's auto-wrap policy picks) is its own unit: its weights are gathered just
    for its forward and backward, then freed. The transformers model around them is the root and
    holds the rest: embeddings, the tied LM head, the final norm (tied weights must stay in one
    unit). The root is that model and not a peft wrapper around it, because `generate` (the
    forgetting probes) calls the transformers model directly, and a wrapper's hooks would not
    gather the root's weights. Parameter names do not change, so checkpoints keep the names of an
    unsharded model.
    """
    from torch.distributed.fsdp import fully_shard

    root = transformers_model(model)
    for module in decoder_layers(root):
        fully_shard(module, reshard_after_forward=True)
    # The root reshards too, although torch keeps a root gathered by default: after a forward
    # without a backward (evaluation) its parameters would stay unsharded, and the optimizer,
    # which holds the sharded ones, could no longer be matched to the model by the checkpoint's
    # state-dict helpers.
    fully_shard(root, reshard_after_forward=True)
    return model


def local_share(model: Any) -> tuple[int, int]:
    """(elements this process stores, elements of the whole model) over the model's parameters."""
    from torch.distributed.tensor import DTensor

    params = list(model.parameters())
    local = sum(p.to_local().numel() if isinstance(p, DTensor) else p.numel() for p in params)
    return local, sum(p.numel() for p in params)

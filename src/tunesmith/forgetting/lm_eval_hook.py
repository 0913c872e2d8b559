"""Optional: EleutherAI lm-evaluation-harness tasks as extra general probes, base vs tuned.

Only used when the user installed `lm-eval` and has a network for its data sets; nothing else in
tunesmith imports it, and no test needs it.
"""

from __future__ import annotations

import importlib.util
from typing import Any, Sequence

from ..model.base import base_view
from .probes import ProbeDataError


def require_lm_eval() -> None:
    """Fail early, with the fix, when lm-eval is not installed."""
    if importlib.util.find_spec("lm_eval") is None:
        raise ProbeDataError("lm-eval tasks need the lm-eval package: `pip install lm-eval` "
                             "(its data sets are downloaded, so a network is needed too)")


def lm_eval_scores(model: Any, tokenizer: Any, tasks: Sequence[str], limit: int | None = None,
                   base_model: Any | None = None) -> dict[str, Any]:
    """{"base": results, "tuned": results} from `lm_eval.simple_evaluate` on the same tasks.

    `results` is lm-eval's own {"task": {"metric,filter": value}} mapping. With peft the inner
    model carries the adapter layers, so the base pass is the same object with adapters disabled.
    """
    require_lm_eval()
    import lm_eval
    from lm_eval.models.huggingface import HFLM

    inner = model.get_base_model() if hasattr(model, "get_base_model") else model

    def run(hf_model: Any) -> dict[str, Any]:
        lm = HFLM(pretrained=hf_model, tokenizer=tokenizer, batch_size=1)
        return lm_eval.simple_evaluate(model=lm, tasks=list(tasks), limit=limit)["results"]

    with base_view(model, base_model)() as base:
        base_results = run(inner if base is model else base)
    return {"base": base_results, "tuned": run(inner)}

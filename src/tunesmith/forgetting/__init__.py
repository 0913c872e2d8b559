"""Catastrophic forgetting: general probes, base-vs-tuned measurement, the budget, mitigations."""

from .budget import budget_checks, within_budget
from .measure import ForgettingResult, ProbeScore, measure_probes, measure_probes_fast, probe_metrics_row
from .mitigate import ReplaySource, kl_to_base_loss, replay_tokens
from .probes import PROBE_SIZES, Probe, ProbeDataError, ProbeSizes, build_probes

__all__ = [
    "PROBE_SIZES", "ForgettingResult", "Probe", "ProbeDataError", "ProbeScore", "ProbeSizes", "ReplaySource",
    "budget_checks", "build_probes", "kl_to_base_loss", "measure_probes", "measure_probes_fast",
    "probe_metrics_row", "replay_tokens", "within_budget",
]

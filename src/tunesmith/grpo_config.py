"""The settings of reinforcement fine-tuning with GRPO (`objective: grpo`): sampling, advantages, the
clipped loss and its normalisation. docs/rft.md says which GRPO variant the defaults follow, and why."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

from .errors import require

LossType = Literal["dapo", "grpo", "bnpo", "dr_grpo"]
LOSS_TYPES: tuple[str, ...] = get_args(LossType)
RewardScaling = Literal["none", "group", "batch"]
SamplerName = Literal["auto", "transformers", "vllm"]
SAMPLERS: tuple[str, ...] = get_args(SamplerName)
REWARD_SCALINGS: tuple[str, ...] = get_args(RewardScaling)
VLLM_METHODS = ("lora", "qlora")
"""Methods whose policy vLLM can sample (it takes a LoRA adapter; it serves no DoRA nor full weights)."""


@dataclass(frozen=True)
class GrpoConfig:
    """GRPO's settings (Shao et al. 2024, DeepSeekMath, sec. 4.1), with the later fixes to its loss that
    TRL offers (DAPO, Yu et al. 2025; Dr. GRPO, Liu et al. 2025). Names follow TRL's GRPOConfig where
    the concept is the same (`group_size` is its `num_generations`)."""

    group_size: int = 8
    """Completions sampled per prompt. The advantage is a completion's reward against its group's mean,
    so a group needs 2 at least, and a group whose completions all score the same teaches nothing. 8
    is TRL's default; the cost of a step grows with it (every completion is decoded and scored)."""
    temperature: float = 1.0
    """Sampling temperature; the loss scores tokens under the same temperature (logits / temperature),
    as TRL does, so the ratio is to the policy that sampled. 1.0 samples the model's own distribution."""
    top_p: float = 1.0
    """Nucleus sampling: draw only from the most likely tokens whose mass reaches top_p. 1.0 (no cut,
    TRL's default) keeps the sampler the policy that the loss scores; a cut makes the samples
    off-policy for the tokens it removes."""
    max_completion_tokens: int = 128
    """Longest completion sampled; a longer one is cut there and still trained (its end-of-turn token
    missing). Decoding is the step's largest cost and grows with it. 128 covers the demo FAQ's answers
    (about 50 tokens) with room; TRL's 512 is sized for reasoning traces."""
    beta: float = 0.0
    """Weight of the per-token KL to the base (k3 estimator, Schulman 2020: exp(ref - p) - (ref - p) -
    1), the base being the model with its adapters disabled (the frozen copy with method full), as for
    DPO. 0 (TRL's default; DAPO and Dr. GRPO train without it) skips the base's forward pass;
    the forgetting budget and `forgetting.kl_weight` (KL on general prompts) still bound the drift.
    DeepSeekMath used 0.04."""
    kl_bias_correction: bool = True
    """Multiply the per-token KL by the policy ratio (whose value is 1 on-policy but whose gradient is
    not 0): the k3 term's gradient is then the reverse KL's, unbiased (DeepSeek-V3.2; TRL 1.16's
    `use_bias_correction_kl`, on by default). Without it, k3's gradient is that of a different divergence."""
    epsilon: float = 0.2
    """Clip range of the policy ratio below 1 (and above, unless `epsilon_high`): PPO's 0.2. With
    `num_iterations` 1 the ratio is 1 at every step and the clip never acts."""
    epsilon_high: float | None = None
    """Clip range above 1; None: `epsilon` (symmetric, as TRL). DAPO's clip-higher uses 0.28, so
    unlikely tokens that score well can grow faster."""
    loss_type: LossType = "dapo"
    """How the per-token losses are averaged. dapo: over every completion token of the step (each token
    weighs the same; TRL 1.16's default); grpo: per completion, then over completions (the paper's; a
    token of a short completion weighs more, which favours short right answers and long wrong ones);
    bnpo: over the tokens of each micro-batch; dr_grpo: summed, divided by completions x
    max_completion_tokens (a constant)."""
    scale_rewards: RewardScaling = "none"
    """Divide each advantage by its group's reward std (group, TRL's default and the paper's), the
    batch's (batch), or not at all (none: Dr. GRPO). Scaling gives a group whose completions nearly
    agree (a prompt almost always or almost never solved) as much weight as one that disagrees;
    none keeps the advantage in the reward's units. docs/rft.md has the measurement."""
    num_iterations: int = 1
    """Optimizer steps on each batch of samples (GRPO's mu). Above 1 the later steps are off-policy and
    the clip matters; 1 samples afresh for every step, as TRL's default."""
    sampler: SamplerName = "auto"
    """What draws a step's samples: transformers (the project's batched decoder, seeded per completion;
    everywhere), vllm (vLLM on an NVIDIA GPU, the policy's LoRA adapter handed over at every step;
    lora and qlora only, since vLLM serves no DoRA), or auto: vllm where CUDA is there, vllm is
    installed and the method is lora or qlora, else transformers. Never required."""
    judge_url: str | None = None
    """The OpenAI-compatible base URL (e.g. http://127.0.0.1:8000/v1, `tunesmith serve RUN`'s) that a
    score_model grader asks for each sample's score, in training and in `tunesmith eval`. Its key, if
    it needs one, comes from the environment (TUNESMITH_JUDGE_API_KEY), never from the config, since the
    run's config.yaml is written out. None: a score_model grader is refused before anything trains."""
    judge_model: str | None = None
    """Model id sent to the judge instead of each score_model grader's `model` (`tunesmith serve` names
    its model after the run)."""

    def __post_init__(self) -> None:
        require(self.group_size >= 2, "grpo.group_size",
                f"must be at least 2 (a group's mean is the baseline), got {self.group_size}")
        require(self.temperature > 0, "grpo.temperature", f"must be positive, got {self.temperature}")
        require(0 < self.top_p <= 1, "grpo.top_p", f"must be in (0, 1], got {self.top_p}")
        require(self.max_completion_tokens >= 1, "grpo.max_completion_tokens",
                f"must be at least 1, got {self.max_completion_tokens}")
        require(self.beta >= 0, "grpo.beta", f"must be non-negative, got {self.beta}")
        require(0 <= self.epsilon < 1, "grpo.epsilon", f"must be in [0, 1), got {self.epsilon}")
        require(self.epsilon_high is None or self.epsilon_high >= 0, "grpo.epsilon_high",
                f"must be non-negative, got {self.epsilon_high}")
        require(self.loss_type in LOSS_TYPES, "grpo.loss_type",
                f"must be one of {', '.join(LOSS_TYPES)}, got {self.loss_type!r}")
        require(self.scale_rewards in REWARD_SCALINGS, "grpo.scale_rewards",
                f"must be one of {', '.join(REWARD_SCALINGS)}, got {self.scale_rewards!r}")
        require(self.judge_url is None or str(self.judge_url).startswith(("http://", "https://")), "grpo.judge_url",
                f"must be an http:// or https:// URL (an OpenAI-compatible server's /v1), got {self.judge_url!r}")
        require(self.sampler in SAMPLERS, "grpo.sampler", f"must be one of {', '.join(SAMPLERS)}, got {self.sampler!r}")
        require(self.num_iterations >= 1, "grpo.num_iterations", f"must be at least 1, got {self.num_iterations}")

    @property
    def clip_high(self) -> float:
        """The clip range above 1 in force."""
        return self.epsilon if self.epsilon_high is None else self.epsilon_high

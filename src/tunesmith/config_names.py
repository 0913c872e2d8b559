"""What other fine-tuning tools (Axolotl, LLaMA-Factory, TRL, HF Trainer) call tunesmith's config keys:
only used to suggest the right name when a config or a flag uses theirs."""

OTHER_TOOLS_NAMES = {
    "learning_rate": "lr", "num_epochs": "epochs", "num_train_epochs": "epochs", "output_dir": "output",
    "model_name_or_path": "model", "base_model": "model", "dataset": "data", "train_file": "data",
    "eval_dataset": "eval", "validation_file": "eval", "micro_batch_size": "batch_size",
    "per_device_train_batch_size": "batch_size", "gradient_accumulation_steps": "grad_accum_steps",
    "max_seq_length": "max_seq_tokens", "sequence_len": "max_seq_tokens", "cutoff_len": "max_seq_tokens",
    "lora_r": "lora.r", "lora_alpha": "lora.alpha", "lora_dropout": "lora.dropout", "max_grad_norm": "grad_clip",
    "max_step": "max_steps", "steps": "max_steps", "warmup_steps": "warmup_ratio", "seq_len": "max_seq_tokens",
    # inside a section, the section's prefix first
    "lora.rank": "lora.r", "lora.lora_r": "lora.r", "lora.lora_alpha": "lora.alpha",
    "lora.lora_dropout": "lora.dropout",
    "lora.target": "lora.target_modules",
    "beta": "preference.beta", "dpo_beta": "preference.beta", "orpo_alpha": "preference.orpo_lambda",
    "loss_type": "objective",
}

OTHER_KEYS_VALUES = {"method": {"sft": "objective", "dpo": "objective", "orpo": "objective"}}
"""Values that other tools give one setting and tunesmith another (TRL's DPOTrainer is a 'method' beside
SFT; here the method is the kind of weights trained and DPO the objective): {key: {value: its key}}."""


def other_key_of(key: str, value: str) -> str | None:
    """The key that `value` belongs to when it was given to `key` (method dpo -> objective), else None."""
    return OTHER_KEYS_VALUES.get(key, {}).get(value)

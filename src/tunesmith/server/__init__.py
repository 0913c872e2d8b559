"""`tunesmith server`: OpenAI's fine-tuning API on this machine (files, jobs, events, checkpoints)
and chat with every tuned model, its state in SQLite under --home."""

"""Training machinery: batching, loss and accumulation, the schedule, checkpoints, the run directory
and the training events."""

"""Decoding: batched greedy generation and token-by-token streaming with stop strings."""

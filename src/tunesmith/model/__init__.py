"""The model: loading (the only caller of transformers Auto classes and peft), packed attention,
the SwiGLU MLP, the chunked output layer with its loss, and sharding."""

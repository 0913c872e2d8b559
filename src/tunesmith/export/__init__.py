"""Exports of a run: the adapter with a card, a merged model, GGUF with an Ollama Modelfile, each
checked against base + adapter before it is kept."""

"""The OpenAI-compatible HTTP server: the app and its pure request checks."""

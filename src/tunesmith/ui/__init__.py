"""The web page of `tunesmith server` (`tunesmith ui`): static files shipped in the package, and the JSON
routes it needs besides OpenAI's."""

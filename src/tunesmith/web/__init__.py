"""The HTTP layer that `serve`, `server` and `ui` share: the request guard (Host, Origin, API key),
the JSON body reader, OpenAI's error shapes, ids and lookups, and the supervisor of the worker
processes. It imports none of those three packages; they import it."""

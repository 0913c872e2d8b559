"""`tunesmith ui`'s app: the server's (server/app.py) with the page on top, its /ui/api routes, its
own files served without the key, and its task processes stopped with the server. The page sits on
the server, never the reverse: server/ does not import ui/."""

from __future__ import annotations

from typing import Any

from ..server.app import AppExtras, Home, ServerSettings, build_server_app
from .api import ui_routes
from .pages import PAGES, page_routes
from .tasks import TaskRunner


def build_ui_app(home: Home, settings: ServerSettings, model: Any, tokenizer: Any, base_id: str,
                 system_prompt: str | None = None) -> Any:
    """The ASGI app of `tunesmith server` and `tunesmith ui`: OpenAI's routes and the page's."""
    tasks = TaskRunner()
    routes = (*ui_routes(home.path, home.store, settings.config, settings.model, model, tokenizer, tasks),
              *page_routes())
    return build_server_app(home, settings, model, tokenizer, base_id, system_prompt,
                            AppExtras(routes, tuple(PAGES), (tasks.stop,)))

"""The page's own files (HTML, three JS modules, CSS, all in the package: no CDN, no build step), served
at / to anyone past the Host check: they hold no data, and a browser cannot send a key to load a page.
Every other path goes to the keyed app."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

from starlette.responses import FileResponse, Response

from ..serve.app import Guard

STATIC = Path(__file__).with_name("static")
PAGES = {"/": "index.html", "/ui/static/app.js": "app.js", "/ui/static/core.js": "core.js",
         "/ui/static/tasks.js": "tasks.js", "/ui/static/style.css": "style.css"}
TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}


class WithPages:
    """ASGI: PAGES from the package behind the Host check alone; the rest to `keyed` (its Guard asks for the key)."""

    def __init__(self, keyed: Guard, hosts: Iterable[str]) -> None:
        self.keyed = keyed
        self.app = keyed.app  # the Starlette app, its state (served models, scheduler) as the Guard has it
        self.pages = Guard(self._page, None, hosts)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] in PAGES and scope.get("method") in ("GET", "HEAD"):
            await self.pages(scope, receive, send)
        else:
            await self.keyed(scope, receive, send)

    @staticmethod
    async def _page(scope: Any, receive: Any, send: Any) -> None:
        name = PAGES[scope["path"]]
        response: Response = FileResponse(STATIC / name, media_type=TYPES[Path(name).suffix],
                                          headers={"Cache-Control": "no-cache"})
        await response(scope, receive, send)

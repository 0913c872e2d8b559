"""The page's own files (HTML, four JS modules, CSS, all in the package: no CDN, no build step), served
at / to anyone past the Host check: they hold no data, and a browser cannot send a key to load a page.
The guard lets PAGES through without the key (ui/app.py names them as open paths)."""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Route

STATIC = Path(__file__).with_name("static")
PAGES = {"/": "index.html", "/ui/static/app.js": "app.js", "/ui/static/core.js": "core.js",
         "/ui/static/tasks.js": "tasks.js", "/ui/static/grader.js": "grader.js", "/ui/static/style.css": "style.css"}
TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
         ".css": "text/css; charset=utf-8"}


async def _page(request: Request) -> Response:
    name = PAGES[request.url.path]
    return FileResponse(STATIC / name, media_type=TYPES[Path(name).suffix], headers={"Cache-Control": "no-cache"})


def page_routes() -> list[Route]:
    """GET (and HEAD) of each of PAGES."""
    return [Route(path, _page, methods=["GET"]) for path in PAGES]

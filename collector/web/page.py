"""The search page's routes: `/` and its two assets, from this package.

The page calls the DNSDB API v2 of the same server with the analyst's own
API key (typed once, kept in the browser tab's sessionStorage), so serving
it needs no key and holds no secret. Its Content-Security-Policy lets it
load script, style and data from this origin only and run no inline
script: data shown in the page can never become code, even if a bug put
it in as markup. The files are read once, when the routes are made, so a
broken install stops `serve` at its start rather than failing requests.
"""

from __future__ import annotations

from importlib import resources

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

ASSETS = {  # path -> (file in this package, media type)
    "/": ("index.html", "text/html; charset=utf-8"),
    "/search.js": ("search.js", "text/javascript; charset=utf-8"),
    "/search.css": ("search.css", "text/css; charset=utf-8"),
}
POLICY = ("default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; "
          "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
HEADERS = {
    "Content-Security-Policy": POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # an upgrade changes the files: the browser asks again each time (a 200 of a few KiB)
    "Cache-Control": "no-cache",
}


def routes() -> list[Route]:
    """GET (and HEAD) routes for the page's files, and an empty favicon (browsers ask for one)."""
    files = resources.files(__package__)
    made = [Route(path, _asset(files.joinpath(name).read_bytes(), media)) for path, (name, media) in ASSETS.items()]
    return [*made, Route("/favicon.ico", _no_icon)]


def _asset(body: bytes, media: str):
    async def answer(request: Request) -> Response:
        return Response(body, media_type=media, headers=HEADERS)

    return answer


async def _no_icon(request: Request) -> Response:
    return Response(status_code=204, headers=HEADERS)

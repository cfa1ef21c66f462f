"""The query server's routes: DNSDB API v2 and COF on one store.

    GET /dnsdb/v2/ping                          {"ping":"ok"} (no key needed)
    GET /dnsdb/v2/rate_limit                    the key's limits (DNSDB's "rate" object)
    GET /dnsdb/v2/lookup/<lookup>               SAF lines, an `obj` a row (see `lookup`)
    GET /dnsdb/v2/summarize/<lookup>            SAF lines, one `obj`: count, num_results, times
    GET /pdns/query/<name or address>           COF lines (HTTP basic auth: key name, key)
    GET /                                       the search page (collector.web; it calls the API above)

Status codes as DNSDB documents them: 400 a malformed request (the body
says what), 403 no key or an unknown one, 404 no such lookup, 415 an
Accept: that excludes JSON, 416 an offset past the cap, 429 a key past
its window (and an address past its refused keys: key guessing), 503 a
key with too many lookups under way (or the server at its connections).
An error body is one text line, `Error: ...`. A key is never logged: a
refusal names the client's address.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import logging
import math
import time

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from .. import present
from ..config import Config
from ..keys import ApiKey, KeyRing
from ..store import Store
from ..web import page
from . import lookup as lookups
from .limits import Guards, Slots, Windows
from .stream import Streamed, cof_lines, saf_lookup, saf_summary

log = logging.getLogger("collector.api")
NDJSON = "application/x-ndjson"
_ACCEPTED = ("*/*", "application/*", NDJSON, "application/json", "application/jsonl")
_MAX_KEY = 256  # longer is no key of ours: refused before it is hashed


class Refusal(Exception):
    """An answer other than the lookup's: status, message, and seconds to wait (Retry-After)."""

    def __init__(self, status: int, message: str, wait: float | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.wait = status, message, wait

    def response(self, headers: dict[str, str] | None = None) -> Response:
        headers = dict(headers or {})
        if self.wait is not None:
            headers["Retry-After"] = str(math.ceil(self.wait))
        return PlainTextResponse(f"Error: {self.message}\n", self.status, headers=headers)


class QueryServer:
    """The state the routes share: the store, the keys, the limits."""

    def __init__(self, store: Store, keyring: KeyRing, cfg: Config) -> None:
        self.store, self.keyring, self.cfg = store, keyring, cfg
        self.windows = Windows()
        self.slots = Slots()
        self.guards = Guards(cfg.api_auth_failures)

    def app(self) -> Starlette:
        return Starlette(routes=[
            Route("/dnsdb/v2/ping", _guarded(self.ping)),
            Route("/dnsdb/v2/rate_limit", _guarded(self.rate_limit)),
            Route("/dnsdb/v2/{verb}/{rest:path}", _guarded(self.dnsdb)),
            Route("/pdns/query/{value:path}", _guarded(self.cof)),
            *page.routes(),
        ])

    # ---------------------------------------------------------------- routes
    async def ping(self, request: Request) -> Response:
        return _json_line({"ping": "ok"})

    async def rate_limit(self, request: Request) -> Response:
        key = self.authenticate(request, request.headers.get("x-api-key", ""))
        size, window = self._burst(key)
        return _json_line({"rate": {
            "reset": "n/a", "expires": "n/a", "limit": "unlimited", "remaining": "n/a",
            "results_max": key.results_max or self.cfg.api_results_max, "offset_max": self.cfg.api_offset_max,
            "burst_size": size, "burst_window": window}})

    async def dnsdb(self, request: Request) -> Response:
        key = self.authenticate(request, request.headers.get("x-api-key", ""))
        verb = request.path_params["verb"]
        if verb not in ("lookup", "summarize"):
            raise lookups.NotFound(f"no verb {verb[:40]!r} (lookup, summarize)")
        self.admit(request, key)
        lookup = lookups.parse_lookup(lookups.split_path(request.scope["raw_path"], f"/dnsdb/v2/{verb}/"))
        params = self.params(request, key)
        if verb == "lookup":
            to_obj = present.entry_json if lookup.kind == "rrset" else present.rdata_entry_json
            rows = lookup.rows(self.store, params.fences, params.limit + 1, params.offset)
            chunks = saf_lookup(rows, to_obj, params.limit, time.monotonic() + self.cfg.api_timeout)
        else:
            chunks = saf_summary(functools.partial(lookup.summarize, self.store, params.fences, params.limit,
                                                   params.offset, params.max_count), present.summary_json)
        return self.stream(request, key, chunks, NDJSON)

    async def cof(self, request: Request) -> Response:
        key = self.authenticate(request, _basic_secret(request), basic=True)
        self.admit(request, key)
        segments = lookups.split_path(request.scope["raw_path"], "/pdns/query/")
        if len(segments) != 1 or not segments[0]:
            raise lookups.BadRequest("a COF query is /pdns/query/NAME or /pdns/query/ADDRESS")
        params = self.params(request, key)
        fences, limit, offset = params.fences, params.limit, params.offset
        if _is_address(segments[0]):
            found = lookups.rdata_lookup("ip", segments[0], None)
            runs = [(found.rows(self.store, fences, limit, offset), present.rdata_entry_cof)]
        else:
            names = lookups.parse_lookup(["rrset", "name", segments[0]])
            targets = lookups.parse_lookup(["rdata", "name", segments[0]])
            runs = [(names.rows(self.store, fences, limit, offset), present.entry_cof),
                    (targets.rows(self.store, fences, limit, offset), present.rdata_entry_cof)]
        chunks = cof_lines([rows for rows, _ in runs], [to_obj for _, to_obj in runs], limit,
                           time.monotonic() + self.cfg.api_timeout)
        return self.stream(request, key, chunks, "application/json")

    # ------------------------------------------------------------ the checks
    def authenticate(self, request: Request, secret: str, basic: bool = False) -> ApiKey:
        """The key `secret` is, or a Refusal (429 for an address that guessed too often). A right
        key is let in even from an address that guessed: behind the TLS proxy the README asks
        for, every client has the proxy's address, and one guesser locked every analyst out;
        keys are 256 random bits, so what a guesser could learn from that is nothing."""
        address = _address(request)
        key = self.keyring.find(secret) if 0 < len(secret) <= _MAX_KEY else None
        if key is not None and basic and request.scope.get("cof_user") != key.name:
            key = None
        if key is None:
            wait = self.guards.blocked(address)
            if wait is not None:
                raise Refusal(429, "too many refused keys from this address", wait)
            why = "no API key" if not secret else "an unknown API key"
            if self.guards.refused(address):
                log.warning("refused %s from %s; it is refused for %d s (key guessing?)", why, address,
                            self.guards.seconds)
            else:
                log.warning("refused %s from %s", why, address)
            if basic:
                raise Refusal(401, "a key name and key are needed (HTTP basic auth)")
            raise Refusal(403, "missing or invalid API key")
        return key

    def admit(self, request: Request, key: ApiKey) -> None:
        """The key's window and its lookups under way; the client's Accept."""
        accept = request.headers.get("accept", "*/*")
        if not any(kind.split(";")[0].strip() in _ACCEPTED for kind in accept.split(",")):
            raise Refusal(415, "answers are JSON lines (application/x-ndjson)")
        wait = self.windows.take(key.name, *self._burst(key))
        if wait is not None:
            raise Refusal(429, "this key's requests are past its burst rate", wait)

    def params(self, request: Request, key: ApiKey) -> lookups.Params:
        return lookups.parse_params(list(request.query_params.multi_items()), default_limit=self.cfg.api_limit,
                                    results_max=key.results_max or self.cfg.api_results_max,
                                    offset_max=self.cfg.api_offset_max)

    def stream(self, request: Request, key: ApiKey, chunks, media_type: str) -> Response:
        if not self.slots.acquire(key.name, key.lookups or self.cfg.api_key_lookups):
            chunks.close()
            raise Refusal(503, "this key has too many lookups under way")
        log.debug("%s key %s: %s", _address(request), key.name, request.url.path)
        return Streamed(chunks, media_type, self.cfg.api_send_timeout, _address(request),
                        on_close=functools.partial(self.slots.release, key.name))

    def _burst(self, key: ApiKey) -> tuple[int, int]:
        return key.burst_size or self.cfg.api_burst_size, key.burst_window or self.cfg.api_burst_window


def _guarded(route):
    """Refusals and bad requests as their status; anything else a 500 and one log line, never a traceback."""

    @functools.wraps(route)
    async def answer(request: Request) -> Response:
        try:
            return await route(request)
        except Refusal as refusal:
            return refusal.response({"WWW-Authenticate": 'Basic realm="pdns"'} if refusal.status == 401 else None)
        except lookups.BadRequest as exc:
            status = 404 if isinstance(exc, lookups.NotFound) else 416 if isinstance(exc, lookups.OutOfRange) else 400
            return Refusal(status, str(exc)).response()
        except Exception as exc:
            log.error("%s %s failed: %s: %s", _address(request), request.url.path[:200], type(exc).__name__, exc)
            return Refusal(500, "the server failed to answer").response()

    return answer


def _json_line(obj: dict) -> Response:
    """One JSON line: clients of DNSDB (dnsdbq) read up to the newline."""
    return Response(json.dumps(obj, separators=(",", ":")) + "\n", media_type="application/json")


def _address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def _basic_secret(request: Request) -> str:
    """The password of an HTTP basic Authorization header ('' without one); its user goes in the scope."""
    kind, _, encoded = request.headers.get("authorization", "").partition(" ")
    if kind.lower() != "basic" or len(encoded) > 4 * _MAX_KEY:
        return ""
    try:
        user, _, secret = base64.b64decode(encoded, validate=True).decode("utf-8").partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return ""
    request.scope["cof_user"] = user
    return secret


def _is_address(text: str) -> bool:
    """Is a COF value an address, a prefix or a range (else a name)?"""
    try:
        lookups.parse_addresses(text)
    except lookups.BadRequest:
        return False
    return True

"""Asking the database over HTTP: `sie-dns-collector serve`.

- `lookup`: what a lookup asks (DNSDB's path and parameters) as a call on
  the store; the command line's `query` reads its arguments with it too;
- `limits`: per-key request windows and lookups under way, per-address
  refused keys;
- `stream`: answers as they are read from the store (SAF, COF lines),
  never built whole, with a deadline and a cut for clients that read nothing;
- `app`: the routes, keys and status codes (Starlette);
- `server`: uvicorn on a socket bound before privileges are dropped.
"""

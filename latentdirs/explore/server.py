"""The explorer's HTTP server: a Starlette app over an :class:`~latentdirs.explore.session.ExploreSession`.

Endpoints (all under one optional token; see :class:`Guard`):

* ``GET /`` and ``GET /static/{app.js,style.css}`` — the page, from the package (a fixed list of
  names: no path from a request ever reaches the file system);
* ``GET /api/config`` — the files, directions, strength ranges, classes and photos (JSON);
* ``GET /api/render?file=&index=&strength=&seed=|photo=&class=&truncation=&layers=&client=`` — the
  view as a PNG; render details in ``X-Render`` (JSON). Requests of one ``client`` (default: one
  shared slot) coalesce: a newer one replaces the one still waiting, which is answered ``204``
  (:mod:`latentdirs.explore.worker`);
* ``POST /api/label`` ``{"file", "index", "name"}`` — rewrites the direction file's label;
* ``POST /api/save`` ``{view fields…, "folder"}`` — writes the view as an edit into the save directory.

A refused value is answered 400 (``409`` when an output cannot be written) with one line of plain
text, ``Error: MESSAGE`` — the line the CLI prints for the same value. Nothing from a request is
evaluated, imported or used as a path; files are named by their number on the command line.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import re
import socket
import threading
import time
from importlib import resources
from typing import Any, AsyncIterator, Awaitable, Callable, Iterator
from urllib.parse import parse_qs, urlsplit

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from latentdirs.errors import LatentDirsError, OutputError, invalid
from latentdirs.explore.session import VIEW_FIELDS, ExploreSession
from latentdirs.explore.worker import SUPERSEDED, LatestWins

#: the page's files: name → media type. Only these are ever served.
STATIC = {"index.html": "text/html; charset=utf-8", "app.js": "text/javascript; charset=utf-8",
          "style.css": "text/css; charset=utf-8"}
#: host names a loopback-only server answers to (a DNS-rebinding page arrives under another name)
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")
_CLIENT = re.compile(r"[A-Za-z0-9_-]{1,64}")
_MAX_BODY = 16 * 1024
#: what every response carries: no caching, no sniffing, nothing from other origins
_HEADERS = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
            "Content-Security-Policy": "default-src 'self'; img-src 'self' blob:; object-src 'none'; "
                                       "frame-ancestors 'none'; base-uri 'none'; form-action 'none'"}

Rename = Callable[[str], str]


def error_response(error: LatentDirsError, rename: Rename) -> PlainTextResponse:
    """The CLI's one-line refusal (``Error: …``) as a 4xx response."""
    line = " ".join(rename(str(error)).split())  # one line, whatever the message held
    status = 409 if isinstance(error, OutputError) else 400
    return PlainTextResponse(f"Error: {line}\n", status_code=status, headers=_HEADERS)


class Guard:
    """ASGI middleware in front of every request.

    * ``token`` (set when the server listens beyond loopback): every request must carry
      ``?token=…`` (compared in constant time), else 403 — static files and the page included;
    * without a token, the ``Host`` header must name the loopback address, so a web page that
      rebinds its own domain to 127.0.0.1 cannot read or drive the explorer;
    * ``POST`` must send ``application/json`` with no foreign ``Origin``: a cross-site form can send
      neither, so no other site can label or save through the user's browser.
    """

    def __init__(self, app: Any, *, token: str | None) -> None:
        self.app, self.token = app, token
        self.worker: LatestWins | None = None  # the app's render worker (create_app sets it)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refusal = self._refusal(scope)
        if refusal is not None:
            await PlainTextResponse(f"Error: {refusal}\n", status_code=403, headers=_HEADERS)(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _refusal(self, scope: dict[str, Any]) -> str | None:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        host = headers.get("host", "")
        if self.token is not None:
            given = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token", [""])[-1]
            if not hmac.compare_digest(given.encode(), self.token.encode()):
                return "token: missing or wrong; allowed: the token in the URL latentdirs explore printed"
        elif _host_name(host) not in LOOPBACK_NAMES:
            return (f"host: got {host!r}; allowed: {', '.join(LOOPBACK_NAMES)}. This explorer listens on "
                    "loopback only; start it with --host to serve other names (a token is then required)")
        if scope["method"] == "POST":
            if headers.get("content-type", "").split(";")[0].strip() != "application/json":
                return "content-type: allowed: application/json"
            origin = headers.get("origin")
            if origin is not None and urlsplit(origin).netloc != host:
                return f"origin: got {origin!r}; allowed: this explorer's own pages"
        return None


def _host_name(host: str) -> str:
    """``Host`` without its port (``[::1]:8000`` → ``[::1]``)."""
    if host.startswith("["):
        return host.split("]", 1)[0] + "]"
    return host.rsplit(":", 1)[0] if ":" in host else host


def create_app(session: ExploreSession, *, token: str | None = None, rename: Rename = lambda m: m,
               worker: LatestWins | None = None) -> Guard:
    """The explorer as an ASGI app.

    ``rename`` turns a library message into the CLI's (``indices: …`` → ``--indices: …``; the CLI
    passes its own); ``token``: see :class:`Guard`. Renders, labels and saves run one at a time on
    ``worker`` (one is made when not given).
    """
    worker = worker or LatestWins()
    static = {name: resources.files("latentdirs.explore").joinpath("static", name).read_bytes() for name in STATIC}
    query = "" if token is None else f"?token={token}"  # token_urlsafe: nothing to escape in HTML
    static["index.html"] = static["index.html"].replace(b"__QUERY__", query.encode())

    def guarded(handler: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
        async def run(request: Request) -> Response:
            try:
                return await handler(request)
            except LatentDirsError as error:
                return error_response(error, rename)
        return run

    async def on_worker(job: Callable[[], Any], key: str | None = None) -> Any:
        return await asyncio.wrap_future(worker.submit(job, key=key))

    async def page(request: Request) -> Response:
        name = request.path_params.get("name", "index.html")
        if name not in STATIC:
            return PlainTextResponse("Error: not found\n", status_code=404, headers=_HEADERS)
        return Response(static[name], media_type=STATIC[name], headers=_HEADERS)

    async def config(request: Request) -> Response:
        _only(request.query_params, ())
        return JSONResponse(session.config(), headers=_HEADERS)

    async def render(request: Request) -> Response:
        fields = {k: v for k, v in request.query_params.items() if k not in ("client", "token")}
        view = session.parse_view(fields)  # refused here, before it waits for the worker
        client = request.query_params.get("client", "anonymous")  # requests without one share a slot
        if not _CLIENT.fullmatch(client):
            raise invalid("client", client, "1-64 letters, digits, '_' or '-' (the page sends its own)")
        result = await on_worker(lambda: session.render(view), key=client)
        if result is SUPERSEDED:  # a newer request of this client replaced it
            return Response(status_code=204, headers={**_HEADERS, "X-Superseded": "1"})
        png, info = result
        return Response(png, media_type="image/png", headers={**_HEADERS, "X-Render": json.dumps(info)})

    async def label(request: Request) -> Response:
        body = await _json(request, ("file", "index", "name"))
        labels = await on_worker(lambda: session.label(body.get("file"), body.get("index"), body.get("name")))
        return JSONResponse({"labels": {str(k): v for k, v in labels.items()}}, headers=_HEADERS)

    async def save(request: Request) -> Response:
        body = await _json(request, VIEW_FIELDS + ("folder",))
        view = session.parse_view({k: v for k, v in body.items() if k != "folder"})
        manifest = await on_worker(lambda: session.save(view, body.get("folder")))
        return JSONResponse({"folder": body["folder"], "command": manifest["command"], "manifest": manifest},
                            headers=_HEADERS)

    routes = [Route("/", guarded(page)), Route("/static/{name}", guarded(page)),
              Route("/api/config", guarded(config)), Route("/api/render", guarded(render)),
              Route("/api/label", guarded(label), methods=["POST"]), Route("/api/save", guarded(save), methods=["POST"])]
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        worker.close()  # the server stops: waiting renders are dropped, the running one finishes

    guard = Guard(Starlette(routes=routes, lifespan=lifespan), token=token)
    guard.worker = worker
    return guard


def _only(params: Any, allowed: tuple[str, ...]) -> None:
    extra = sorted(set(params) - set(allowed) - {"token"})
    if extra:
        raise invalid("parameter", extra[0], f"{', '.join(allowed) or 'none'} for this endpoint")


async def _json(request: Request, allowed: tuple[str, ...]) -> dict[str, Any]:
    """The request's JSON object, bounded in size, with only ``allowed`` keys."""
    _only(request.query_params, ())
    raw = b""
    async for chunk in request.stream():  # read no further than the limit, whatever the body's size
        raw += chunk
        if len(raw) > _MAX_BODY:
            raise invalid("body", f"more than {_MAX_BODY} bytes", f"at most {_MAX_BODY} bytes (a JSON object)")
    try:
        body = json.loads(raw)
    except ValueError:
        raise invalid("body", raw[:60].decode("utf-8", "replace"), "a JSON object") from None
    if not isinstance(body, dict):
        raise invalid("body", body, "a JSON object")
    _only(body, allowed)
    return body




def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` (port 0: a free one), so the URL is known before serving."""
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise invalid("port", port, "an integer from 0 to 65535 (0: any free port)")
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        listener = socket.socket(family, kind, proto)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(address)
    except OSError as error:
        raise OutputError(f"port: cannot listen on {host}:{port} ({error.strerror or error}); allowed: a free "
                          "port on an address of this machine. Choose another --port") from None
    listener.listen(64)
    return listener


def url_of(listener: socket.socket, host: str, token: str | None) -> str:
    """The page's address on ``listener`` (with the token when there is one)."""
    port = listener.getsockname()[1]
    shown = f"[{host}]" if ":" in host and not host.startswith("[") else host
    return f"http://{shown}:{port}/" + ("" if token is None else f"?token={token}")


def _server(app: Any) -> Any:
    import uvicorn

    return uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on"))


def serve(app: Any, listener: socket.socket) -> None:
    """Serve ``app`` on ``listener`` with uvicorn until interrupted (Ctrl-C)."""
    _server(app).run(sockets=[listener])


@contextlib.contextmanager
def serving_in_thread(app: Any, host: str = "127.0.0.1", port: int = 0,
                      token: str | None = None) -> Iterator[str]:
    """Serve ``app`` from a background thread while the block runs (notebooks, tests, benchmarks);
    yields the page's URL. The server stops, and its worker with it, when the block ends."""
    listener = bind(host, port)
    server = _server(app)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, name="latentdirs-explore-http",
                              daemon=True)
    thread.start()
    try:
        while not server.started:
            if not thread.is_alive():
                raise OutputError(f"port: the explorer server on {host} stopped while starting; allowed: a "
                                  "free port. Choose another")
            time.sleep(0.01)
        yield url_of(listener, host, token)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        listener.close()


__all__ = ["Guard", "LOOPBACK_NAMES", "bind", "create_app", "error_response", "serve", "serving_in_thread", "url_of"]

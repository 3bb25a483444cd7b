"""A real HTTP server playing the customer's web app: serves answer XML, records requests."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


@dataclass
class Route:
    body: str | bytes = ""
    status: int = 200
    delay: float = 0.0
    content_type: str = "application/xml"
    by_to: dict[str, str] | None = None  # answer documents keyed by the dialled user (To)
    fail_until: float = 0.0  # time.monotonic() before which the route answers 503 (an outage)


@dataclass
class Request:
    method: str
    path: str
    params: dict[str, str]
    headers: dict[str, str]
    at: float = field(default_factory=time.monotonic)
    status: int = 200
    query: str = ""  # the raw query string (a GET's parameters are in it)
    form: dict[str, str] = field(default_factory=dict)  # a POST's form fields alone

    def plivo_valid(self, token: str, base: str) -> bool:
        """Do the official plivo SDK's validators (V3 and V2) accept this request's signature
        headers? ``base`` is the server's ``scheme://host:port``."""
        from support.plivo_check import plivo_valid

        uri = base + self.path + (f"?{self.query}" if self.query else "")
        return plivo_valid(self.method, uri, self.form, self.headers, token)


class AnswerServer:
    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.requests: list[Request] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def _handle(self) -> None:
                url = urlsplit(self.path)
                params = {k: v[0] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
                fields: dict[str, str] = {}
                if self.command == "POST":
                    n = int(self.headers.get("Content-Length") or 0)
                    body = self.rfile.read(n).decode()
                    form = parse_qs(body, keep_blank_values=True)
                    fields = {k: v[0] for k, v in form.items()}
                    params.update(fields)
                req = Request(self.command, url.path, params, dict(self.headers.items()),
                              query=url.query, form=fields)
                server.requests.append(req)
                route = server.routes.get(url.path)
                if route is None:
                    req.status = 404
                    self.send_error(404)
                    return
                if time.monotonic() < route.fail_until:
                    req.status = 503
                    self.send_error(503)
                    return
                req.status = route.status
                if route.delay:
                    time.sleep(route.delay)
                body = route.body
                if route.by_to is not None:
                    body = route.by_to.get(params.get("To", ""), "")
                data = body.encode() if isinstance(body, str) else body
                try:
                    self.send_response(route.status)
                    self.send_header("Content-Type", route.content_type)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            do_GET = _handle
            do_POST = _handle

            def log_message(self, *args) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def route(self, path: str, body: str | bytes = "", **kw) -> str:
        self.routes[path] = Route(body=body, **kw)
        return self.url(path)

    def conference(self, path: str, room: str, before: str = "", after: str = "",
                   **attrs: str) -> str:
        """Serve `<Response>before<Conference ...>room</Conference>after</Response>`."""
        a = "".join(f' {k}="{v}"' for k, v in attrs.items())
        return self.route(
            path, f"<Response>{before}<Conference{a}>{room}</Conference>{after}</Response>")

    def per_user(self, path: str, documents: dict[str, str]) -> str:
        """Serve a different answer document for each dialled user."""
        self.routes[path] = Route(by_to=documents)
        return self.url(path)

    def requests_to(self, path: str, delivered: bool = False) -> list[Request]:
        """Requests to ``path``; with ``delivered``, only those answered 2xx."""
        return [r for r in self.requests
                if r.path == path and (not delivered or 200 <= r.status < 300)]

    def start(self) -> AnswerServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(5)

"""A real HTTP server playing the customer's web app: serves answer XML, records requests."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


@dataclass
class Route:
    body: str = ""
    status: int = 200
    delay: float = 0.0
    content_type: str = "application/xml"


@dataclass
class Request:
    method: str
    path: str
    params: dict[str, str]
    headers: dict[str, str]
    at: float = field(default_factory=time.monotonic)


class AnswerServer:
    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.requests: list[Request] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def _handle(self) -> None:
                url = urlsplit(self.path)
                params = {k: v[0] for k, v in parse_qs(url.query).items()}
                if self.command == "POST":
                    n = int(self.headers.get("Content-Length") or 0)
                    body = self.rfile.read(n).decode()
                    params.update({k: v[0] for k, v in parse_qs(body).items()})
                server.requests.append(
                    Request(self.command, url.path, params, dict(self.headers.items()))
                )
                route = server.routes.get(url.path)
                if route is None:
                    self.send_error(404)
                    return
                if route.delay:
                    time.sleep(route.delay)
                data = route.body.encode()
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

    def route(self, path: str, body: str = "", **kw) -> str:
        self.routes[path] = Route(body=body, **kw)
        return self.url(path)

    def conference(self, path: str, room: str, **attrs: str) -> str:
        """Serve `<Response><Conference ...>room</Conference></Response>` at ``path``."""
        a = "".join(f' {k}="{v}"' for k, v in attrs.items())
        return self.route(path, f"<Response><Conference{a}>{room}</Conference></Response>")

    def start(self) -> AnswerServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(5)

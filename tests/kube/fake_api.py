"""A fake clock and a scripted Kubernetes API for fast tests of dagster_repo/kube/client.py.

`FakeClock` moves only when something sleeps on it (or when the fake API says a watch ran to its
timeoutSeconds), and records every sleep. `FakeKubeAPI` is a small HTTP server on a free port of
127.0.0.1 that answers each request with the next scripted response for its method and path, so
the real `kubernetes` client builds the requests and parses the answers, watch streams included.
"""

from __future__ import annotations

import json
import socket
import struct
import sys
import threading
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import yaml


class FakeClock:
    def __init__(self, start: float = 1000.0):
        self.start = start
        self.t = start
        self.sleeps: list[float] = []
        self._due: list[tuple[float, Callable[[], None]]] = []

    def now(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0, seconds
        self.sleeps.append(seconds)
        self.advance(seconds)

    def advance(self, seconds: float) -> None:
        self.t += seconds
        due = [item for item in self._due if item[0] <= self.t]
        for item in due:
            self._due.remove(item)
            item[1]()

    def at(self, when: float, action: Callable[[], None]) -> None:
        """Run `action` once the clock reaches `when` (the API server comes back, ...)."""
        self._due.append((when, action))


# -- scripted responses -----------------------------------------------------------------------------


def status(code: int, reason: str, message: str) -> dict:
    """A metav1.Status, as the API server sends with an error."""
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


@dataclass
class Reply:
    code: int
    body: dict | str = field(default_factory=dict)

    def send(self, handler: BaseHTTPRequestHandler, api: FakeKubeAPI, query: dict) -> None:
        text = self.body if isinstance(self.body, str) else json.dumps(self.body)
        data = text.encode()
        handler.send_response(self.code)
        handler.send_header("Content-Type", "text/plain" if isinstance(self.body, str) else "application/json")
        handler.send_header("Content-Length", str(len(data)))
        handler.send_header("Connection", "close")
        handler.end_headers()
        handler.wfile.write(data)


def error(code: int, reason: str, message: str) -> Reply:
    return Reply(code, status(code, reason, message))


@dataclass
class Stream:
    """A watch response: `events`, one JSON line each, then `end`:
    - "timeout": the server ends the watch at its timeoutSeconds (the fake clock moves by as much);
    - "drop": the connection is lost mid-stream (no final chunk);
    - "open": the stream stays open until the client hangs up."""

    events: list[dict]
    end: str = "open"

    def send(self, handler: BaseHTTPRequestHandler, api: FakeKubeAPI, query: dict) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Transfer-Encoding", "chunked")
        handler.send_header("Connection", "close")
        handler.end_headers()
        for event in self.events:
            line = (json.dumps(event) + "\n").encode()
            handler.wfile.write(b"%x\r\n%s\r\n" % (len(line), line))
        handler.wfile.flush()
        if self.end == "timeout":
            api.clock.advance(int(query["timeoutSeconds"]))
            handler.wfile.write(b"0\r\n\r\n")
        elif self.end == "drop":
            handler.connection.shutdown(socket.SHUT_RDWR)
        else:
            handler.connection.settimeout(10)
            while handler.connection.recv(1024):
                pass


class Reset:
    """The connection is reset (RST) after the request arrived, before any response."""

    def send(self, handler: BaseHTTPRequestHandler, api: FakeKubeAPI, query: dict) -> None:
        handler.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        handler.connection.close()


RESET = Reset()


def event(kind: str, obj: dict) -> dict:
    return {"type": kind, "object": obj}


def bookmark(resource_version: str) -> dict:
    return event(
        "BOOKMARK",
        {
            "kind": "SparkApplication",
            "apiVersion": "sparkoperator.k8s.io/v1beta2",
            "metadata": {"resourceVersion": resource_version},
        },
    )


# -- the server --------------------------------------------------------------------------------------


@dataclass
class Seen:
    method: str
    path: str
    query: dict
    body: dict | None
    at: float  # the fake clock's time


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _any(self) -> None:
        self.server.api.answer(self)
        self.close_connection = True

    do_GET = do_POST = do_DELETE = do_PATCH = do_PUT = _any

    def finish(self) -> None:
        try:
            super().finish()
        except OSError:  # the scripted response closed or reset the connection
            pass

    def log_message(self, format, *args) -> None:
        pass


class FakeKubeAPI:
    """Answers each request with the next response scripted for its method and path (a watch is
    `"GET", "<collection>?watch"`); an unscripted request gets 418 and is kept in `unscripted`."""

    def __init__(self, clock: FakeClock):
        self.clock = clock
        self.requests: list[Seen] = []
        self.unscripted: list[Seen] = []
        self.errors: list[BaseException] = []
        self._scripts: dict[tuple[str, str], deque] = defaultdict(deque)
        self._lock = threading.Lock()
        self._server = self._serve(0)
        self.port = self._server.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def kubeconfig(self, path: Path) -> Path:
        path.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "current-context": "fake",
                    "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
                    "users": [{"name": "fake", "user": {"token": "fake-token"}}],
                    "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake"}}],
                }
            )
        )
        return path

    def script(self, method: str, path: str, *responses) -> None:
        self._scripts[(method, path)].extend(responses)

    def left_over(self) -> dict:
        return {key: list(queue) for key, queue in self._scripts.items() if queue}

    def seen(self, method: str, path: str) -> list[Seen]:
        return [r for r in self.requests if (r.method, r.path) == (method, path)]

    def answer(self, handler: BaseHTTPRequestHandler) -> None:
        url = urlsplit(handler.path)
        query = dict(parse_qsl(url.query))
        length = int(handler.headers.get("Content-Length") or 0)
        body = json.loads(handler.rfile.read(length)) if length else None
        path = url.path + ("?watch" if query.get("watch", "").lower() == "true" else "")
        seen = Seen(handler.command, path, query, body, self.clock.now())
        with self._lock:
            self.requests.append(seen)
            queue = self._scripts[(handler.command, path)]
            response = queue.popleft() if queue else None
        if response is None:
            self.unscripted.append(seen)
            response = error(418, "Unscripted", f"no response scripted for {handler.command} {path}")
        response.send(handler, self, query)

    # -- outages ---------------------------------------------------------------------------------

    def down(self) -> None:
        """Stop listening: connections are refused."""
        self._server.shutdown()
        self._server.server_close()

    def up(self) -> None:
        self._server = self._serve(self.port)

    def _serve(self, port: int) -> ThreadingHTTPServer:
        api = self

        class Server(ThreadingHTTPServer):
            def handle_error(self, request, client_address) -> None:
                error = sys.exc_info()[1]
                # A client that closes with bytes still unread (a watch it is done with) hangs up with
                # a reset: how a client leaves, not a fault of the fake.
                if not isinstance(error, ConnectionResetError):
                    api.errors.append(error)

        server = Server(("127.0.0.1", port), _Handler)
        server.api = self
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True).start()
        return server

    def close(self) -> None:
        self.down()

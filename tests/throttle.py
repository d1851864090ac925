"""A reverse proxy on loopback that caps each connection's rate, as the object storage behind
many registries does (S3, a CDN): what several Range streams of one blob are for. It counts the
blob GETs it sees and the most it served at once. Used by tests/test_ranges.py and
benchmarks/push_pull.py."""

from __future__ import annotations

import http.client
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

_HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "upgrade"}
_PIECE = 64 << 10


def serve(handle: Callable[[BaseHTTPRequestHandler], None]) -> tuple[ThreadingHTTPServer, str]:
    """An HTTP/1.1 server on 127.0.0.1 (a free port) answering every method with ``handle``,
    in a thread; returns it and its ``host:port``."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *_args: object) -> None:
            pass

        def _any(self) -> None:
            handle(self)

        do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _any

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    return server, f"127.0.0.1:{server.server_address[1]}"


class ThrottledProxy:
    """Forwards to ``upstream`` (host:port); each answer's body goes at ``rate`` bytes/s."""

    def __init__(self, upstream: str, rate: float) -> None:
        self.upstream = upstream
        self.rate = rate
        self.gets: list[str | None] = []  # each blob GET's Range header (None: the whole blob)
        self.active = 0
        self.peak = 0
        self._lock = threading.Lock()
        self.server, self.host = serve(self._handle)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> ThrottledProxy:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else None
        # A header sent several times (skopeo's Accept) goes on as one list, not the last.
        headers = {
            k: ", ".join(handler.headers.get_all(k) or [])
            for k in dict.fromkeys(handler.headers.keys())
            if k.lower() not in _HOP
        }
        if handler.command == "GET" and "/blobs/" in handler.path:
            with self._lock:
                self.gets.append(handler.headers.get("Range"))
                self.active += 1
                self.peak = max(self.peak, self.active)
        upstream = http.client.HTTPConnection(self.upstream, timeout=60)
        try:
            upstream.request(handler.command, handler.path, body=body, headers=headers)
            response = upstream.getresponse()
            handler.send_response(response.status)
            for name, value in response.getheaders():
                if name.lower() not in _HOP:
                    handler.send_header(name, value)
            handler.end_headers()
            started = time.monotonic()
            sent = 0
            while handler.command != "HEAD" and (piece := response.read(_PIECE)):
                handler.wfile.write(piece)
                sent += len(piece)
                ahead = sent / self.rate - (time.monotonic() - started)
                if ahead > 0:
                    time.sleep(ahead)
        except OSError:
            handler.close_connection = True
        finally:
            upstream.close()
            if handler.command == "GET" and "/blobs/" in handler.path:
                with self._lock:
                    self.active -= 1

"""The image's system prompt for ``gguf-harness run``: an HTTP front that adds it to requests.

llama-server at the pinned llama.cpp has no ``--system-prompt-file`` (``_command`` takes it out
of the Cmd and smoke's client sends the prompt itself). A served model's clients are anyone's,
so ``run`` puts this proxy on the port asked for, with llama-server behind it on a free one: a
chat request with no system message of its own gets the prompt first, as smoke sends it
(``messages``; ``system`` for the Anthropic API, ``instructions`` for the Responses API);
everything else passes through as it is, streamed answers chunk by chunk.
"""

from __future__ import annotations

import http.client
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from harness.errors import SmokeError

from ._command import SYSTEM_PROMPT_FLAG, ServerCommand
from ._process import free_port
from ._server import Server

__all__ = ["front", "ports", "system_prompt_proxy", "with_system_prompt"]

# llama-server's routes that take a conversation, by where it puts a system prompt.
_MESSAGES = {"/chat/completions", "/v1/chat/completions", "/apply-template"}
_MESSAGES |= {f"{path}/input_tokens" for path in ("/chat/completions", "/v1/chat/completions")}
_FIELD = {
    "/v1/messages": "system",
    "/v1/messages/count_tokens": "system",
    "/responses": "instructions",
    "/v1/responses": "instructions",
    "/responses/input_tokens": "instructions",
    "/v1/responses/input_tokens": "instructions",
}
# Headers about one hop, never passed on (RFC 9110 7.6.1); the length is recomputed.
_HOP = {"connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding"}
_HOP |= {"upgrade", "content-length", "host", "expect"}
_CHUNK = 64 * 1024


def ports(command: ServerCommand, port: int, host: str = "127.0.0.1") -> tuple[int, str | None]:
    """Where ``gguf-harness run`` starts llama-server when asked for ``port``: there, or, for an
    image with a system prompt, on a free port behind the proxy; and a line saying so."""
    if command.system_prompt is None:
        return port, None
    inner = free_port(host)
    return inner, (
        f"{SYSTEM_PROMPT_FLAG} {command.system_prompt_file}: llama-server has no such flag; a"
        f" proxy on {host}:{port} puts the prompt first in each chat request without a system"
        f" message (llama-server on {host}:{inner})"
    )


@contextmanager
def front(server: Server, port: int) -> Iterator[str]:
    """The URL clients use for ``server``: itself, or the proxy on ``port`` that adds its
    system prompt, until the block ends."""
    prompt = server.command.system_prompt
    if prompt is None:
        yield server.url
        return
    with system_prompt_proxy(server.url, prompt, server.host, port) as url:
        yield url


def with_system_prompt(path: str, body: bytes, prompt: str) -> bytes:
    """``body`` of a request to ``path`` with ``prompt`` as its system prompt, when it is a
    conversation that has none of its own; else ``body`` unchanged."""
    route = urlsplit(path).path.rstrip("/") or "/"
    if route not in _MESSAGES and route not in _FIELD:
        return body
    try:
        data = json.loads(body)
    except ValueError:
        return body  # llama-server says what is wrong with it
    if not isinstance(data, dict):
        return body
    if route in _FIELD:
        if data.get(_FIELD[route]):
            return body
        data[_FIELD[route]] = prompt
    else:
        messages = data.get("messages")
        if not isinstance(messages, list) or any(
            isinstance(m, dict) and m.get("role") == "system" for m in messages
        ):
            return body
        data["messages"] = [{"role": "system", "content": prompt}, *messages]
    return json.dumps(data, ensure_ascii=False).encode()


@contextmanager
def system_prompt_proxy(upstream: str, prompt: str, host: str, port: int) -> Iterator[str]:
    """Serve on ``host:port`` in front of ``upstream`` (``http://HOST:PORT``) until the block
    ends; yields the proxy's URL."""
    target = urlsplit(upstream)
    handler = _handler(target.hostname or host, target.port, prompt)
    try:
        server = ThreadingHTTPServer((host, port), handler)
    except OSError as error:
        raise SmokeError(f"cannot listen on {host}:{port}: {error.strerror or error}") from None
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="system-prompt-proxy", daemon=True)
    thread.start()
    try:
        yield f"http://{host}:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _handler(host: str, port: int | None, prompt: str) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        # HTTP/1.1 for `Expect: 100-continue` (curl waits a second for it otherwise); one
        # request per connection: the end of an answer of unknown length is the close.
        protocol_version = "HTTP/1.1"

        def _forward(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length > 0 else b""
            if self.command == "POST":
                body = with_system_prompt(self.path, body, prompt)
            headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
            upstream = http.client.HTTPConnection(host, port, timeout=3600)
            try:
                upstream.request(self.command, self.path, body or None, headers)
                reply = upstream.getresponse()
                self.send_response_only(reply.status, reply.reason)
                for key, value in reply.getheaders():
                    if key.lower() not in _HOP:
                        self.send_header(key, value)
                if reply.getheader("Content-Length") is not None and self.command != "HEAD":
                    self.send_header("Content-Length", reply.getheader("Content-Length", "0"))
                self.send_header("Connection", "close")
                self.close_connection = True
                self.end_headers()
                while chunk := reply.read1(_CHUNK):
                    self.wfile.write(chunk)
                    self.wfile.flush()  # a streamed answer's events as they come
            except OSError as error:
                self._refuse(f"llama-server did not answer: {error}")
            finally:
                upstream.close()

        def _refuse(self, message: str) -> None:
            with suppress(OSError):  # the client went away too
                self.send_error(502, message)

        do_GET = do_POST = do_PUT = do_DELETE = do_OPTIONS = do_HEAD = do_PATCH = _forward

        def log_message(self, format: str, *args: Any) -> None:
            pass  # llama-server logs every request itself

    return Handler

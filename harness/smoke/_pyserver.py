"""llama-cpp-python's own server, plus the llama-server behaviours its command line lacks.

The harness runs this file by path (``python .../_pyserver.py ARGS``), never as
``harness.smoke._pyserver``: importing the harness package would add its start-up time to every
server start. It imports nothing from the harness.

It takes these llama-server options itself and hands every other argument to
``python -m llama_cpp.server`` unchanged:

- ``--no-repack``: load weights without llama.cpp's extra buffer types (repacking, AMX), which
  ``llama_cpp.server`` cannot switch off; on CPUs that advertise AMX but fault on it (some VMs)
  this is what keeps the server alive.
- ``--pooling NAME``: the embedding pooling (none, mean, cls, last, rank).
- ``--chat-template-file PATH``: a Jinja chat template, rendered as llama-cpp-python renders a
  GGUF's own template (the model's BOS/EOS tokens, stop at EOS). A template that does not
  compile stops the server at start, as llama-server refuses it.

and, always, L2-normalises ``/v1/embeddings`` vectors, as llama-server's OpenAI endpoint does
(llama-cpp-python returns them raw), and after each completion writes one line to stderr,
``gguf-harness-timings {json}``, with the fields of llama-server's ``timings`` object
(``prompt_n``, ``prompt_ms``, ``predicted_n``, ``predicted_ms``): llama-cpp-python's own perf
print misattributes the first request's prompt time, so the wrapper times the calls itself.
"""

from __future__ import annotations

import faulthandler
import functools
import json
import runpy
import sys
import time
from collections.abc import Iterator
from typing import Any

_POOLING = {"none": 0, "mean": 1, "cls": 2, "last": 3, "rank": 4}
TIMINGS_MARK = "gguf-harness-timings"


def _split(argv: list[str]) -> tuple[bool, int | None, str | None, list[str]]:
    no_repack, pooling, template_file = False, None, None
    rest: list[str] = []
    items = iter(argv)
    for arg in items:
        if arg == "--no-repack":
            no_repack = True
        elif arg == "--pooling":
            name = next(items, "")
            if name not in _POOLING:
                raise SystemExit(f"--pooling: expected one of {', '.join(_POOLING)}, got {name!r}")
            pooling = _POOLING[name]
        elif arg == "--chat-template-file":
            template_file = next(items, None)
            if template_file is None:
                raise SystemExit("--chat-template-file needs a path")
        else:
            rest.append(arg)
    return no_repack, pooling, template_file, rest


def _patch(no_repack: bool, pooling: int | None, template: str | None) -> None:
    import llama_cpp
    import llama_cpp.llama_cpp as low
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    if no_repack:
        defaults = low.llama_model_default_params

        def model_params() -> Any:
            params = defaults()
            params.use_extra_bufts = False
            return params

        low.llama_model_default_params = model_params

    if template is not None:
        # Compiled now, so that a broken template fails the start rather than the first request.
        import jinja2

        try:
            Jinja2ChatFormatter(template, eos_token="", bos_token="")
        except jinja2.TemplateError as error:
            where = f" (line {error.lineno})" if hasattr(error, "lineno") else ""
            print(f"error: the chat template does not compile{where}: {error}", file=sys.stderr)
            raise SystemExit(1) from None

    init = llama_cpp.Llama.__init__

    @functools.wraps(init)
    def llama_init(self: Any, *args: Any, **kwargs: Any) -> None:
        if pooling is not None:
            kwargs["pooling_type"] = pooling
        init(self, *args, **kwargs)
        if template is not None:
            eos, bos = self.token_eos(), self.token_bos()
            self.chat_handler = Jinja2ChatFormatter(
                template,
                eos_token=_token_text(self, eos),
                bos_token=_token_text(self, bos),
                stop_token_ids=[eos] if eos >= 0 else None,
            ).to_chat_handler()

    setattr(llama_cpp.Llama, "__init__", llama_init)  # noqa: B010 (a method, for mypy)

    embed = llama_cpp.Llama.embed

    @functools.wraps(embed)
    def normalized_embed(self: Any, input: Any, normalize: bool = True, **kwargs: Any) -> Any:
        return embed(self, input, normalize=normalize, **kwargs)

    setattr(llama_cpp.Llama, "embed", normalized_embed)  # noqa: B010
    _patch_timings(llama_cpp.Llama)


class _Clock:
    """Times one completion: its first eval is the prompt, the rest is generation."""

    def __init__(self) -> None:
        self.prompt_n = 0
        self.prompt_ms = 0.0
        self.prompt_end: float | None = None

    def report(self, completion_tokens: int) -> None:
        end = time.perf_counter()
        started = self.prompt_end if self.prompt_end is not None else end
        line = {
            "prompt_n": self.prompt_n,
            "prompt_ms": round(self.prompt_ms, 3),
            "predicted_n": completion_tokens,
            "predicted_ms": round((end - started) * 1000, 3),
        }
        print(TIMINGS_MARK, json.dumps(line), file=sys.stderr, flush=True)


def _patch_timings(llama: Any) -> None:
    clocks: list[_Clock] = []
    evaluate = llama.eval
    complete = llama.create_completion

    @functools.wraps(evaluate)
    def timed_eval(self: Any, tokens: Any) -> Any:
        clock = clocks[-1] if clocks else None
        if clock is None or clock.prompt_end is not None:
            return evaluate(self, tokens)
        started = time.perf_counter()
        result = evaluate(self, tokens)
        clock.prompt_end = time.perf_counter()
        clock.prompt_n = len(tokens)
        clock.prompt_ms = (clock.prompt_end - started) * 1000
        return result

    @functools.wraps(complete)
    def timed_completion(self: Any, *args: Any, **kwargs: Any) -> Any:
        clock = _Clock()
        clocks.append(clock)
        try:
            result = complete(self, *args, **kwargs)
        except BaseException:
            clocks.remove(clock)
            raise
        if isinstance(result, dict):
            clocks.remove(clock)
            clock.report(int((result.get("usage") or {}).get("completion_tokens", 0)))
            return result
        return _timed_stream(result, clock, clocks)

    llama.eval = timed_eval
    llama.create_completion = timed_completion


def _timed_stream(chunks: Iterator[Any], clock: _Clock, clocks: list[_Clock]) -> Iterator[Any]:
    count = 0
    try:
        for chunk in chunks:
            count += 1
            yield chunk
    finally:
        clocks.remove(clock)
    clock.report(count)


def _token_text(model: Any, token: int) -> str:
    if token < 0:
        return ""
    # As llama-cpp-python names a GGUF template's tokens (Llama.__init__).
    return str(model._model.token_get_text(token))


def _scrub_environment() -> None:
    """llama_cpp.server takes any setting it is not given from an environment variable of the
    same name (MODEL, N_CTX, HOST, PORT, CONFIG_FILE...): the command line must be all there is."""
    import os

    from llama_cpp.server.settings import ModelSettings, ServerSettings

    names = {*ModelSettings.model_fields, *ServerSettings.model_fields, "config_file"}
    for key in list(os.environ):
        if key.lower() in names:
            del os.environ[key]


def main(argv: list[str]) -> None:
    # A crash in llama.cpp (SIGSEGV, SIGABRT) then leaves a Python stack in the log.
    faulthandler.enable()
    no_repack, pooling, template_file, rest = _split(argv)
    _scrub_environment()
    template = None
    if template_file is not None:
        with open(template_file, encoding="utf-8") as file:
            template = file.read()
    _patch(no_repack, pooling, template)
    sys.argv = ["llama_cpp.server", *rest]
    runpy.run_module("llama_cpp.server", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main(sys.argv[1:])

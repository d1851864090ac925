"""llama-server arguments translated for llama-cpp-python's server (``llama_cpp.server``).

Only flags with a faithful equivalent are translated; every other flag is collected and
reported at once, so that a model.yaml learns in one run everything this runner cannot honour.
``--no-repack``, ``--pooling`` and ``--chat-template-file`` go to the wrapper (``_pyserver.py``),
which implements them on top of ``llama_cpp.server``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ._errors import SmokeError

__all__ = ["CHAT_TEMPLATE_NAMES", "Translation", "split_equals", "translate_for_llama_cpp_python"]

# llama-server's built-in template names -> llama-cpp-python's chat formats rendering the same.
CHAT_TEMPLATE_NAMES = {
    "chatml": "chatml",
    "llama2": "llama-2",
    "llama3": "llama-3",
    "gemma": "gemma",
    "zephyr": "zephyr",
    "vicuna": "vicuna",
    "openchat": "openchat",
    "mistral-v1": "mistral-instruct",
}
_CACHE_TYPES = {  # ggml type numbers
    "f32": 0, "f16": 1, "q4_0": 2, "q4_1": 3, "q5_0": 6, "q5_1": 7, "q8_0": 8,
    "iq4_nl": 20, "bf16": 30,
}  # fmt: skip
_SPLIT_MODES = {"none": 0, "layer": 1, "row": 2}
_POOLING = ("none", "mean", "cls", "last", "rank")
# Flags that change nothing llama_cpp.server does: it always renders GGUF templates with Jinja,
# serves one request at a time without batching, has no web UI, and needs no warm-up.
_NO_OPS = frozenset(
    {"--jinja", "-cb", "--cont-batching", "--no-webui", "--metrics", "--slots", "--no-slots",
     "--no-warmup", "--warmup", "--props"}
)  # fmt: skip
_FLASH_VALUES = {"on": True, "off": False, "auto": None, "true": True, "false": False,
                 "1": True, "0": False, "enabled": True, "disabled": False}  # fmt: skip


@dataclass(frozen=True)
class Translation:
    """``args`` for the wrapper; ``template_text`` is Jinja source given inline by
    ``--chat-template`` that the caller must write to a file and pass as
    ``--chat-template-file``."""

    args: tuple[str, ...]
    template_text: str | None


def split_equals(args: Sequence[str]) -> list[str]:
    """``--ctx-size=8192`` -> ``--ctx-size 8192``, as llama-server's parser reads it."""
    out: list[str] = []
    for arg in args:
        if arg.startswith("--") and "=" in arg:
            flag, _, value = arg.partition("=")
            out += [flag, value]
        else:
            out.append(arg)
    return out


def translate_for_llama_cpp_python(args: Sequence[str]) -> Translation:
    """Translate llama-server ``args`` (host paths already in place, no --host/--port)."""
    state = _State()
    items = split_equals(args)
    i = 0
    while i < len(items):
        flag = items[i]
        rule = _RULES.get(flag)
        if rule is None:
            if flag not in _NO_OPS:
                state.unsupported.append(flag)
                # An unknown flag's value (anything not starting with "-") is skipped with it.
                if i + 1 < len(items) and not items[i + 1].startswith("-"):
                    i += 1
            i += 1
            continue
        arity, apply = rule
        if flag in ("-fa", "--flash-attn"):
            has_value = i + 1 < len(items) and items[i + 1].lower() in _FLASH_VALUES
            arity = 1 if has_value else 0
        values = items[i + 1 : i + 1 + arity]
        if len(values) < arity:
            raise SmokeError(f"llama-server argument {flag} needs {arity} value(s)")
        apply(state, flag, values)
        i += 1 + arity
    if state.unsupported:
        names = ", ".join(dict.fromkeys(state.unsupported))
        raise SmokeError(
            f"llama-cpp-python's server cannot honour {names}; "
            "use the llama-server runner (--by llama-server) or drop them"
        )
    if state.model is None:
        raise SmokeError("the server arguments name no model (-m)")
    out = ["--model", state.model, *state.out]
    if not any(arg == "--n_ctx" for arg in state.out):
        # llama-server's default context is the model's own (-c 0); llama_cpp.server's is 2048.
        out += ["--n_ctx", "0"]
    if state.threads is not None:
        out += ["--n_threads", state.threads]
        if state.threads_batch is None:
            # llama-server uses -t for batches too unless -tb says otherwise.
            out += ["--n_threads_batch", state.threads]
    if state.threads_batch is not None:
        out += ["--n_threads_batch", state.threads_batch]
    if state.kv_overrides:
        out += ["--kv_overrides", *state.kv_overrides]
    template_text = None
    if state.template is not None:
        kind, value = state.template
        if kind == "name":
            out += ["--chat_format", value]
        elif kind == "file":
            out += ["--chat-template-file", value]
        else:
            template_text = value
    # llama-server keeps logits of the last token only; llama_cpp.server keeps all of them
    # unless told, which only logprobs need and which slows every prompt down.
    out += ["--logits_all", "false"]
    return Translation(tuple(out), template_text)


class _State:
    def __init__(self) -> None:
        self.model: str | None = None
        self.out: list[str] = []
        self.unsupported: list[str] = []
        self.threads: str | None = None
        self.threads_batch: str | None = None
        self.kv_overrides: list[str] = []
        # The last --chat-template or --chat-template-file wins, as in llama-server.
        self.template: tuple[str, str] | None = None
        self.adapters = 0


_Apply = Callable[[_State, str, list[str]], None]


def _option(name: str, convert: Callable[[str, str], str] | None = None) -> tuple[int, _Apply]:
    def apply(state: _State, flag: str, values: list[str]) -> None:
        value = convert(flag, values[0]) if convert else values[0]
        state.out += [f"--{name}", value]

    return 1, apply


def _switch(name: str, value: str) -> tuple[int, _Apply]:
    def apply(state: _State, _flag: str, _values: list[str]) -> None:
        state.out += [f"--{name}", value]

    return 0, apply


def _wrapper(flag: str, arity: int) -> tuple[int, _Apply]:
    def apply(state: _State, _flag: str, values: list[str]) -> None:
        state.out += [flag, *values]

    return arity, apply


def _integer(flag: str, value: str) -> str:
    try:
        return str(int(value))
    except ValueError:
        raise SmokeError(f"{flag}: expected an integer, got {value!r}") from None


def _number(flag: str, value: str) -> str:
    try:
        return str(float(value))
    except ValueError:
        raise SmokeError(f"{flag}: expected a number, got {value!r}") from None


def _choice(table: dict[str, int]) -> Callable[[str, str], str]:
    def convert(flag: str, value: str) -> str:
        if value.lower() not in table:
            raise SmokeError(f"{flag}: expected one of {', '.join(table)}, got {value!r}")
        return str(table[value.lower()])

    return convert


def _gpu_layers(flag: str, value: str) -> str:
    # "all" and "auto" offload everything there is; a CPU build ignores the number anyway.
    return "-1" if value in ("all", "auto") else _integer(flag, value)


def _model(state: _State, _flag: str, values: list[str]) -> None:
    state.model = values[0]


def _threads(state: _State, flag: str, values: list[str]) -> None:
    state.threads = _integer(flag, values[0])


def _threads_batch(state: _State, flag: str, values: list[str]) -> None:
    state.threads_batch = _integer(flag, values[0])


def _parallel(state: _State, flag: str, values: list[str]) -> None:
    if _integer(flag, values[0]) not in ("1", "-1"):
        # llama-server would split the context into slots; this server has one.
        state.unsupported.append(f"{flag} {values[0]}")


def _flash(state: _State, _flag: str, values: list[str]) -> None:
    enabled = _FLASH_VALUES[values[0].lower()] if values else True
    if enabled is not None:
        state.out += ["--flash_attn", "true" if enabled else "false"]


def _lora(state: _State, flag: str, values: list[str]) -> None:
    state.adapters += 1
    if state.adapters > 1:
        state.unsupported.append(f"{flag} (a second adapter)")
        return
    if flag == "--lora-scaled" and float(_number(flag, values[1])) != 1.0:
        state.unsupported.append(f"{flag} with a scale other than 1")
        return
    state.out += ["--lora_path", values[0]]


def _chat_template(state: _State, flag: str, values: list[str]) -> None:
    value = values[0]
    if flag == "--chat-template-file":
        state.template = ("file", value)
    elif "{{" in value or "{%" in value:
        state.template = ("text", value)
    elif value in CHAT_TEMPLATE_NAMES:
        state.template = ("name", CHAT_TEMPLATE_NAMES[value])
    else:
        state.unsupported.append(f"{flag} {value} (a built-in name it has no equivalent for)")


def _override_kv(state: _State, _flag: str, values: list[str]) -> None:
    state.kv_overrides += values[0].split(",")


def _pooling(state: _State, flag: str, values: list[str]) -> None:
    if values[0] not in _POOLING:
        raise SmokeError(f"{flag}: expected one of {', '.join(_POOLING)}, got {values[0]!r}")
    state.out += ["--pooling", values[0]]


_RULES: dict[str, tuple[int, _Apply]] = {
    "-m": (1, _model),
    "--model": (1, _model),
    "-c": _option("n_ctx", _integer),
    "--ctx-size": _option("n_ctx", _integer),
    "-b": _option("n_batch", _integer),
    "--batch-size": _option("n_batch", _integer),
    "-ub": _option("n_ubatch", _integer),
    "--ubatch-size": _option("n_ubatch", _integer),
    "-np": (1, _parallel),
    "--parallel": (1, _parallel),
    "-ngl": _option("n_gpu_layers", _gpu_layers),
    "--gpu-layers": _option("n_gpu_layers", _gpu_layers),
    "--n-gpu-layers": _option("n_gpu_layers", _gpu_layers),
    "-sm": _option("split_mode", _choice(_SPLIT_MODES)),
    "--split-mode": _option("split_mode", _choice(_SPLIT_MODES)),
    "-mg": _option("main_gpu", _integer),
    "--main-gpu": _option("main_gpu", _integer),
    "-fa": (1, _flash),
    "--flash-attn": (1, _flash),
    "--embedding": _switch("embedding", "true"),
    "--embeddings": _switch("embedding", "true"),
    "--pooling": (1, _pooling),
    "--lora": (1, _lora),
    "--lora-scaled": (2, _lora),
    "--chat-template": (1, _chat_template),
    "--chat-template-file": (1, _chat_template),
    "-t": (1, _threads),
    "--threads": (1, _threads),
    "-tb": (1, _threads_batch),
    "--threads-batch": (1, _threads_batch),
    "-s": _option("seed", _integer),
    "--seed": _option("seed", _integer),
    "-ctk": _option("type_k", _choice(_CACHE_TYPES)),
    "--cache-type-k": _option("type_k", _choice(_CACHE_TYPES)),
    "-ctv": _option("type_v", _choice(_CACHE_TYPES)),
    "--cache-type-v": _option("type_v", _choice(_CACHE_TYPES)),
    "-nkvo": _switch("offload_kqv", "false"),
    "--no-kv-offload": _switch("offload_kqv", "false"),
    "--no-mmap": _switch("use_mmap", "false"),
    "--mlock": _switch("use_mlock", "true"),
    "--rope-freq-base": _option("rope_freq_base", _number),
    "--rope-freq-scale": _option("rope_freq_scale", _number),
    "-a": _option("model_alias"),
    "--alias": _option("model_alias"),
    "--override-kv": (1, _override_kv),
    "-nr": _wrapper("--no-repack", 0),
    "--no-repack": _wrapper("--no-repack", 0),
}

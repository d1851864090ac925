"""llama-server arguments translated for llama-cpp-python's server (``llama_cpp.server``).

The arguments are read as llama-server reads them (``harness.toolchain.parse_server_args``: an
argv llama-server would refuse is refused here too), then each option is translated by its
canonical name. Only options with a faithful equivalent are translated; every other one is
collected and reported at once, so that a model.yaml learns in one run everything this runner
cannot honour.
``--no-repack``, ``--pooling`` and ``--chat-template-file`` go to the wrapper (``_pyserver.py``),
which implements them on top of ``llama_cpp.server``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from harness.errors import SmokeError
from harness.toolchain import ServerArg, ServerArgsError, parse_server_args

__all__ = ["CHAT_TEMPLATE_NAMES", "Translation", "translate_for_llama_cpp_python"]

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
    {"--jinja", "--cont-batching", "--ui", "--metrics", "--slots", "--warmup", "--props",
     "--verbosity", "--verbose", "--log-colors", "--log-prefix", "--log-timestamps"}
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


def translate_for_llama_cpp_python(args: Sequence[str]) -> Translation:
    """Translate llama-server ``args`` (host paths already in place, no --host/--port)."""
    try:
        parsed = parse_server_args(args)
    except ServerArgsError as error:
        raise SmokeError(str(error)) from None
    state = _State()
    for arg in parsed.args:
        apply = _RULES.get(arg.key)
        if apply is not None:
            apply(state, arg)
        elif arg.key not in _NO_OPS:
            state.unsupported.append(" ".join((arg.name, *arg.values)) if arg.values else arg.name)
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


_Apply = Callable[[_State, ServerArg], None]


def _option(name: str, convert: Callable[[str, str], str] | None = None) -> _Apply:
    def apply(state: _State, arg: ServerArg) -> None:
        value = convert(arg.name, arg.value) if convert else arg.value
        state.out += [f"--{name}", value]

    return apply


def _switch(name: str, value: str) -> _Apply:
    def apply(state: _State, _arg: ServerArg) -> None:
        state.out += [f"--{name}", value]

    return apply


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


def _model(state: _State, arg: ServerArg) -> None:
    state.model = arg.value


def _threads(state: _State, arg: ServerArg) -> None:
    state.threads = _integer(arg.name, arg.value)


def _threads_batch(state: _State, arg: ServerArg) -> None:
    state.threads_batch = _integer(arg.name, arg.value)


def _parallel(state: _State, arg: ServerArg) -> None:
    if _integer(arg.name, arg.value) not in ("1", "-1"):
        # llama-server would split the context into slots; this server has one.
        state.unsupported.append(f"{arg.name} {arg.value}")


def _flash(state: _State, arg: ServerArg) -> None:
    word = arg.value.lower()
    if word not in _FLASH_VALUES:
        raise SmokeError(f"{arg.name}: expected on, off or auto, got {arg.value!r}")
    enabled = _FLASH_VALUES[word]
    if enabled is not None:
        state.out += ["--flash_attn", "true" if enabled else "false"]


def _lora(state: _State, arg: ServerArg) -> None:
    paths = arg.value.split(",")
    state.adapters += len(paths)
    if state.adapters > 1:
        state.unsupported.append(f"{arg.name} (a second adapter)")
        return
    path = paths[0]
    if arg.key == "--lora-scaled":  # FNAME:SCALE
        path, _, scale = path.rpartition(":")
        if float(_number(arg.name, scale)) != 1.0:
            state.unsupported.append(f"{arg.name} with a scale other than 1")
            return
    state.out += ["--lora_path", path]


def _chat_template(state: _State, arg: ServerArg) -> None:
    value = arg.value
    if arg.key == "--chat-template-file":
        state.template = ("file", value)
    elif "{{" in value or "{%" in value:
        state.template = ("text", value)
    elif value in CHAT_TEMPLATE_NAMES:
        state.template = ("name", CHAT_TEMPLATE_NAMES[value])
    else:
        state.unsupported.append(f"{arg.name} {value} (a built-in name it has no equivalent for)")


def _override_kv(state: _State, arg: ServerArg) -> None:
    state.kv_overrides += arg.value.split(",")


def _pooling(state: _State, arg: ServerArg) -> None:
    if arg.value not in _POOLING:
        raise SmokeError(f"{arg.name}: expected one of {', '.join(_POOLING)}, got {arg.value!r}")
    state.out += ["--pooling", arg.value]


def _load_mode(state: _State, arg: ServerArg) -> None:
    if arg.value in ("none", "mlock", "dio"):
        state.out += ["--use_mmap", "false"]
    if arg.value in ("mlock", "mmap+mlock"):
        state.out += ["--use_mlock", "true"]


def _kv_offload(state: _State, arg: ServerArg) -> None:
    state.out += ["--offload_kqv", "false" if arg.negative else "true"]


def _repack(state: _State, arg: ServerArg) -> None:
    if arg.negative:
        state.out.append("--no-repack")  # the wrapper loads without extra buffer types


# llama-server's options by canonical name (harness.toolchain's argv model)
_RULES: dict[str, _Apply] = {
    "--model": _model,
    "--ctx-size": _option("n_ctx", _integer),
    "--batch-size": _option("n_batch", _integer),
    "--ubatch-size": _option("n_ubatch", _integer),
    "--parallel": _parallel,
    "--gpu-layers": _option("n_gpu_layers", _gpu_layers),
    "--split-mode": _option("split_mode", _choice(_SPLIT_MODES)),
    "--main-gpu": _option("main_gpu", _integer),
    "--flash-attn": _flash,
    "--embedding": _switch("embedding", "true"),
    "--pooling": _pooling,
    "--lora": _lora,
    "--lora-scaled": _lora,
    "--chat-template": _chat_template,
    "--chat-template-file": _chat_template,
    "--threads": _threads,
    "--threads-batch": _threads_batch,
    "--seed": _option("seed", _integer),
    "--cache-type-k": _option("type_k", _choice(_CACHE_TYPES)),
    "--cache-type-v": _option("type_v", _choice(_CACHE_TYPES)),
    "--kv-offload": _kv_offload,
    "--load-mode": _load_mode,
    "--rope-freq-base": _option("rope_freq_base", _number),
    "--rope-freq-scale": _option("rope_freq_scale", _number),
    "--alias": _option("model_alias"),
    "--override-kv": _override_kv,
    "--repack": _repack,
}

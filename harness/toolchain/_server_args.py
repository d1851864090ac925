"""llama-server's command line, as llama-server itself reads it: the one model of its arguments.

The options table (``_server_options.OPTIONS``) is generated from the pinned ``llama-server
--help`` (``render_options``; tests/test_server_args.py regenerates it and fails on drift). The
parser follows ``common_params_parse_ex`` in llama.cpp's ``common/arg.cpp``: exact names only (no
prefix matching, no ``--name=value``), ``_`` read as ``-`` in ``--long_names``, a flag takes 0, 1 or
2 values, the last occurrence wins, ``LLAMA_ARG_*`` variables apply first and the command line
overrides them. The estimator's settings, the Packerfile's CMD roles, the smoke path rewriting, the
published facts and the CLI all read argv through ``parse_server_args``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from harness.errors import ServerArgsError

from ._server_options import OPTIONS, ServerOption

__all__ = [
    "ServerArg",
    "ServerArgs",
    "ServerArgsError",
    "ServerOption",
    "parse_server_args",
    "render_options",
    "server_option",
]


@dataclass(frozen=True)
class ServerArg:
    """One option as given: ``key`` is the option's canonical name (its first long name)."""

    key: str
    name: str  # as written (after llama-server's "_" -> "-" in long names)
    values: tuple[str, ...]
    index: int  # position of the flag in argv; -1 when it came from the environment
    negative: bool = False  # a --no-... form of a boolean option

    @property
    def value(self) -> str:
        return self.values[0] if self.values else ""


@dataclass(frozen=True)
class ServerArgs:
    """A parsed argv: every option in order, environment first."""

    args: tuple[ServerArg, ...]

    def last(self, key: str) -> ServerArg | None:
        """The occurrence that counts: llama-server keeps the last one."""
        for arg in reversed(self.args):
            if arg.key == key:
                return arg
        return None

    def every(self, key: str) -> list[ServerArg]:
        return [arg for arg in self.args if arg.key == key]

    def __contains__(self, key: object) -> bool:
        return any(arg.key == key for arg in self.args)


# Read by the harness itself, not by llama-server (which dropped it): the seed's Packerfiles put it
# in CMD, and the harness sends the file's text as the chat system message (harness.smoke).
HARNESS_OPTIONS = (
    ServerOption("--system-prompt-file", ("--system-prompt-file",), (), 1, "FNAME", None, None),
)


def _index() -> dict[str, tuple[ServerOption, bool]]:
    table: dict[str, tuple[ServerOption, bool]] = {}
    for opt in (*OPTIONS, *HARNESS_OPTIONS):
        for name in opt.names:
            table[name] = (opt, False)
        for name in opt.negatives:
            table[name] = (opt, True)
    return table


_BY_NAME = _index()
_BY_KEY = {opt.key: opt for opt in (*OPTIONS, *HARNESS_OPTIONS)}


def server_option(key: str) -> ServerOption:
    """The option whose canonical name is ``key`` (a programming error when unknown)."""
    return _BY_KEY[key]


def _normal(word: str) -> str:
    return word.replace("_", "-") if word.startswith("--") else word


def parse_server_args(argv: Sequence[str], env: Mapping[str, str] | None = None) -> ServerArgs:
    """Parse ``argv`` (no program name) the way llama-server does; ServerArgsError otherwise.

    ``env``: the environment the server would see, for ``LLAMA_ARG_*`` variables.
    """
    parsed: list[ServerArg] = []
    for i, word in enumerate(argv):
        # No process can be given a NUL: refused here, not as a ValueError when one is started.
        if not isinstance(word, str) or "\0" in word:
            what = "holds a NUL byte" if isinstance(word, str) else "is not a string"
            raise ServerArgsError(f"argument {i} {what}: {_shown(word)}", i)
    if env:
        for opt in OPTIONS:
            if opt.env and opt.env in env:
                value = env[opt.env]
                if not isinstance(value, str) or "\0" in value:
                    raise ServerArgsError(
                        f"{opt.env}={_shown(value)}: not a string, or holds a NUL byte", -1
                    )
                if opt.arity:
                    parsed.append(ServerArg(opt.key, opt.env, (value,), -1))
                elif opt.negatives:  # a boolean: the variable says which way
                    word = value.lower()
                    if word not in _TRUTHY | _FALSY:
                        raise ServerArgsError(
                            f"{opt.env}={_shown(value)}: expected true or false", -1
                        )
                    parsed.append(ServerArg(opt.key, opt.env, (), -1, word in _FALSY))
                elif value.lower() in _TRUTHY:  # a plain flag applies only when truthy
                    parsed.append(ServerArg(opt.key, opt.env, (), -1))
    i = 0
    while i < len(argv):
        word = _normal(argv[i])
        found = _BY_NAME.get(word)
        if found is None:
            raise ServerArgsError(_unknown(argv[i]), i)
        opt, negative = found
        if i + opt.arity >= len(argv):
            need = "a value" if opt.arity == 1 else f"{opt.arity} values"
            hint = f" ({opt.value_hint})" if opt.value_hint else ""
            raise ServerArgsError(f"llama-server option {argv[i]} needs {need}{hint}", i)
        values = tuple(argv[i + 1 : i + 1 + opt.arity])
        parsed.append(ServerArg(opt.key, word, values, i, negative))
        i += 1 + opt.arity
    return ServerArgs(tuple(parsed))


_TRUTHY = frozenset({"1", "true", "on", "enabled"})
_FALSY = frozenset({"0", "false", "off", "disabled"})


def _unknown(word: str) -> str:
    name, eq, _ = word.partition("=")
    if eq and _normal(name) in _BY_NAME:
        value = _shown(word[len(name) + 1 :])[1:-1]
        return f"llama-server does not read {_shown(word)}: write {name} {value} as two arguments"
    close = _close_names(word)
    suggestion = f" (did you mean {close}?)" if close else ""
    return f"{_shown(word)} is not a llama-server option at this llama.cpp{suggestion}"


def _shown(word: object) -> str:
    """A word of argv in a message: quoted, and cut short when it is not a plausible option."""
    if isinstance(word, str) and len(word) > _LONGEST_NAME:
        return f"{word[:_LONGEST_NAME]!r}... ({len(word)} characters)"
    return repr(word)


def _close_names(word: str) -> str | None:
    import difflib

    if len(word) > _LONGEST_NAME:  # nothing is close, and difflib's time grows with the word
        return None
    matches = difflib.get_close_matches(_normal(word), list(_BY_NAME), n=1, cutoff=0.75)
    return matches[0] if matches else None


_LONGEST_NAME = 2 * max(len(name) for name in _BY_NAME)


# --- generating the table from `llama-server --help` -----------------------------------------

_DEFAULT = re.compile(r"\(default: ([^()]*(?:\([^()]*\)[^()]*)*)\)")
_ENV = re.compile(r"\(env: ([A-Z0-9_]+)\)")
_TWO_HINTS = re.compile(r"^[A-Z][A-Z0-9_]* [A-Z][A-Z0-9_]*$")


def _entries(help_text: str) -> Iterable[tuple[str, str]]:
    """(names and hints, help text) per option entry of the help screen."""
    head: str | None = None
    body: list[str] = []
    for line in help_text.splitlines():
        if line.startswith("-") and not line.startswith("-----"):
            if head is not None:
                yield head, " ".join(body)
            # names and value hints fill up to 37 columns, padded to the help at column 40;
            # longer ones stand alone and the help starts on the next line
            if len(line) > 40 and line[37:40] == "   ":
                head, body = line[:40].strip(), [line[40:].strip()]
            else:
                head, body = line.strip(), []
        elif head is not None and line.startswith(" " * 20):
            body.append(line.strip())
        elif head is not None:
            yield head, " ".join(body)
            head, body = None, []
    if head is not None:
        yield head, " ".join(body)


def _parse_entry(head: str, text: str) -> ServerOption:
    words = head.split()
    names: list[str] = []
    rest_at = len(words)
    for n, word in enumerate(words):
        if word.startswith("-") and (not names or words[n - 1].endswith(",")):
            names.append(word.rstrip(","))
            continue
        rest_at = n
        break
    hint = " ".join(words[rest_at:]) or None
    arity = 0 if hint is None else 2 if _TWO_HINTS.match(hint) else 1
    positives, negatives = _split_negatives(names) if arity == 0 else (tuple(names), ())
    longs = [n for n in positives if n.startswith("--")]
    key = longs[0] if longs else positives[0]
    env = _ENV.search(text)
    default = _DEFAULT.search(text)
    return ServerOption(
        key=key,
        names=positives,
        negatives=negatives,
        arity=arity,
        value_hint=hint,
        env=env.group(1) if env else None,
        default=default.group(1).strip() if default else None,
    )


def _split_negatives(names: list[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """A boolean option lists its names, then its negated names (``args_neg``): ``-kvo,
    --kv-offload, -nkvo, --no-kv-offload``. They begin at the first ``--no-``/``-no-`` name or
    at a short name that follows a long one."""
    seen_long = False
    for at, name in enumerate(names):
        short = not name.startswith("--")
        if at and (name.startswith(("--no-", "-no-")) or (short and seen_long)):
            return tuple(names[:at]), tuple(names[at:])
        seen_long = seen_long or not short
    return tuple(names), ()


def render_options(help_text: str, commit: str) -> str:
    """The source of ``_server_options.py`` for the help screen of llama-server at ``commit``."""
    options = [_parse_entry(head, text) for head, text in _entries(help_text)]
    lines = [
        f'"""llama-server\'s options at llama.cpp {commit}: GENERATED from its --help by',
        "``harness.toolchain._server_args.render_options``; do not edit (tests regenerate it).",
        '"""',
        "",
        "from __future__ import annotations",
        "",
        "from dataclasses import dataclass",
        "",
        '__all__ = ["OPTIONS", "ServerOption"]',
        "",
        "",
        "@dataclass(frozen=True)",
        "class ServerOption:",
        "    key: str  # the canonical name: the first long name",
        "    names: tuple[str, ...]",
        "    negatives: tuple[str, ...]  # --no-... forms of a boolean option",
        "    arity: int  # values that follow the flag",
        "    value_hint: str | None",
        "    env: str | None  # LLAMA_ARG_... variable",
        "    default: str | None  # as the help states it",
        "",
        "",
        "OPTIONS: tuple[ServerOption, ...] = (",
    ]
    for opt in options:
        lines.append(
            f"    ServerOption({opt.key!r}, {opt.names!r}, {opt.negatives!r}, {opt.arity},"
            f" {opt.value_hint!r}, {opt.env!r}, {opt.default!r}),"
        )
    lines += [")", ""]
    return "\n".join(lines)

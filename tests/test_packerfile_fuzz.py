"""Mutated Packerfiles, variable references and ignore files: each parses, or is refused with
one PackerfileError whose ``str()`` is one line naming the file and a line in it.

Three parsers, each with a seeded mutation generator fed from the repository's own files:

- ``packerfile``: the lexer and record builder (``parse``, and ``load`` for mutated bytes), then
  ``plan`` of every stage, which expands every variable;
- ``expand``: nested substitutions (``${A:-${B:+x}}``) and their quoting, put where a Packerfile
  expands them (flags, words, heredoc bodies, JSON strings) and also fed to the expander itself;
- ``ignore``: ``.ggufpackerignore`` / ``.dockerignore`` text (``parse_ignore``, and
  ``load_ignore`` for mutated bytes), then matching paths against the patterns.

A case is ``random.Random(f"{seed}:{number}")``, so any one replays alone. The suite runs a few
hundred cases per parser and every input under tests/data/packerfile-fuzz/<parser>/ (each once
crashed a parser); benchmarks/fuzz_packerfile.py runs 10,000 per parser with times and memory.
"""

from __future__ import annotations

import random
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

from harness.packerfile import (
    PackerfileError,
    load,
    load_ignore,
    parse,
    parse_ignore,
    plan,
)
from harness.packerfile._expand import ExpandError, expand_raw, expand_word

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"
REGRESSIONS = DATA / "packerfile-fuzz"

# Tokens that make the lexer, the expander and the checks disagree in the ways that matter.
TOKENS = [
    "<<EOF", "<< EOF", "<<-EOF", "<<'EOF'", '<<"E F"', "3<<EOF", "<<", "<<-", "\nEOF\n",
    "\n\tEOF\n", "${", "}", "${A}", "${A:-x}", "${A:+${B:-y}}", "${A:?gone}", "${:}", "${A!}",
    "$", "$$", "'", '"', "\\", "`", "\\\n", "`\n", "\n", "\r\n", "\r", "\t", " ", "\x00", "\x0b",
    "\x1c", "\xa0", "\u2028", "\ufeff", "\udc80", "é", "🦙", "[", "]", '["-m", "x"]', "[1]",
    '["a", [', "#", "# escape=`\n", "# syntax=gpustack/gguf-packer\n", "--from=", "--type=",
    "--", "--x=\"a b\"", "=", "AS", "ARG ", "FROM ", "COPY ", "CAT ", "RUN ", "ONBUILD ",
    "HEALTHCHECK ", "LABEL a=", "CMD ", "QUANTIZE ", "CONVERT ", "scratch", "0", "-1", "99",
    "https://h/x.git", "oci-layout://x", "sha256:" + "ab" * 32, "Q4_K_M", "x" * 300,
    "${A:?one\ntwo}", "${A:-" * 120, "}" * 120, "[" * 3000, "\n" * 50, "<<EOF " * 40,
]  # fmt: skip

IGNORE_TOKENS = [
    "*", "**", "**/", "/**", "?", "[", "]", "[a-", "[^a]", "[]]", "\\", "\\*", "!", "! ", "#",
    "/", "//", "..", "../", "./", "\n", "\r\n", " ", "\t", "\x00", "é", "\ufeff", "\udc80",
    "a/**/b", "{a,b}", "(", ")", "+", "$", "|", "^", "x" * 200, "[z-a]", "[a-]", "[-a]",
    "[--]", "[a--z]", "[&&]", "[~~]", "[||]", "[\\]", "[[:alpha:]]", "[\\-]", "[é-a]",
]  # fmt: skip

PATHS = ["a", "a/b", "a/b/c.gguf", "models/x.bin", ".git/HEAD", "é/ü", "a b", "[x]", "..", ""]

_IGNORE_SEEDS = [
    "# comment\n*.bin\n!keep.bin\n",
    "models\n!models/keep.gguf\n**/*.tmp\n",
    "/abs\n./rel/../x\n[a-c]?.txt\n\\#literal\n",
]


@cache
def packerfile_seeds(buildkit: bool) -> tuple[tuple[str, str], ...]:
    """(name, text) of every Packerfile and Dockerfile this repository holds, or BuildKit's
    test Dockerfiles (whose RUN, ENV... a Packerfile refuses, after lexing them)."""
    if buildkit:
        found = sorted(DATA.glob("buildkit/testfiles/*/Dockerfile"))
    else:
        found = sorted(
            {
                *ROOT.glob("models/*/GGUFPackerfile"),
                *DATA.glob("packerfiles/*/GGUFPackerfile"),
                *DATA.glob("packerfiles/*/Dockerfile"),
            }
        )
    return tuple((p.name, p.read_text(encoding="utf-8")) for p in found)


@cache
def ignore_seeds() -> tuple[str, ...]:
    files = sorted(DATA.glob("packerfiles/*/.ggufpackerignore"))
    return (*(p.read_text(encoding="utf-8") for p in files), *_IGNORE_SEEDS)


def mutate_text(rng: random.Random, text: str, tokens: list[str]) -> str:
    """``text`` with one to four edits, each at a word or line boundary or anywhere."""
    for _ in range(rng.randint(1, 4)):
        marks = [i for i, ch in enumerate(text) if ch in " \n\t=\"'$[{"] or [0]
        at = rng.choice(marks) if rng.random() < 0.6 else rng.randint(0, len(text))
        kind = rng.choice(("insert", "insert", "delete", "replace", "line", "truncate", "case"))
        if kind == "insert":
            text = text[:at] + rng.choice(tokens) + text[at:]
        elif kind == "delete":
            text = text[:at] + text[at + rng.randint(1, 12) :]
        elif kind == "replace":
            text = text[:at] + rng.choice(tokens) + text[at + rng.randint(1, 6) :]
        elif kind == "line":
            lines = text.split("\n")
            k = rng.randrange(len(lines))
            if rng.random() < 0.5:
                lines.insert(rng.randrange(len(lines) + 1), lines[k])
            else:
                lines[k], lines[-1] = lines[-1], lines[k]
            text = "\n".join(lines)
        elif kind == "truncate":
            text = text[:at]
        else:
            text = text[:at] + text[at:].swapcase()
    return text


def nested(rng: random.Random, depth: int) -> str:
    """A word of nested substitutions, quotes and escapes, at most ``depth`` levels deep."""
    parts: list[str] = []
    for _ in range(rng.randint(1, 3)):
        choice = rng.random()
        if depth > 0 and choice < 0.45:
            name = rng.choice(["A", "B", "UNSET", "EMPTY", "1", "_"])
            modifier = rng.choice([":-", "-", ":+", "+", ":?", "?", "", ":", "#", "/"])
            parts.append("${" + name + modifier + nested(rng, depth - 1) + "}")
        elif choice < 0.6:
            parts.append(rng.choice(["$A", "$UNSET", "$", "$1", "$@", "${A}"]))
        elif choice < 0.75:
            quote = rng.choice(["'", '"'])
            parts.append(quote + nested(rng, depth - 1) + quote)
        else:
            parts.append(rng.choice(["x", "a b", "\\$", "\\\\", "\\", "`", "}", "{", "é", "\t"]))
    return "".join(parts)


def expand_file(word: str) -> str:
    """A Packerfile that expands ``word`` in every place a Packerfile expands."""
    json_word = word.replace("\\", "\\\\").replace('"', '\\"').replace("\t", "\\t")
    return (
        f"ARG A=a B= EMPTY=\nARG BASE={word}\nFROM scratch AS s1\nLABEL l={word}\n"
        f"QUANTIZE --type={word} --include-weights={word} a.gguf b.gguf\n"
        f"CAT <<EOF {word} p.txt\n{word}\nEOF\n"
        f'CMD ["-m", "b.gguf", "--alias", "{json_word}"]\n'
        f"FROM ${{BASE}}\nCOPY --from={word} {word} /d/\n"
        'CMD ["-m", "m.gguf"]\n'
    )


def expand_case(rng: random.Random) -> Case:
    """A nested word (sometimes cut short, or deeper than any real file) and, as the text,
    the Packerfile around it, sometimes mutated too. The word is the case's name."""
    word = nested(rng, rng.choice([1, 2, 4, 8]))
    if rng.random() < 0.2:
        word = word[: rng.randint(0, len(word))]
    if rng.random() < 0.05:
        deep = rng.choice([50, 150, 2000])
        word = "${A:-" * deep + word + "}" * rng.choice([deep, deep - 1])
    text = expand_file(word)
    return Case(word, mutate_text(rng, text, TOKENS) if rng.random() < 0.3 else text)


def check_refusal(err: PackerfileError, path: str) -> None:
    """One line, naming the file and a line in it; so must each problem it stands for."""
    for one in (err, *err.problems):
        shown = str(one)
        assert "\n" not in shown and "\r" not in shown, f"not one line: {shown!r}"
        where = one.location
        assert where is not None and where.path == path and where.line, f"unlocated: {shown!r}"
        assert shown.startswith(f"{path}:{where.line}"), shown


@dataclass(frozen=True)
class Case:
    """One input: text (or bytes, for the loaders), and the name it is read under."""

    name: str
    text: str
    data: bytes | None = None


def packerfile_case(rng: random.Random) -> Case:
    # Mostly our own files: mutations of those get past the lexer into the checks and plan.
    name, text = rng.choice(packerfile_seeds(rng.random() < 0.2))
    if rng.random() < 0.3:
        name = rng.choice(["GGUFPackerfile", "Dockerfile"])
    text = mutate_text(rng, text, TOKENS)
    if rng.random() < 0.1:
        data = bytearray(text.encode("utf-8", "surrogatepass"))
        for _ in range(rng.randint(1, 3)):
            if data:
                data[rng.randrange(len(data))] = rng.choice([0x80, 0xC3, 0xFF, 0xED, 0x00])
        return Case(name, text, bytes(data))
    return Case(name, text)


def ignore_case(rng: random.Random) -> Case:
    text = mutate_text(rng, rng.choice(ignore_seeds()), IGNORE_TOKENS)
    name = rng.choice([".ggufpackerignore", ".dockerignore"])
    if rng.random() < 0.1:
        data = bytearray(text.encode("utf-8", "surrogatepass"))
        if data:
            data[rng.randrange(len(data))] = rng.choice([0x80, 0xC3, 0xFF])
        return Case(name, text, bytes(data))
    return Case(name, text)


def _from_bytes(case: Case, folder: Path) -> Path:
    path = folder / case.name
    path.write_bytes(case.data or b"")
    return path


def run_packerfile(case: Case, folder: Path) -> str:
    """``planned``, ``parsed`` (some stage refused to plan) or ``refused``."""
    path = case.name
    try:
        if case.data is not None:
            path = str(_from_bytes(case, folder))
            pf = load(path)
        else:
            pf = parse(case.text, path)
    except PackerfileError as err:
        check_refusal(err, path)
        return "refused"
    outcome = "planned"
    for stage in pf.stages:  # an unnamed stage plans the last one, the default target
        try:
            plan(pf, target=stage.name, build_args={"A": "x"})
        except PackerfileError as err:
            check_refusal(err, path)
            outcome = "parsed"
    return outcome


def run_expand(case: Case, folder: Path) -> str:
    """The word alone through both expanders (only ExpandError may stop them), then the file."""
    word = case.name
    for expand in (expand_word, expand_raw):
        for escape in ("\\", "`"):
            try:
                expand(word, {"A": "a", "B": "", "EMPTY": ""}, escape=escape)
            except ExpandError as err:
                assert "\n" not in err.message or "\n" in word, err.message
    return run_packerfile(Case("GGUFPackerfile", case.text), folder)


def run_ignore(case: Case, folder: Path) -> str:
    """``matched`` (read and asked about some paths) or ``refused``."""
    path = case.name
    try:
        if case.data is not None:
            _from_bytes(case, folder)
            path = str(folder / case.name)
            matcher = load_ignore(folder)
        else:
            matcher = parse_ignore(case.text, path)
    except PackerfileError as err:
        check_refusal(err, path)
        return "refused"
    finally:
        (folder / case.name).unlink(missing_ok=True)
    for relpath in PATHS:
        matcher.ignored(relpath)
    return "matched"


@dataclass(frozen=True)
class Parser:
    name: str
    make: Callable[[random.Random], Case]
    run: Callable[[Case, Path], str]


PARSERS = {
    "packerfile": Parser("packerfile", packerfile_case, run_packerfile),
    "expand": Parser("expand", expand_case, run_expand),
    "ignore": Parser("ignore", ignore_case, run_ignore),
}


def case_for(parser: Parser, seed: int, number: int) -> Case:
    return parser.make(random.Random(f"{parser.name}:{seed}:{number}"))


def regression(parser: str, path: Path) -> Case:
    """A saved input. ``packerfile``/``ignore``: the file's text, read under the name after
    ``--`` in the file name (a ``.bin`` suffix: raw bytes for the loader); ``expand``: the word."""
    data = path.read_bytes()
    if parser == "expand":
        word = data.decode("utf-8", "surrogatepass")
        return Case(word, expand_file(word))
    name = path.name.split("--", 1)[-1].removesuffix(".bin")
    if path.suffix == ".bin":
        return Case(name, "", data)
    return Case(name, data.decode("utf-8", "surrogatepass"))


# --- the suite ----------------------------------------------------------------------------------

CASES_PER_PARSER = 300


# A warning from the parsers' own machinery (re's FutureWarning on "[&&]") is a bug too.
@pytest.mark.filterwarnings("error")
@pytest.mark.parametrize("parser", sorted(PARSERS))
def test_mutated_inputs_parse_or_are_refused_on_one_located_line(parser: str) -> None:
    chosen = PARSERS[parser]
    outcomes: dict[str, int] = {}
    with tempfile.TemporaryDirectory() as folder:
        for number in range(CASES_PER_PARSER):
            case = case_for(chosen, 0, number)
            outcome = chosen.run(case, Path(folder))
            outcomes[outcome] = outcomes.get(outcome, 0) + 1
    # Mutations that never get past the parser, or never fail, would test little.
    assert len(outcomes) >= 2, outcomes


def _regressions() -> list[tuple[str, Path]]:
    return [
        (parser, path)
        for parser in sorted(PARSERS)
        for path in sorted((REGRESSIONS / parser).glob("*"))
        if path.is_file()
    ]


@pytest.mark.filterwarnings("error")
@pytest.mark.parametrize(
    ("parser", "path"), _regressions(), ids=[f"{p}/{f.name}" for p, f in _regressions()]
)
def test_inputs_that_once_crashed_a_parser(parser: str, path: Path) -> None:
    with tempfile.TemporaryDirectory() as folder:
        PARSERS[parser].run(regression(parser, path), Path(folder))

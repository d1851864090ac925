"""Parity with BuildKit's Dockerfile parser, on BuildKit's own test data (tests/data/buildkit).

Our lexer cuts text into logical instructions, flags, argument words and heredocs as BuildKit's
parser package does, for every instruction BuildKit knows, also those a Packerfile refuses
(RUN, ENV, EXPOSE...): that refusal comes later, in the record builder. So each BuildKit case
is compared at the lexing level: what ``lex`` yields, dumped in the shape of BuildKit's
``Node.Dump`` (the ``result`` files), and the heredocs BuildKit's Go tests expect. The
negative cases must be refused by ``parse`` for the same reason BuildKit refuses them.

Where we differ on purpose, ``DIFFERENCES`` says why and the test asserts the difference.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from harness.errors import Location
from harness.packerfile import Cat, Copy, PackerfileError, parse
from harness.packerfile._heredoc import parse_opening
from harness.packerfile._lexer import lex
from harness.packerfile._raw import RawInstruction
from harness.packerfile._words import Logical, shell_words

DATA = Path(__file__).parent / "data" / "buildkit"
GO_CASES: dict[str, Any] = json.loads((DATA / "go_test_cases.json").read_text(encoding="utf-8"))
CASES = sorted(p.name for p in (DATA / "testfiles").iterdir())
NEGATIVE = sorted(p.name for p in (DATA / "testfiles-negative").iterdir())

#: Where we differ from BuildKit on purpose: case -> why. No BuildKit test case is among them;
#: each is asserted by ``test_documented_difference`` below.
DIFFERENCES: dict[str, str] = {
    "copy-heredoc-with-space": (
        "BuildKit's lexer reads the heredoc of 'COPY << EOF /d', but its COPY then looks for "
        "files named '<<' and 'EOF' and drops the body; we take the two words for the heredoc"
    ),
    "empty-continuation-per-line": (
        "BuildKit warns once per instruction that has empty continuation lines; we warn at "
        "each empty line, which says where to look"
    ),
    "unread-heredoc-is-warned": (
        "on a line with an unclosed quote BuildKit silently reads no heredoc; we read none "
        "either, and warn at the word that looked like one"
    ),
    "unclosable-substitution-on-a-heredoc-line": (
        "a '${' BuildKit's shell lexer cannot close makes it find no heredoc on the line; "
        "we find it, and both refuse the substitution"
    ),
    "flags-are-characters": (
        "BuildKit's flag reader takes each byte for a character ('é' becomes 'Ã©'); "
        "we keep the characters"
    ),
}

# Go's strconv.Quote escapes for the few characters it names.
_GO_ESCAPES = {
    "\a": "\\a",
    "\b": "\\b",
    "\f": "\\f",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
    "\v": "\\v",
    "\\": "\\\\",
    '"': '\\"',
}


def go_quote(text: str) -> str:
    """Go's strconv.Quote, which BuildKit's Dump uses for every value."""
    out = ['"']
    for ch in text:
        if ch in _GO_ESCAPES:
            out.append(_GO_ESCAPES[ch])
        elif ch.isprintable():
            out.append(ch)
        elif ord(ch) < 0x80:
            out.append(f"\\x{ord(ch):02x}")
        elif ord(ch) < 0x10000:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(f"\\U{ord(ch):08x}")
    out.append('"')
    return "".join(out)


def _name_values(raw: RawInstruction) -> list[str] | None:
    """ENV and LABEL as BuildKit's parseNameVal shapes them: (key, value, "=") per word, or the
    legacy ``KEY name value`` as (name, rest of the line, ""). None: BuildKit refuses it."""
    if not raw.args:
        return []
    if "=" not in raw.args[0].text:
        parts = re.split(r"[\t\v\f\r ]+", raw.args_text, maxsplit=1)
        return [parts[0], parts[1], ""] if len(parts) == 2 else None
    out: list[str] = []
    for word in raw.args:
        key, sep, value = word.text.partition("=")
        if not sep:
            return None
        out += [key, value, "="]
    return out


def dump(raw: RawInstruction, escape: str) -> str:
    """One instruction as BuildKit's ``Node.Dump`` prints it, from what our lexer yields."""
    text = raw.keyword.lower()
    if raw.flags:
        words = [f"--{f.name}" + ("" if f.value is None else f"={f.value}") for f in raw.flags]
        text += " [" + " ".join(go_quote(w) for w in words) + "]"
    if text.startswith("onbuild") and raw.args:
        # ONBUILD's argument is one instruction: BuildKit nests its node, we lex it again.
        prefix = "# escape=`\n" if escape == "`" else ""
        (inner,) = lex(prefix + raw.args[0].text, "Dockerfile").instructions
        return f"{text} ({dump(inner, escape)})"
    values = (
        _name_values(raw) if raw.keyword.lower() in ("env", "label") else [w.text for w in raw.args]
    )
    assert values is not None, f"BuildKit refuses {raw.text!r}"
    return " ".join([text, *(go_quote(v) for v in values)])


def dump_file(text: str) -> list[str]:
    lexed = lex(text, "Dockerfile")
    errors = [p for p in lexed.problems if type(p) is PackerfileError]
    assert not errors, errors
    return [f"({dump(raw, lexed.escape)})" for raw in lexed.instructions]


# --- testfiles/*/{Dockerfile,result} ----------------------------------------------------------


@pytest.mark.parametrize("case", CASES)
def test_testfile_dumps_as_buildkit_does(case: str) -> None:
    text = (DATA / "testfiles" / case / "Dockerfile").read_text(encoding="utf-8")
    expected = (DATA / "testfiles" / case / "result").read_text(encoding="utf-8").splitlines()
    assert dump_file(text) == expected


def test_every_testfile_case_is_here() -> None:
    assert len(CASES) == 33 and not set(DIFFERENCES) & set(CASES)


# --- testfiles-negative -----------------------------------------------------------------------

# BuildKit's refusal of each case -> the code of ours. ENV is no Packerfile instruction: the
# file is refused for it, and LABEL, which BuildKit parses the same way, has ENV's refusal.
_NEGATIVE_CODES = {
    "empty_dockerfile": "empty-file",  # "file with no instructions"
    "only_comments": "empty-file",  # the same
    "env_no_value": "unknown-instruction",  # "ENV must have two arguments", see below
    "shykes-nested-json": "json-strings",  # "arrays must be comprised of strings only"
}


@pytest.mark.parametrize("case", NEGATIVE)
def test_negative_testfile_is_refused(case: str) -> None:
    text = (DATA / "testfiles-negative" / case / "Dockerfile").read_text(encoding="utf-8")
    with pytest.raises(PackerfileError) as caught:
        parse(text, "GGUFPackerfile")
    assert _NEGATIVE_CODES[case] in {p.code for p in caught.value.problems}


def test_a_name_without_value_is_refused_as_buildkit_refuses_env_path() -> None:
    with pytest.raises(PackerfileError) as caught:
        parse("FROM busybox\n\nLABEL PATH\n")
    assert caught.value.code == "label-syntax" and "needs a value" in caught.value.message


def test_every_negative_case_is_here() -> None:
    assert set(NEGATIVE) == set(_NEGATIVE_CODES)


# --- parser_heredoc_test.go -------------------------------------------------------------------


def _heredocs(raw: RawInstruction) -> list[dict[str, object]] | None:
    docs = [
        {"name": d.name, "content": d.content, "expand": d.expand, "chomp": d.chomp, "fd": d.fd}
        for d in raw.heredocs
    ]
    return docs or None


_EXTRACTS = GO_CASES["extracts_heredoc"]
_EXTRACTED = lex(_EXTRACTS["dockerfile"], "Dockerfile")


def test_heredoc_file_lexes_cleanly_into_as_many_instructions() -> None:
    assert not [p for p in _EXTRACTED.problems if type(p) is PackerfileError]
    assert len(_EXTRACTED.instructions) == 1 + len(_EXTRACTS["expected"])


@pytest.mark.parametrize(
    ("index", "expected"),
    list(enumerate(_EXTRACTS["expected"], 1)),
    ids=[group["comment"] for group in _EXTRACTS["expected"]],
)
def test_heredocs_are_extracted_as_buildkit_extracts_them(
    index: int, expected: dict[str, Any]
) -> None:
    assert _heredocs(_EXTRACTED.instructions[index]) == expected["heredocs"]


def test_json_forms_have_no_heredocs() -> None:
    lexed = lex(GO_CASES["json_heredoc"]["dockerfile"], "Dockerfile")
    assert [raw.heredocs for raw in lexed.instructions[1:4]] == [(), (), ()]


@pytest.mark.parametrize("word", GO_CASES["parse_heredoc"]["valid"])
def test_a_heredoc_opening_word(word: str) -> None:
    opening = parse_opening(word)
    assert opening is not None and opening.name == "EOF"


@pytest.mark.parametrize("word", GO_CASES["parse_heredoc"]["invalid"])
def test_an_opening_word_with_an_unclosed_quote_is_refused(word: str) -> None:
    with pytest.raises(ValueError, match="unclosed"):
        parse_opening(word)


@pytest.mark.parametrize("word", GO_CASES["parse_heredoc"]["not_heredocs"])
def test_a_word_that_opens_no_heredoc(word: str) -> None:
    assert parse_opening(word) is None


@pytest.mark.parametrize(
    "case", GO_CASES["heredocs_from_line"]["cases"], ids=lambda c: str(c["line"])
)
def test_heredoc_names_found_on_a_line(case: dict[str, Any]) -> None:
    (raw,) = lex(case["line"] + "\n", "Dockerfile").instructions
    names = [d.name for d in raw.heredocs]
    # BuildKit's test checks the names found against the head of its list, no more.
    assert names == (case["names"] or [])[: len(names)]
    if case["line"] in _NO_HEREDOC_LINES:
        assert names == []
    else:
        assert names == (case["names"] or [])


# BuildKit's shell lexer glues "<<" to the blanks after it, not "<<-": "<<- EOF" is two words
# and no heredoc, though its test lists EOF (it only compares the names it finds).
_NO_HEREDOC_LINES = {"RUN <<- EOF"}


# --- what they mean in a Packerfile ---------------------------------------------------------


@pytest.mark.parametrize(
    ("opening", "name", "expand"),
    [
        ("<< EOF", "EOF", True),  # the shell allows blanks before the delimiter
        ("<<  'EOF'", "EOF", False),
        ("<<'one two'", "one two", False),  # a quoted delimiter may hold a blank
        ('<<"a\\b"', "a\\b", False),  # in double quotes \ escapes only " $ and itself
        ("<<eo\\'f", "eo'f", True),  # an escaped quote quotes nothing
    ],
)
def test_heredoc_openings_as_buildkit_reads_them(opening: str, name: str, expand: bool) -> None:
    pf = parse(f'FROM scratch\nCAT {opening} p.txt\nbody\n{name}\nCMD ["-m", "m"]\n')
    cat = pf.stages[0].instructions[0]
    assert isinstance(cat, Cat)
    assert [(p.name, p.content, p.expand) for p in cat.parts] == [(name, "body\n", expand)]
    assert cat.dest == "p.txt"


def test_a_run_heredoc_is_one_unknown_instruction_not_its_body() -> None:
    with pytest.raises(PackerfileError) as caught:
        parse('FROM scratch\nRUN <<EOF\nFROM evil\nCOPY x\nEOF\nCMD ["-m", "x"]\n')
    assert [(p.code, p.location) for p in caught.value.problems] == [
        ("unknown-instruction", Location("GGUFPackerfile", 2, 1))
    ]


# --- parser_test.go ---------------------------------------------------------------------------


@pytest.mark.parametrize("case", GO_CASES["parse_words"]["cases"], ids=lambda c: str(c["input"]))
def test_shell_words_as_parse_words(case: dict[str, Any]) -> None:
    logical = Logical()
    logical.add(case["input"], 1, 1)
    words = shell_words(logical, 0, len(case["input"]), "\\")
    assert [w.text for w in words] == case["expect"]


def test_empty_continuation_lines_are_warned_for_the_same_instructions() -> None:
    case = GO_CASES["empty_continuation"]
    lexed = lex(case["dockerfile"], "Dockerfile")
    lines = {p.location.line for p in lexed.problems if p.code == "empty-continuation"}
    warned = [raw for raw in lexed.instructions if any(raw.line < n < raw.end_line for n in lines)]
    # BuildKit warns once per instruction with the text glued; we warn at each empty line.
    assert [" ".join(r.text.split()) for r in warned] == [
        " ".join(text.split()) for text in case["warned"]
    ]


def test_instructions_span_the_lines_buildkit_says() -> None:
    text = (DATA / GO_CASES["line_numbers"]["file"]).read_text(encoding="utf-8")
    spans = [[raw.line, raw.end_line] for raw in lex(text, "Dockerfile").instructions]
    assert spans == GO_CASES["line_numbers"]["spans"]


# "LABEL test=" is 11 bytes: values that make the line 65535 and 65536 bytes long.
@pytest.mark.parametrize(
    "value",
    ["a" * 65524, "a" * 65525, "é" * 32762, "é" * 32762 + "a", "a" * 65523 + "\r"],
    ids=["65535-bytes", "65536-bytes", "65535-utf8", "65536-utf8", "cr-counts"],
)
def test_line_length_limit_in_bytes_as_buildkit(value: str) -> None:
    """BuildKit counts bytes (not characters) up to the newline, a trailing \r included."""
    limit = GO_CASES["scanner_error"]["max_line_bytes"]
    refused = len(f"LABEL test={value}".encode()) > limit
    try:
        parse(f'FROM scratch\nLABEL test={value}\nCMD ["-m", "m.gguf"]\n')
    except PackerfileError as err:
        assert refused, err
        assert err.code == "line-length" and GO_CASES["scanner_error"]["message"] in err.message
        assert err.location is not None and err.location.line == 2
    else:
        assert not refused


# --- documented differences -------------------------------------------------------------------


def _warnings(text: str) -> list[PackerfileError]:
    return [p for p in lex(text, "Dockerfile").problems if type(p) is not PackerfileError]


def _copy_heredoc_with_space() -> None:
    (raw,) = lex("COPY << EOF /d/\nbody\nEOF\n", "Dockerfile").instructions
    assert [w.text for w in raw.args] == ["<<", "EOF", "/d/"]  # as BuildKit's lexer
    assert [(d.name, d.content) for d in raw.heredocs] == [("EOF", "body\n")]
    copy = parse('FROM scratch\nCOPY << EOF /d/\nbody\nEOF\nCMD ["-m", "m"]\n').stages[0]
    (record, _) = copy.instructions
    assert isinstance(record, Copy)
    assert record.sources == () and [h.name for h in record.heredocs] == ["EOF"]


def _empty_continuation_per_line() -> None:
    found = _warnings(GO_CASES["empty_continuation"]["dockerfile"])
    assert [(p.code, p.location and p.location.line) for p in found] == [
        ("empty-continuation", 8),
        ("empty-continuation", 10),
        ("empty-continuation", 14),
    ]


def _unread_heredoc_is_warned() -> None:
    text = "COPY <<EOF it's /d\nFROM x\nEOF\n"
    assert [raw.keyword for raw in lex(text, "Dockerfile").instructions] == ["COPY", "FROM", "EOF"]
    (warning,) = _warnings(text)
    assert warning.code == "heredoc-unread" and str(warning.location) == "Dockerfile:1:6"


def _unclosable_substitution_on_a_heredoc_line() -> None:
    text = 'FROM scratch\nCOPY <<EOF ${ /d\nx\nEOF\nCMD ["-m", "m"]\n'
    assert [d.name for d in lex(text, "Dockerfile").instructions[1].heredocs] == ["EOF"]
    with pytest.raises(PackerfileError) as caught:
        parse(text)
    assert caught.value.code == "expand"


def _flags_are_characters() -> None:
    (raw,) = lex("COPY --chown=é a b\n", "Dockerfile").instructions
    assert [(f.name, f.value) for f in raw.flags] == [("chown", "é")]


_CHECKS = {
    "copy-heredoc-with-space": _copy_heredoc_with_space,
    "empty-continuation-per-line": _empty_continuation_per_line,
    "unread-heredoc-is-warned": _unread_heredoc_is_warned,
    "unclosable-substitution-on-a-heredoc-line": _unclosable_substitution_on_a_heredoc_line,
    "flags-are-characters": _flags_are_characters,
}


@pytest.mark.parametrize("case", sorted(DIFFERENCES))
def test_documented_difference(case: str) -> None:
    assert DIFFERENCES[case] and set(_CHECKS) == set(DIFFERENCES)
    _CHECKS[case]()

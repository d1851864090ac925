"""The Packerfile language: lexing, forms, heredocs, records, files and the ignore file."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.errors import Location, UsageError
from harness.packerfile import (
    Add,
    Arg,
    Cat,
    Cmd,
    Convert,
    Copy,
    Label,
    PackerfileError,
    Quantize,
    Role,
    cmd_file_args,
    cmd_roles,
    find_packerfile,
    lint,
    load,
    load_ignore,
    parse,
    parse_ignore,
    plan,
)

DATA = Path(__file__).parent / "data" / "packerfiles"
# plain-dockerfile is not a Packerfile; from-image and from-model default to a FROM that
# plan() rejects (see test_lint_accepts_the_examples_that_build_on_an_oci_layout).
NOT_CLEAN = {"plain-dockerfile", "from-image", "from-model"}


def only(text: str) -> object:
    """The single instruction of the single stage of ``FROM scratch`` + text."""
    pf = parse("FROM scratch\n" + text)
    (record,) = pf.stages[0].instructions
    return record


# --- format: comments, case, directives, continuations ---------------------------------------


def test_comments_blank_lines_and_case_insensitive_keywords() -> None:
    pf = parse(
        "# a comment\n\n  # an indented comment\nfrom scratch as Base\n"
        'lAbEl a=b\ncmd ["-m", "m.gguf"]\n'
    )
    (stage,) = pf.stages
    assert stage.name == "base"
    assert stage.from_.keyword == "from"
    label, cmd = stage.instructions
    assert isinstance(label, Label) and label.keyword == "lAbEl"
    assert isinstance(cmd, Cmd) and cmd.args == ("-m", "m.gguf")
    assert cmd.location == Location("GGUFPackerfile", 6, 1)


def test_parser_directives_are_read_at_the_top_only() -> None:
    pf = parse("# syntax=gpustack/gguf-packer:latest\n# escape=`\nFROM scratch\n")
    assert pf.syntax == "gpustack/gguf-packer:latest"
    assert pf.escape == "`"
    assert [d.name for d in pf.directives] == ["syntax", "escape"]
    assert pf.directives[1].location == Location("GGUFPackerfile", 2, 10)


def test_a_directive_after_a_blank_line_is_a_comment_with_a_warning() -> None:
    pf = parse("\n# escape=`\nFROM scratch\n")
    assert pf.escape == "\\"
    (warning,) = pf.warnings
    assert warning.code == "directive-late"
    assert warning.location == Location("GGUFPackerfile", 2, 1)


def test_a_directive_after_an_instruction_is_ignored_with_a_warning() -> None:
    pf = parse('FROM scratch\n# syntax=gpustack/gguf-packer\nCMD ["-m", "x"]\n')
    assert pf.syntax is None
    assert [w.code for w in pf.warnings] == ["directive-late"]


def test_byte_order_mark_and_crlf_line_ends() -> None:
    pf = parse('\ufeff# escape=`\r\nFROM scratch\r\nCMD ["-m", "x"]\r\n')
    assert pf.escape == "`"
    assert pf.stages[0].cmd is not None
    assert pf.stages[0].cmd.args == ("-m", "x")


def test_continuation_lines_join_and_keep_columns() -> None:
    pf = parse(
        "FROM scratch\n"
        "QUANTIZE --type=Q4_K_M \\\n"
        "  # a comment inside is skipped\n"
        "         --pure \\\n"
        "         src.gguf dst.gguf\n"
        'CMD ["-m", "dst.gguf"]\n'
    )
    quantize = pf.stages[0].instructions[0]
    assert isinstance(quantize, Quantize)
    assert quantize.type == "Q4_K_M" and quantize.pure
    assert (quantize.source, quantize.dest) == ("src.gguf", "dst.gguf")
    assert quantize.where("flag:pure") == Location("GGUFPackerfile", 4, 10)
    assert quantize.where("source") == Location("GGUFPackerfile", 5, 10)
    assert quantize.created_by == "QUANTIZE --type=Q4_K_M --pure src.gguf dst.gguf"


def test_empty_continuation_line_is_a_warning() -> None:
    pf = parse("FROM scratch\nLABEL a=1 \\\n\n  b=2\n")
    (label,) = pf.stages[0].instructions
    assert isinstance(label, Label)
    assert label.items == (("a", "1"), ("b", "2"))
    assert [(w.code, w.location) for w in pf.warnings] == [
        ("empty-continuation", Location("GGUFPackerfile", 3, 1))
    ]


def test_backtick_escape_directive_continues_lines_and_keeps_backslashes() -> None:
    pf = parse("# escape=`\nFROM scratch\nCOPY C:\\models\\a.gguf `\n     /app/\n")
    (copy,) = pf.stages[0].instructions
    assert isinstance(copy, Copy)
    assert copy.sources == ("C:\\models\\a.gguf",)
    assert copy.dest == "/app/"


def test_an_escaped_escape_char_does_not_continue_the_line() -> None:
    pf = parse("FROM scratch\nLABEL a=b\\\\\nLABEL c=d\n")
    assert len(pf.stages[0].instructions) == 2


def test_json_and_shell_forms() -> None:
    pf = parse(
        'FROM scratch\nCOPY ["a b.gguf", "/app/"]\nCOPY a.gguf  b.gguf   /app/\nCMD ["-m", "x"]\n'
    )
    json_copy, shell_copy, _ = pf.stages[0].instructions
    assert isinstance(json_copy, Copy) and isinstance(shell_copy, Copy)
    assert json_copy.sources == ("a b.gguf",)
    assert shell_copy.sources == ("a.gguf", "b.gguf")
    assert json_copy.where("arg:1") == Location("GGUFPackerfile", 2, 19)


def test_malformed_json_falls_back_to_the_shell_form() -> None:
    copy = only('COPY ["a", /app/\n')
    assert isinstance(copy, Copy)
    assert copy.sources == ('["a",',)


# --- heredocs ---------------------------------------------------------------------------------


def test_heredoc_body_is_not_read_as_instructions() -> None:
    pf = parse('FROM scratch\nCAT <<EOF prompt.txt\nFROM evil\nRUN x\nEOF\nCMD ["-m", "x"]\n')
    cat, cmd = pf.stages[0].instructions
    assert isinstance(cat, Cat) and isinstance(cmd, Cmd)
    assert cat.content == "FROM evil\nRUN x\n"
    assert cat.dest == "prompt.txt"
    assert cmd.location.line == 6


def test_dash_heredoc_strips_leading_tabs_also_on_the_terminator() -> None:
    cat = only("CAT <<-EOF p.txt\n\t\tindented\n\tkeep  spaces\n\tEOF\n")
    assert isinstance(cat, Cat)
    assert cat.content == "indented\nkeep  spaces\n"
    assert cat.parts[0].chomp


@pytest.mark.parametrize("delimiter", ['"EOF"', "'EOF'", 'E"O"F'])
def test_quoted_heredoc_delimiters_are_not_expanded(delimiter: str) -> None:
    cat = only(f"CAT <<{delimiter} p.txt\n$HOME\nEOF\n")
    assert isinstance(cat, Cat)
    assert cat.parts[0].name == "EOF"
    assert not cat.parts[0].expand


def test_several_heredocs_on_one_cat_concatenate_in_order() -> None:
    cat = only("CAT <<ONE <<TWO all.txt\nfirst\nONE\nsecond\nTWO\n")
    assert isinstance(cat, Cat)
    assert cat.content == "first\nsecond\n"
    assert [p.name for p in cat.parts] == ["ONE", "TWO"]


def test_cat_with_plain_words_writes_them() -> None:
    cat = only('CAT "hello world" /p.txt\n')
    assert isinstance(cat, Cat)
    assert cat.content == '"hello world"'


def test_copy_and_add_heredocs_are_kept_apart_from_sources() -> None:
    pf = parse("FROM scratch\nCOPY a.txt <<NOTE /app/\nnote body\nNOTE\nADD <<X /x\nx\nX\n")
    copy, add = pf.stages[0].instructions
    assert isinstance(copy, Copy) and isinstance(add, Add)
    assert copy.sources == ("a.txt",)
    assert [(h.name, h.content) for h in copy.heredocs] == [("NOTE", "note body\n")]
    assert copy.heredocs[0].location == Location("GGUFPackerfile", 2, 12)
    assert add.sources == () and add.heredocs[0].content == "x\n"


def test_json_form_has_no_heredocs() -> None:
    copy = only('COPY ["<<EOF", "/app/"]\n')
    assert isinstance(copy, Copy)
    assert copy.sources == ("<<EOF",) and copy.heredocs == ()


# --- records ----------------------------------------------------------------------------------


def test_add_flags() -> None:
    digest = "sha256:" + "0" * 64
    add = only(
        f"ADD --checksum={digest} --keep-git-dir --chown=1:2 --chmod=644 --link=false "
        "--exclude=*.md --exclude=*.txt https://h/x.gguf /app/\n"
    )
    assert add == Add(
        location=Location("GGUFPackerfile", 2, 1),
        keyword="ADD",
        original=add.original,  # type: ignore[attr-defined]
        created_by=add.created_by,  # type: ignore[attr-defined]
        sources=("https://h/x.gguf",),
        dest="/app/",
        checksum=digest,
        keep_git_dir=True,
        chown="1:2",
        chmod="644",
        link=False,
        exclude=("*.md", "*.txt"),
    )


def test_copy_flags() -> None:
    copy = only("COPY --from=alpine --parents --exclude=x --chown=a --chmod=600 --link a b /d/\n")
    assert isinstance(copy, Copy)
    assert (copy.from_, copy.parents, copy.exclude, copy.chown, copy.chmod, copy.link) == (
        "alpine",
        True,
        ("x",),
        "a",
        "600",
        True,
    )
    assert copy.sources == ("a", "b") and copy.dest == "/d/"


def test_convert_defaults_to_f16_model() -> None:
    convert = only("CONVERT src out.gguf\n")
    assert isinstance(convert, Convert)
    assert (convert.type, convert.cls, convert.base, convert.from_) == ("F16", "model", None, None)
    lora = only("CONVERT --type=BF16 --class=lora --base=base --from=context a b\n")
    assert isinstance(lora, Convert)
    assert (lora.type, lora.cls, lora.base, lora.from_) == ("BF16", "lora", "base", "context")


def test_quantize_defaults_and_flags() -> None:
    quantize = only("QUANTIZE a.gguf b.gguf\n")
    assert isinstance(quantize, Quantize)
    assert quantize.type == "Q5_K_M" and quantize.imatrix is None
    full = only(
        "QUANTIZE --type=IQ2_XS --imatrix=m.dat --include-weights=a,b --include-weights=c "
        "--leave-output-tensor --output-tensor-type=Q8_0 --token-embedding-type=F16 a b\n"
    )
    assert isinstance(full, Quantize)
    assert full.include_weights == ("a", "b", "c")
    assert full.leave_output_tensor and not full.pure
    assert (full.output_tensor_type, full.token_embedding_type) == ("Q8_0", "F16")


def test_arg_gives_one_record_per_name() -> None:
    pf = parse('ARG A=1 B C="two words"\nFROM scratch\n')
    assert [(a.name, a.default) for a in pf.global_args] == [
        ("A", "1"),
        ("B", None),
        ("C", '"two words"'),
    ]
    assert pf.global_args[1].location == Location("GGUFPackerfile", 1, 9)
    assert all(isinstance(a, Arg) for a in pf.global_args)


def test_label_forms() -> None:
    pf = parse('FROM scratch\nLABEL a="x y" b=2 \\\n      c=\nLABEL legacy some value\n')
    new, legacy = pf.stages[0].instructions
    assert isinstance(new, Label) and isinstance(legacy, Label)
    assert new.items == (("a", '"x y"'), ("b", "2"), ("c", ""))
    assert legacy.items == (("legacy", "some value"),)
    assert [w.code for w in pf.warnings] == ["label-legacy"]


def test_from_forms() -> None:
    pf = parse("FROM --platform=linux/amd64 alpine:3 AS One\nFROM one\n")
    first, second = pf.stages
    assert (first.base, first.name, first.from_.platform) == ("alpine:3", "one", "linux/amd64")
    assert (second.base, second.name, second.display_name) == ("one", None, "stage-1")
    assert pf.stage("ONE") is first and pf.stage(1) is second


def test_records_are_frozen_and_keep_the_original_text() -> None:
    cmd = only('Cmd   ["-m",   "x.gguf"]\n')
    assert isinstance(cmd, Cmd)
    assert cmd.original == 'Cmd   ["-m",   "x.gguf"]'
    assert cmd.created_by == 'Cmd ["-m", "x.gguf"]'
    with pytest.raises(AttributeError):
        cmd.args = ()  # type: ignore[misc]


# --- CMD roles --------------------------------------------------------------------------------


def test_cmd_roles_point_at_the_path_index() -> None:
    args = [
        "-c", "8192",
        "-m", "main.gguf",
        "-md", "draft.gguf",
        "--mmproj", "proj.gguf",
        "--lora", "a.gguf",
        "--lora-scaled", "b.gguf:0.5",  # FNAME:SCALE: the seed's PATH SCALE is refused now
        "--control-vector", "cv.gguf",
        "--control-vector-scaled", "cv2.gguf:0.8",
    ]  # fmt: skip
    assert cmd_roles(args) == [
        Role("model", "-m", "main.gguf", 3),
        Role("drafter", "-md", "draft.gguf", 5),
        Role("projector", "--mmproj", "proj.gguf", 7),
        Role("adapter", "--lora", "a.gguf", 9),
        Role("adapter", "--lora-scaled", "b.gguf", 11, "0.5"),
        Role("adapter", "--control-vector", "cv.gguf", 13),
        Role("adapter", "--control-vector-scaled", "cv2.gguf", 15, "0.8"),
    ]


def test_cmd_roles_long_forms_last_model_wins_empty_path_is_no_role() -> None:
    roles = cmd_roles(["--model", "a", "--model", "b", "--model-draft", "", "-mm", "p"])
    assert roles == [Role("model", "--model", "b", 3), Role("projector", "-mm", "p", 7)]


def test_cmd_file_args() -> None:
    args = ["-m", "x", "--system-prompt-file", "p.txt", "--chat-template-file", "t.jinja"]
    assert [(f.flag, f.path, f.index) for f in cmd_file_args(args)] == [
        ("--system-prompt-file", "p.txt", 3),
        ("--chat-template-file", "t.jinja", 5),
    ]


# --- files ------------------------------------------------------------------------------------


def test_find_packerfile_prefers_ggufpackerfile(tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").write_text("# syntax=gpustack/gguf-packer\nFROM scratch\n")
    assert find_packerfile(tmp_path) == tmp_path / "Dockerfile"
    (tmp_path / "GGUFPackerfile").write_text("FROM scratch\n")
    assert find_packerfile(tmp_path) == tmp_path / "GGUFPackerfile"
    assert find_packerfile(tmp_path, "Dockerfile") == tmp_path / "Dockerfile"
    with pytest.raises(UsageError, match="no Packerfile at"):
        find_packerfile(tmp_path, "Missing")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UsageError, match="no GGUFPackerfile or Dockerfile"):
        find_packerfile(empty)


@pytest.mark.parametrize(
    "syntax",
    [
        "gpustack/gguf-packer:latest",
        "docker.io/gpustack/gguf-packer@sha256:" + "a" * 64,
        "localhost:5000/me/gguf-packer-dev:1",
    ],
)
def test_a_dockerfile_with_a_gguf_packer_syntax_is_a_packerfile(syntax: str) -> None:
    pf = parse(f"# syntax={syntax}\nFROM scratch\n", "ctx/Dockerfile")
    assert pf.syntax == syntax


def test_load_reads_files_and_reports_bad_encoding(tmp_path: Path) -> None:
    good = tmp_path / "GGUFPackerfile"
    good.write_text('FROM scratch\nCMD ["-m", "x"]\n')
    assert load(good).path == str(good)
    bad = tmp_path / "Bad.ggufpackerfile"
    bad.write_bytes(b"FROM scratch\nLABEL a=\xff\n")
    with pytest.raises(PackerfileError) as caught:
        load(bad)
    assert caught.value.code == "encoding"
    assert caught.value.location == Location(bad, 2, 9)
    with pytest.raises(UsageError):
        load(tmp_path / "nothing")


def test_lint_collects_every_problem_of_every_file(tmp_path: Path) -> None:
    one = tmp_path / "one"
    one.mkdir()
    (one / "GGUFPackerfile").write_text("FROM scratch\nRUN x\nCOPPY a b\n")
    two = tmp_path / "two.ggufpackerfile"
    two.write_text('ARG T=Q9_9\nFROM scratch\nQUANTIZE --type=${T} a b\nCMD ["-m", "${UNSET}"]\n')
    problems = lint([one, two])
    assert [(p.code, p.location) for p in problems] == [
        ("unknown-instruction", Location(str(one / "GGUFPackerfile"), 2, 1)),
        ("unknown-instruction", Location(str(one / "GGUFPackerfile"), 3, 1)),
        ("quantize-type", Location(str(two), 3, 10)),
        ("cmd-model", Location(str(two), 4, 1)),
    ]
    with_warnings = lint([two], include_warnings=True)
    assert "undefined-variable" in [p.code for p in with_warnings]


def test_lint_accepts_the_examples() -> None:
    examples = [d for d in sorted(DATA.iterdir()) if d.name not in NOT_CLEAN]
    assert [d.name for d in examples] == [
        "add-from-git",
        "add-from-http",
        "convert-lora",
        "dockerfile-syntax",
        "multi-stages",
        "single-stage",
    ]
    assert lint(examples) == []
    assert lint(examples, include_warnings=True) == []


def test_lint_accepts_the_examples_that_build_on_an_oci_layout() -> None:
    # FROM oci-layout://DIR[:TAG] is an image on disk, read by the native builder directly.
    assert lint([DATA / "from-image", DATA / "from-model"]) == []


def test_lint_rejects_the_plain_dockerfile_example() -> None:
    path = DATA / "plain-dockerfile" / "Dockerfile"
    (found,) = lint([DATA / "plain-dockerfile"])
    assert (found.code, found.location) == ("not-packerfile", Location(str(path), 1, 10))


def test_the_dockerfile_syntax_example_is_a_packerfile() -> None:
    path = DATA / "dockerfile-syntax" / "Dockerfile"
    assert find_packerfile(path.parent) == path
    pf = load(path)
    assert pf.syntax == "gpustack/gguf-packer:latest"
    (directive,) = pf.directives
    assert (directive.name, directive.location) == ("syntax", Location(str(path), 1, 10))
    assert [a.name for a in pf.global_args] == ["QUANTIZE_TYPE"]
    assert [s.display_name for s in pf.stages] == ["f16", "stage-1"]
    assert pf.warnings == ()


# --- .ggufpackerignore ------------------------------------------------------------------------


def test_load_ignore_of_the_from_image_example() -> None:
    context = DATA / "from-image"
    matcher = load_ignore(context)
    assert [(p.pattern, p.exclusion, p.location.line) for p in matcher.patterns] == [
        ("GGUFPackerfile", False, 1),
        ("notes", False, 2),
        ("*.bak", False, 3),
        ("base", False, 4),
    ]
    assert matcher.ignored("GGUFPackerfile")
    assert matcher.ignored("base/blobs/sha256/0123")  # the default FROM layout stays out of /app
    assert matcher.ignored("notes")
    assert matcher.ignored("notes/todo.txt")
    assert matcher.ignored("system-prompt.txt.bak")
    assert not matcher.ignored("system-prompt.txt")
    assert not matcher.ignored("notes.txt")
    assert not matcher.ignored("sub/old.bak")  # *.bak is anchored at the context root
    files = sorted(p.relative_to(context).as_posix() for p in context.rglob("*") if p.is_file())
    assert [f for f in files if not matcher.ignored(f)] == [
        ".ggufpackerignore",
        "system-prompt.txt",
    ]


def test_no_ignore_file_ignores_nothing(tmp_path: Path) -> None:
    assert not load_ignore(tmp_path).ignored("anything")


@pytest.mark.parametrize(
    ("patterns", "path", "ignored"),
    [
        ("*.md", "README.md", True),
        ("*.md", "docs/README.md", False),
        ("**/*.md", "docs/deep/README.md", True),
        ("**/*.md", "README.md", True),
        ("docs", "docs/a/b.txt", True),
        ("/docs/", "docs/a.txt", True),
        ("docs/**", "docs/a/b", True),
        ("docs/**/x", "docs/x", True),
        ("docs/**/x", "docs/a/b/x", True),
        ("a?c", "abc", True),
        ("a?c", "a/c", False),
        ("[a-c]x", "bx", True),
        ("[^a-c]x", "bx", False),
        ("\\*x", "*x", True),
        ("# comment\n*.bin", "a.bin", True),
        ("*.gguf\n!keep.gguf", "keep.gguf", False),
        ("*.gguf\n!keep.gguf", "drop.gguf", True),
        ("models\n!models/keep.gguf", "models/keep.gguf", False),
        ("!x\n*", "x", True),
        ("./a/../b", "b", True),
    ],
)
def test_ignore_patterns(patterns: str, path: str, ignored: bool) -> None:
    assert parse_ignore(patterns).ignored(path) is ignored


def test_ignore_pattern_errors_carry_their_line() -> None:
    with pytest.raises(PackerfileError) as caught:
        parse_ignore("ok\n  !\n[abc\n", "ctx/.ggufpackerignore")
    assert [(p.code, p.location) for p in caught.value.problems] == [
        ("ignore", Location("ctx/.ggufpackerignore", 2, 3)),
        ("ignore", Location("ctx/.ggufpackerignore", 3, 1)),
    ]


# --- robustness -------------------------------------------------------------------------------

_PIECES = st.sampled_from(
    [
        "FROM ", "ARG ", "CAT ", "CMD ", "COPY ", "ADD ", "LABEL ", "QUANTIZE ", "CONVERT ",
        "scratch", " AS ", "s1", "--from=", "--type=", "--checksum=", "--pure", "--class=lora",
        "<<EOF", "<<-'X'", "\nEOF\n", "\n\tX\n", '["-m", "x"]', "[1]", "${A:-b}", "$", "${",
        "'", '"', "\\", "`", "# escape=`\n", "# syntax=x\n", "\n", " ", "\t", "\r\n", "=", "0",
        "1", "https://h/x.git", "IQ2_XS", "\ufeff",
    ]
)  # fmt: skip


@settings(max_examples=400, deadline=None)
@given(st.lists(st.one_of(_PIECES, st.text(max_size=6)), max_size=40), st.booleans())
def test_random_text_raises_only_packerfile_errors(pieces: list[str], dockerfile: bool) -> None:
    text = "".join(pieces)
    try:
        pf = parse(text, "Dockerfile" if dockerfile else "GGUFPackerfile")
    except PackerfileError as err:
        assert err.problems and all(isinstance(p, PackerfileError) for p in err.problems)
        assert all(p.location is not None and p.location.line for p in err.problems)
        assert all("\n" not in str(p) for p in (err, *err.problems))  # one line each
        return
    try:
        plan(pf, build_args={"A": "x"})
    except PackerfileError as err:
        assert err.problems and all("\n" not in str(p) for p in (err, *err.problems))

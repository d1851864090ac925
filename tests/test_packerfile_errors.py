"""One test per kind of problem: its code, its exact line:col, and a message a person can act on."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.errors import HarnessError, Location
from harness.packerfile import (
    PackerfileError,
    PackerfileErrors,
    find_packerfile,
    load,
    parse,
    plan,
)

SHA = "sha256:" + "ab" * 32
DATA = Path(__file__).parent / "data" / "packerfiles"


def problem(text: str, path: str = "GGUFPackerfile") -> PackerfileError:
    """The single problem parse() finds in ``text``."""
    with pytest.raises(PackerfileError) as caught:
        parse(text, path)
    (found,) = caught.value.problems
    return found


def plan_problem(text: str, **kwargs: object) -> PackerfileError:
    """The single problem plan() finds in a file that parses."""
    pf = parse(text)
    with pytest.raises(PackerfileError) as caught:
        plan(pf, **kwargs)  # type: ignore[arg-type]
    (found,) = caught.value.problems
    return found


def at(found: PackerfileError) -> str:
    assert found.location is not None
    return f"{found.location.line}:{found.location.col}"


# --- file level -------------------------------------------------------------------------------


def test_empty_file() -> None:
    found = problem("\n# only a comment\n\n")
    assert (found.code, at(found)) == ("empty-file", "1:1")
    assert str(found) == (
        "GGUFPackerfile:1:1: the file has no instructions: a Packerfile needs at least a FROM"
    )


def test_no_from() -> None:
    found = problem("# comment\nARG A=1\n")
    assert (found.code, at(found)) == ("no-stage", "2:1")
    assert "no FROM" in found.message


def test_instruction_before_the_first_from() -> None:
    found = problem("ARG A=1\n  LABEL a=b\nFROM scratch\n")
    assert (found.code, at(found)) == ("before-from", "2:3")
    assert found.message == "LABEL comes before the first FROM: only ARG may"


def test_plain_dockerfile_is_not_a_packerfile() -> None:
    found = problem("FROM alpine\nRUN echo hi\n", "ctx/Dockerfile")
    assert (found.code, at(found)) == ("not-packerfile", "1:1")
    assert "# syntax=gpustack/gguf-packer:latest" in found.message
    assert str(found).startswith("ctx/Dockerfile:1:1: Dockerfile is not a Packerfile")


def test_the_plain_dockerfile_example_is_not_a_packerfile() -> None:
    path = DATA / "plain-dockerfile" / "Dockerfile"
    assert find_packerfile(path.parent) == path
    with pytest.raises(PackerfileError) as caught:
        load(path)
    assert caught.value.code == "not-packerfile"
    assert caught.value.location == Location(str(path), 1, 10)
    assert str(caught.value) == (
        f"{path}:1:10: Dockerfile is not a Packerfile: its syntax directive names "
        "'docker/dockerfile:1', not a gguf-packer frontend"
    )


def test_dockerfile_with_another_frontend_is_not_a_packerfile() -> None:
    found = problem("# syntax=docker/dockerfile:1.7-labs\nFROM alpine\n", "Dockerfile.infer")
    assert (found.code, at(found)) == ("not-packerfile", "1:10")
    assert "'docker/dockerfile:1.7-labs'" in found.message


def test_duplicate_directive() -> None:
    found = problem("# escape=`\n# escape=\\\nFROM scratch\n")
    assert (found.code, at(found)) == ("directive", "2:10")
    assert found.message == "only one escape parser directive can be used"


def test_invalid_escape_directive() -> None:
    found = problem("#escape = x\nFROM scratch\n")
    assert (found.code, at(found)) == ("directive", "1:11")
    assert "the escape directive takes \\ or `" in found.message


def test_unterminated_heredoc() -> None:
    found = problem("FROM scratch\nCAT  <<-END prompt.txt\nhello\n\tEND \n")
    assert (found.code, at(found)) == ("unterminated-heredoc", "2:6")
    assert found.message.startswith("unterminated heredoc <<-END: no line reading 'END'")


def test_several_problems_come_ordered_with_the_first_in_the_head() -> None:
    with pytest.raises(PackerfileErrors) as caught:
        parse("FROM scratch\nCOPPY a b\nQUANTIZE --tpye=Q4_0 a b\nRUN x\n")
    err = caught.value
    assert [(p.code, at(p)) for p in err.problems] == [
        ("unknown-instruction", "2:1"),
        ("unknown-flag", "3:10"),
        ("unknown-instruction", "4:1"),
    ]
    assert err.location == Location("GGUFPackerfile", 2, 1)
    assert str(err) == (
        "GGUFPackerfile:2:1: unknown instruction: COPPY (did you mean COPY?) (and 2 more problems)"
    )
    assert isinstance(err, HarnessError) and err.code == "unknown-instruction"


# --- instructions and flags -------------------------------------------------------------------


def test_unknown_instruction_with_a_suggestion() -> None:
    found = problem("FROM scratch\nquantise a b\n")
    assert (found.code, at(found)) == ("unknown-instruction", "2:1")
    assert found.message == "unknown instruction: quantise (did you mean QUANTIZE?)"


def test_unknown_instruction_without_a_close_match_lists_the_nine() -> None:
    found = problem('FROM scratch\nENTRYPOINT ["x"]\n')
    assert found.message == (
        "unknown instruction: ENTRYPOINT (a Packerfile knows "
        "ADD, ARG, CAT, CMD, COPY, CONVERT, FROM, LABEL, QUANTIZE)"
    )


def test_unknown_flag_with_a_suggestion() -> None:
    found = problem("FROM scratch\nCOPY --link --form=base a /b\n")
    assert (found.code, at(found)) == ("unknown-flag", "2:13")
    assert found.message == "unknown flag --form for COPY (did you mean --from?)"


def test_unknown_flag_without_a_close_match_lists_the_flags() -> None:
    found = problem("FROM scratch\nCONVERT --verbose a b\n")
    assert found.message == (
        "unknown flag --verbose for CONVERT (CONVERT takes --from, --type, --class, --base)"
    )


def test_flag_on_an_instruction_that_takes_none() -> None:
    found = problem("FROM scratch\nLABEL --x=1 a=b\n")
    assert (found.code, at(found)) == ("unknown-flag", "2:7")
    assert found.message == "unknown flag --x: LABEL takes no flags"


def test_duplicate_flag() -> None:
    found = problem("FROM scratch\nQUANTIZE --type=Q4_0 --type=Q8_0 a b\n")
    assert (found.code, at(found)) == ("flag-duplicate", "2:22")
    assert found.message == "duplicate flag --type"


def test_flag_without_its_value() -> None:
    found = problem("FROM scratch\nCOPY --from a /b\n")
    assert (found.code, at(found)) == ("flag-value", "2:6")
    assert found.message == "flag --from needs a value: --from=VALUE"


def test_boolean_flag_with_a_bad_value() -> None:
    found = problem("FROM scratch\nADD --link=yes a /b\n")
    assert (found.code, at(found)) == ("flag-value", "2:5")
    assert found.message == "flag --link expects true or false, not 'yes'"


def test_json_array_of_non_strings() -> None:
    found = problem('FROM scratch\nCMD ["-m", 1]\n')
    assert (found.code, at(found)) == ("json-strings", "2:12")
    assert "arrays must be comprised of strings only" in found.message


def test_too_few_arguments() -> None:
    found = problem("FROM scratch\nADD only-one\n")
    assert (found.code, at(found)) == ("arguments", "2:1")
    assert "at least two arguments" in found.message


def test_convert_takes_one_source() -> None:
    found = problem("FROM scratch\nCONVERT a b c\n")
    assert (found.code, at(found)) == ("arguments", "2:11")
    assert found.message == "CONVERT takes one source only, got 2"


def test_blank_arg_name() -> None:
    found = problem("FROM scratch\nARG A=1 =2\n")
    assert (found.code, at(found)) == ("arguments", "2:9")
    assert found.message == "ARG names can not be blank"


def test_heredoc_as_destination() -> None:
    found = problem("FROM scratch\nCOPY a <<EOF\nx\nEOF\n")
    assert (found.code, at(found)) == ("heredoc-dest", "2:8")
    assert found.message == "COPY cannot accept a heredoc as a destination"


def test_label_without_equals() -> None:
    found = problem("FROM scratch\nLABEL a=1 b\n")
    assert (found.code, at(found)) == ("label-syntax", "2:11")
    assert found.message == "LABEL needs key=value pairs: can't find '=' in 'b'"


# --- FROM and stages --------------------------------------------------------------------------


@pytest.mark.parametrize("line", ["FROM", "FROM a b", "FROM a AS", "FROM a TO b"])
def test_from_argument_count(line: str) -> None:
    found = problem(f"\n{line}\n")
    assert (found.code, at(found)) == ("from-args", "2:1")
    assert found.message == "FROM requires either one or three arguments: FROM IMAGE [AS NAME]"


@pytest.mark.parametrize("name", ["1st", "a/b", "_x", "a b"[:1] + "$"])
def test_invalid_stage_name(name: str) -> None:
    found = problem(f"FROM scratch AS {name}\n")
    assert (found.code, at(found)) == ("stage-name", "1:17")
    assert f"invalid name for build stage: {name!r}" in found.message


@pytest.mark.parametrize("name", ["scratch", "Context"])
def test_reserved_stage_name(name: str) -> None:
    found = problem(f"FROM alpine AS {name}\n")
    assert (found.code, at(found)) == ("stage-name", "1:16")
    assert f"stage name {name!r} is reserved" in found.message


def test_duplicate_stage_name() -> None:
    found = problem("FROM scratch AS a\nFROM scratch AS B\nFROM scratch AS b\n")
    assert (found.code, at(found)) == ("stage-duplicate", "3:17")
    assert found.message == (
        "duplicate stage name 'b': stage names must be unique (first defined at line 2)"
    )


def test_from_a_later_stage() -> None:
    found = problem("FROM later\nFROM scratch AS later\n")
    assert (found.code, at(found)) == ("from-later", "1:6")
    assert "stage 'later' is defined later (line 2)" in found.message


def test_from_an_invalid_image_reference() -> None:
    found = problem("FROM Not:A:Ref\n")
    assert (found.code, at(found)) == ("image-ref", "1:6")
    assert found.message == "FROM 'Not:A:Ref': invalid image reference"


def test_from_a_blank_base_after_expansion() -> None:
    found = plan_problem('ARG BASE=""\nFROM ${BASE}\n')
    assert (found.code, at(found)) == ("base-blank", "2:6")
    assert "base name '${BASE}' is blank" in found.message


def test_copy_from_a_later_stage() -> None:
    found = problem("FROM scratch AS a\nCOPY --from=b x y\nFROM scratch AS b\n")
    assert (found.code, at(found)) == ("from-later", "2:6")
    assert found.message == (
        "cannot use stage 'b' in COPY --from: it needs to be defined before the current "
        "stage 'a' (it is defined at line 3)"
    )


def test_quantize_from_its_own_stage_is_circular() -> None:
    found = problem("FROM scratch AS q\nQUANTIZE --from=Q a b\n")
    assert (found.code, at(found)) == ("circular", "2:10")
    assert found.message == "circular dependency: QUANTIZE --from=Q names the stage it is in (q)"


def test_convert_from_its_own_stage_index_is_circular() -> None:
    found = problem("FROM scratch\nFROM scratch\nCONVERT --from=1 a b\n")
    assert (found.code, at(found)) == ("circular", "3:9")


def test_from_a_stage_index_out_of_range() -> None:
    found = problem("FROM scratch\nCOPY --from=3 a b\n")
    assert (found.code, at(found)) == ("stage-index", "2:6")
    assert found.message == ("invalid stage index 3 in COPY --from: the file has 1 stage (0 to 0)")


def test_from_later_stage_found_only_after_expansion() -> None:
    text = "ARG SRC=a\nFROM scratch AS a\nFROM scratch AS b\nCOPY --from=${SRC} x y\n"
    assert plan(parse(text)).target.instructions[0].from_ref is not None  # type: ignore[union-attr]
    found = plan_problem(text + "FROM scratch AS c\n", build_args={"SRC": "c"}, target="b")
    assert (found.code, at(found)) == ("from-later", "4:6")


def test_unknown_target() -> None:
    found = plan_problem("FROM scratch AS f16\nFROM scratch AS final\n", target="f61")
    assert found.code == "unknown-target"
    assert found.location == Location("GGUFPackerfile")
    assert found.message == (
        "target stage 'f61' could not be found (did you mean 'f16'?); named stages: f16, final"
    )


# --- CMD --------------------------------------------------------------------------------------


def test_cmd_in_shell_form() -> None:
    found = problem("FROM scratch\nCMD   -m model.gguf\n")
    assert (found.code, at(found)) == ("cmd-json", "2:7")
    assert found.message == 'CMD must use the JSON (exec) form: CMD ["-m", "model.gguf", ...]'


def test_cmd_first_argument_must_be_a_flag() -> None:
    found = problem('FROM scratch\nCMD ["llama-server", "-m", "x.gguf"]\n')
    assert (found.code, at(found)) == ("cmd-first-arg", "2:6")
    assert "it must start with '-'" in found.message


def test_cmd_role_flag_without_its_value() -> None:
    found = problem('FROM scratch\nCMD ["-m", "x.gguf", "--lora-scaled", "a.gguf"]\n')
    assert (found.code, at(found)) == ("cmd-value", "2:22")
    assert found.message == "CMD: --lora-scaled takes FNAME:SCALE"


def test_cmd_the_seeds_two_value_lora_scaled_is_refused_with_the_new_spelling() -> None:
    found = problem('FROM scratch\nCMD ["-m", "x.gguf", "--lora-scaled", "a.gguf", "0.5"]\n')
    assert found.code == "cmd-value"
    assert found.message == (
        "CMD: --lora-scaled a.gguf 0.5: this llama-server takes --lora-scaled a.gguf:0.5"
    )


def test_cmd_an_option_llama_server_does_not_have() -> None:
    found = problem('FROM scratch\nCMD ["-m", "x.gguf", "--ctx-size=8192"]\n')
    assert found.code == "cmd-value"
    assert "write --ctx-size 8192 as two arguments" in found.message


def test_cmd_without_the_main_model() -> None:
    found = problem('FROM scratch\nCMD ["-c", "8192"]\n')
    assert (found.code, at(found)) == ("cmd-model", "2:1")
    assert found.message == (
        'command must point out the main model: add "-m", "<file>.gguf" to CMD'
    )


def test_only_the_last_cmd_must_name_the_model() -> None:
    pf = parse('FROM scratch\nCMD ["-c", "1"]\nCMD ["-m", "x"]\n')
    assert [w.code for w in pf.warnings] == ["cmd-multiple"]


def test_cmd_model_that_expands_to_nothing() -> None:
    found = plan_problem('ARG MODEL=x.gguf\nFROM scratch\nCMD ["-m", "${MODEL}"]\n',
                         build_args={"MODEL": ""})  # fmt: skip
    assert (found.code, at(found)) == ("cmd-model", "3:1")


# --- CONVERT and QUANTIZE ---------------------------------------------------------------------


def test_convert_lora_without_base() -> None:
    found = problem("FROM scratch\nCONVERT --type=F16 --class=lora adapter out.gguf\n")
    assert (found.code, at(found)) == ("convert-base", "2:20")
    assert found.message == (
        "CONVERT --class=lora needs --base=<path of the base model's directory>"
    )


def test_convert_invalid_class() -> None:
    found = problem("FROM scratch\nCONVERT --class=adapter a b\n")
    assert (found.code, at(found)) == ("convert-class", "2:9")
    assert found.message == "invalid --class 'adapter' for CONVERT: choose model or lora"


def test_convert_invalid_type() -> None:
    found = problem("FROM scratch\nCONVERT --type=FP16 a b\n")
    assert (found.code, at(found)) == ("convert-type", "2:9")
    assert found.message.startswith("invalid --type 'FP16' for CONVERT (did you mean F16?)")


def test_quantize_invalid_type_after_expansion() -> None:
    found = plan_problem(
        "ARG T=Q4_K_M\nFROM scratch\nQUANTIZE --type=${T} a b\n", build_args={"T": "q4_k_m"}
    )
    assert (found.code, at(found)) == ("quantize-type", "3:10")
    assert found.message.startswith("invalid --type 'q4_k_m' for QUANTIZE (did you mean Q4_K_M?)")


def test_quantize_include_and_exclude_weights() -> None:
    found = problem(
        "FROM scratch\nQUANTIZE --imatrix=m --exclude-weights=a --include-weights=b x y\n"
    )
    assert (found.code, at(found)) == ("quantize-weights", "2:42")
    assert found.message == "QUANTIZE takes --include-weights or --exclude-weights, not both"


@pytest.mark.parametrize("type_", ["IQ1_S", "IQ1_M", "IQ2_XXS", "IQ2_XS", "IQ2_S", "Q2_K_S"])
def test_quantize_types_that_need_an_imatrix(type_: str) -> None:
    found = problem(f"FROM scratch\nQUANTIZE --type={type_} a b\n")
    assert (found.code, at(found)) == ("quantize-imatrix", "2:10")
    assert f"QUANTIZE --type={type_} needs --imatrix=<file>" in found.message
    parse(f"FROM scratch\nQUANTIZE --type={type_} --imatrix=i.dat a b\n")


def test_quantize_imatrix_switched_off_by_an_empty_build_arg() -> None:
    text = "ARG IM=i.dat\nFROM scratch\nQUANTIZE --type=IQ2_M --imatrix=${IM} a b\n"
    assert plan(parse(text)).target.instructions[0].imatrix == "i.dat"  # type: ignore[union-attr]
    found = plan_problem(text, build_args={"IM": ""})
    assert (found.code, at(found)) == ("quantize-imatrix", "3:10")


def test_quantize_invalid_tensor_type() -> None:
    found = problem("FROM scratch\nQUANTIZE --output-tensor-type=Q5_K_M a b\n")
    assert (found.code, at(found)) == ("tensor-type", "2:10")
    assert found.message.startswith("invalid --output-tensor-type 'Q5_K_M'")


# --- ADD and COPY -----------------------------------------------------------------------------


def test_checksum_on_copy() -> None:
    found = problem(f"FROM scratch\nCOPY --checksum={SHA} a /b\n")
    assert (found.code, at(found)) == ("checksum", "2:6")
    assert found.message.startswith("--checksum can't be specified for COPY")


def test_checksum_with_several_sources() -> None:
    found = problem(f"FROM scratch\nADD --checksum={SHA} https://h/a https://h/b /d/\n")
    assert (found.code, at(found)) == ("checksum", "2:5")
    assert found.message.startswith("--checksum can't be specified for multiple sources")


@pytest.mark.parametrize("source", ["model.gguf", "https://h/repo.git", "git@h:r.git"])
def test_checksum_with_a_non_http_source(source: str) -> None:
    found = problem(f"FROM scratch\nADD --checksum={SHA} {source} /d\n")
    assert (found.code, at(found)) == ("checksum", "2:5")
    assert found.message == f"--checksum can't be specified for non-HTTP(S) sources: {source!r}"


def test_checksum_format() -> None:
    found = problem("FROM scratch\nADD --checksum=md5:abc https://h/a /d\n")
    assert (found.code, at(found)) == ("checksum", "2:5")
    assert "expected sha256:<64 hex digits>" in found.message


def test_copy_of_a_url() -> None:
    found = problem("FROM scratch\nCOPY a https://h/x.gguf /d/\n")
    assert (found.code, at(found)) == ("copy-source", "2:8")
    assert found.message == "COPY can't download a URL (https://h/x.gguf): use ADD"


def test_copy_from_an_invalid_image() -> None:
    found = problem("FROM scratch\nCOPY --from=Bad_Image:x:y a b\n")
    assert (found.code, at(found)) == ("image-ref", "2:6")


# --- variables --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("word", "message"),
    [
        ("${}", "syntax error: bad substitution in '${}'"),
        ("${A", "syntax error: missing '}' in '${A'"),
        ("${A%%x}", "unsupported modifier (%) in substitution in '${A%%x}'"),
        ('"open', "unexpected end of statement while looking for matching double-quote"),
    ],
)
def test_bad_substitution(word: str, message: str) -> None:
    found = problem(f"FROM scratch\nCOPY a   {word}\n")
    assert (found.code, at(found)) == ("expand", "2:10")
    assert found.message.startswith(message)


def test_required_variable() -> None:
    found = plan_problem('FROM scratch\nARG A\nLABEL x="${A:?must be set}"\n')
    assert (found.code, at(found)) == ("expand", "3:7")
    assert found.message.startswith("A: must be set")


def test_undefined_variable_is_a_warning_and_expands_to_nothing() -> None:
    built = plan(parse('FROM scratch\nCOPY a /app/$NOPE\nCMD ["-m", "x"]\n'))
    copy = built.target.instructions[0]
    assert copy.dest == "/app/"  # type: ignore[union-attr]
    (warning,) = built.warnings
    assert (warning.code, at(warning)) == ("undefined-variable", "2:8")
    assert "'NOPE' is not defined here" in warning.message


def test_quantize_types_are_the_pinned_llama_cpps() -> None:
    # Regression: the seed's table still accepted types llama.cpp has removed (they failed only
    # at build time) and refused ones it has gained; both now follow the toolchain's table.
    from harness.packerfile import parse, plan

    removed = 'FROM scratch\nQUANTIZE --type=Q4_0_4_4 a.gguf b.gguf\nCMD ["-m", "b.gguf"]\n'
    with pytest.raises(PackerfileError, match=r"GGUFPackerfile:2:10: .*did you mean Q4_0"):
        plan(parse(removed))
    plan(parse(removed.replace("Q4_0_4_4", "COPY")))


def test_nesting_past_the_stack_is_an_error_not_a_traceback() -> None:
    deep = "${A:-" * 3000 + "x" + "}" * 3000
    found = problem(f'FROM scratch\nARG A=x\nLABEL a={deep}\nCMD ["-m", "m.gguf"]\n')
    assert found.code == "expand" and at(found) == "3:7"
    assert found.message.startswith("nested too deeply: more than 100 substitutions")
    assert found.message.endswith("... (18001 characters)")  # the field, cut short
    # 100 levels are read; 101 are not.
    ok = "${A:-" * 100 + "x" + "}" * 100
    parse(f'FROM scratch\nARG A=x\nLABEL a={ok}\nCMD ["-m", "m.gguf"]\n')
    with pytest.raises(PackerfileError, match="nested too deeply"):
        parse(f'FROM scratch\nARG A=x\nLABEL a=${{A:-{ok}}}\nCMD ["-m", "m.gguf"]\n')
    found = problem("FROM scratch\nCMD " + "[" * 5000 + "]" * 5000 + "\n")
    assert "CMD must use the JSON (exec) form" in found.message


def test_a_line_over_64_kib_is_refused_as_buildkit_refuses_it() -> None:
    found = problem('FROM scratch\nLABEL a="' + "x" * 70_000 + '"\nCMD ["-m", "m.gguf"]\n')
    assert found.code == "line-length" and at(found) == "2:1"
    assert found.message.startswith("this line is 70010 bytes: dockerfile line greater than")
    # BuildKit counts bytes: 32768 two-byte characters are one byte too many.
    found = problem('FROM scratch\nLABEL a="' + "é" * 32768 + '"\nCMD ["-m", "m.gguf"]\n')
    assert found.code == "line-length" and "max allowed size of 65535" in found.message

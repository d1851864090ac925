"""plan(): variables per stage, --from and FROM resolution, lineage; the example Packerfiles."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.packerfile import (
    Add,
    BuildPlan,
    Cat,
    Cmd,
    Convert,
    Copy,
    Instruction,
    Label,
    PackerfileError,
    Quantize,
    Role,
    StageRef,
    find_packerfile,
    load,
    parse,
    plan,
)

DATA = Path(__file__).parent / "data" / "packerfiles"
# FROM ${BASE} in from-model and from-image defaults to oci-layout://..., which plan() rejects
# as an invalid image reference (see test_packerfile_parse's strict xfail): plan them on an
# ordinary image reference instead.
IMAGE = "localhost:5000/tiny:q8"
EXAMPLES: dict[str, dict[str, str]] = {
    "single-stage": {},
    "multi-stages": {},
    "from-model": {"BASE": IMAGE},
    "add-from-http": {},
    "add-from-git": {},
    "from-image": {"BASE": IMAGE},
    "convert-lora": {},
    "dockerfile-syntax": {},
}
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"


def example(name: str, **kwargs: object) -> BuildPlan:
    """Plan the Packerfile of an example directory (its GGUFPackerfile, else its Dockerfile)."""
    return plan(load(find_packerfile(DATA / name)), **kwargs)  # type: ignore[arg-type]


def records(built: BuildPlan, stage: int = -1) -> list[Instruction]:
    return list(built.stages[stage].instructions)


def planned(text: str, **kwargs: object) -> BuildPlan:
    return plan(parse(text), **kwargs)  # type: ignore[arg-type]


def label_values(built: BuildPlan) -> dict[str, str]:
    return {
        k: v
        for record in built.target.instructions
        if isinstance(record, Label)
        for k, v in record.items
    }


# --- the examples -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_every_example_plans_without_warnings(name: str) -> None:
    built = example(name, build_args=EXAMPLES[name])
    assert built.warnings == ()
    assert built.target.index == len(built.packerfile.stages) - 1
    assert built.build_args == tuple(sorted(EXAMPLES[name].items()))


def test_single_stage() -> None:
    built = example("single-stage")
    assert [s.display_name for s in built.stages] == ["stage-0"]
    assert built.target.base_ref == StageRef("scratch", "scratch")
    assert built.target.from_.created_by == "FROM scratch"
    label, copy, convert, quantize, cat, cmd = records(built)
    assert isinstance(label, Label)
    assert label.items == (("gguf.model.from", "synthesized at test time"),)
    assert label.created_by == 'LABEL gguf.model.from="synthesized at test time"'
    assert isinstance(copy, Copy) and copy.from_ref == StageRef("context", "context")
    assert (copy.sources, copy.dest) == (("tiny-llama",), "tiny-llama")
    assert copy.created_by == "COPY tiny-llama tiny-llama"
    assert isinstance(convert, Convert)
    assert (convert.type, convert.cls, convert.source, convert.dest) == (
        "F16",
        "model",
        "tiny-llama",
        "tiny-llama.F16.gguf",
    )
    # Without --from, CONVERT and QUANTIZE work on the stage itself (not the build context).
    assert convert.from_ref == StageRef("stage", "stage-0", 0)
    assert isinstance(quantize, Quantize) and quantize.type == "Q4_K_M"
    assert quantize.from_ref == StageRef("stage", "stage-0", 0)
    assert quantize.created_by == (
        "QUANTIZE --type=Q4_K_M tiny-llama.F16.gguf tiny-llama.Q4_K_M.gguf"
    )
    assert isinstance(cat, Cat) and cat.dest == "system-prompt.txt"
    assert cat.content == "You are a terse assistant. Answer in one short sentence.\n"
    assert cat.created_by == "CAT <<EOF system-prompt.txt"
    assert isinstance(cmd, Cmd)
    assert cmd.args == (
        "-m",
        "tiny-llama.Q4_K_M.gguf",
        "-c",
        "2048",
        "--system-prompt-file",
        "system-prompt.txt",
    )
    assert cmd.roles == [Role("model", "-m", "tiny-llama.Q4_K_M.gguf", 1)]
    assert [(f.flag, f.path, f.index) for f in cmd.file_args] == [
        ("--system-prompt-file", "system-prompt.txt", 5)
    ]
    assert built.cmd is cmd
    assert built.args == (
        ("MODEL_NAME", "tiny-llama"),
        ("CONVERT_TYPE", "F16"),
        ("QUANTIZE_TYPE", "Q4_K_M"),
    )


def test_single_stage_with_build_args() -> None:
    built = example("single-stage", build_args={"MODEL_NAME": "m", "QUANTIZE_TYPE": "Q8_0"})
    _, copy, convert, quantize, _, cmd = records(built)
    assert isinstance(copy, Copy) and copy.sources == ("m",)
    assert isinstance(convert, Convert) and convert.dest == "m.F16.gguf"
    assert isinstance(quantize, Quantize)
    assert (quantize.type, quantize.source, quantize.dest) == ("Q8_0", "m.F16.gguf", "m.Q8_0.gguf")
    assert isinstance(cmd, Cmd) and cmd.roles == [Role("model", "-m", "m.Q8_0.gguf", 1)]
    assert dict(built.args) == {"MODEL_NAME": "m", "CONVERT_TYPE": "F16", "QUANTIZE_TYPE": "Q8_0"}
    assert built.warnings == ()


def test_multi_stages() -> None:
    built = example("multi-stages")
    assert [s.display_name for s in built.stages] == ["f16", "stage-1"]
    assert [s.base_ref for s in built.stages] == [StageRef("scratch", "scratch")] * 2
    assert built.stages[0].from_.created_by == "FROM scratch AS f16"
    copy, convert = records(built, 0)
    assert isinstance(copy, Copy) and copy.from_ref == StageRef("context", "context")
    assert isinstance(convert, Convert)
    assert convert.from_ref == StageRef("stage", "f16", 0)
    assert convert.created_by == "CONVERT --type=F16 tiny-llama tiny-llama.F16.gguf"
    label, quantize, cat, cmd = records(built)
    assert isinstance(label, Label)
    assert label.items == (("gguf.model.from", "synthesized at test time"),)
    assert isinstance(quantize, Quantize)
    assert quantize.from_ref == StageRef("stage", "f16", 0)
    assert (quantize.source, quantize.dest) == ("tiny-llama.F16.gguf", "tiny-llama.Q4_K_M.gguf")
    assert quantize.created_by == (
        "QUANTIZE --from=f16 --type=Q4_K_M tiny-llama.F16.gguf tiny-llama.Q4_K_M.gguf"
    )
    assert isinstance(cat, Cat) and cat.content == "You are a terse assistant.\n"
    assert isinstance(cmd, Cmd)
    # The ARG's double quotes go, its backslash stays; CMD keeps the expanded value as is.
    assert dict(built.args)["CHAT_TEMPLATE"] == CHAT_TEMPLATE
    assert cmd.args[-2:] == ("--chat-template", CHAT_TEMPLATE)
    assert cmd.roles == [Role("model", "-m", "tiny-llama.Q4_K_M.gguf", 1)]
    assert [(f.flag, f.index) for f in cmd.file_args] == [("--system-prompt-file", 5)]
    assert cmd.created_by == (
        'CMD ["-m", "tiny-llama.Q4_K_M.gguf", "-c", "2048", "--system-prompt-file", '
        '"system-prompt.txt", "--chat-template", "{% for m in messages %}<|{{ m[\'role\'] }}|>'
        "{{ m['content'] }}\\\\n{% endfor %}{% if add_generation_prompt %}<|assistant|>"
        '{% endif %}"]'
    )


def test_multi_stages_targeting_the_first_stage() -> None:
    built = example("multi-stages", target="f16")
    assert [s.display_name for s in built.stages] == ["f16"]
    assert built.cmd is None
    (warning,) = built.warnings
    assert warning.code == "no-model"
    assert warning.location == built.target.from_.location
    assert warning.location is not None and warning.location.line == 7


def test_from_model_inherits_the_cmd_of_its_image() -> None:
    built = example("from-model", build_args={"BASE": IMAGE})
    assert [s.display_name for s in built.stages] == ["stage-0"]
    assert built.target.base_ref == StageRef("image", IMAGE)
    assert built.target.from_.created_by == f"FROM {IMAGE}"
    # No CMD: the image's Cmd and roles are inherited, so plan() has none and warns of nothing.
    assert built.target.cmd is None and built.cmd is None
    assert built.warnings == ()
    (cat,) = records(built)
    assert isinstance(cat, Cat) and cat.dest == "system-prompt.txt"
    assert cat.content == "Think step by step, then give the answer in one sentence.\n"
    assert built.args == (("BASE", IMAGE),)


def test_add_from_http() -> None:
    built = example("add-from-http")
    label, add, cmd = records(built)
    assert isinstance(label, Label) and label.items == (("gguf.model.from", "a local HTTP server"),)
    assert isinstance(add, Add)
    assert add.sources == ("http://127.0.0.1:8000/SmolLM2-135M-Instruct.Q4_1.gguf",)
    assert add.dest == "app/"
    assert add.checksum == f"sha256:{SHA256}"
    assert add.created_by == (
        f"ADD --checksum=sha256:{SHA256} http://127.0.0.1:8000/SmolLM2-135M-Instruct.Q4_1.gguf app/"
    )
    assert isinstance(cmd, Cmd)
    assert cmd.roles == [Role("model", "-m", "app/SmolLM2-135M-Instruct.Q4_1.gguf", 1)]
    assert cmd.args == ("-m", "app/SmolLM2-135M-Instruct.Q4_1.gguf", "-c", "2048")


def test_add_from_http_checks_the_checksum_once_expanded() -> None:
    mirrored = example("add-from-http", build_args={"BASE_URL": "https://mirror.example"})
    add = records(mirrored)[1]
    assert isinstance(add, Add) and add.checksum == f"sha256:{SHA256}"
    assert add.sources == ("https://mirror.example/SmolLM2-135M-Instruct.Q4_1.gguf",)
    with pytest.raises(PackerfileError) as caught:
        example("add-from-http", build_args={"MODEL_SHA256": "abc"})
    (found,) = caught.value.problems
    assert found.code == "checksum"
    assert found.location is not None
    assert (found.location.line, found.location.col) == (8, 12)
    assert "invalid --checksum 'sha256:abc'" in found.message


def test_add_from_git_with_build_args() -> None:
    built = example(
        "add-from-git",
        build_args={"REPO_URL": "http://127.0.0.1:9000/other.git", "QUANTIZE_TYPE": "Q5_K_M"},
    )
    assert [s.display_name for s in built.stages] == ["f16", "stage-1"]
    add, convert = records(built, 0)
    assert isinstance(add, Add)
    assert add.sources == ("http://127.0.0.1:9000/other.git",) and add.dest == "tiny-llama"
    assert add.checksum is None and not add.keep_git_dir
    assert isinstance(convert, Convert) and convert.type == "F16"
    assert convert.dest == "tiny-llama.F16.gguf"
    quantize, cmd = records(built)
    assert isinstance(quantize, Quantize)
    assert quantize.from_ref == StageRef("stage", "f16", 0)
    assert (quantize.type, quantize.source, quantize.dest) == (
        "Q5_K_M",
        "tiny-llama.F16.gguf",
        "tiny-llama.Q5_K_M.gguf",
    )
    assert isinstance(cmd, Cmd) and built.cmd is cmd
    assert cmd.args == ("-m", "tiny-llama.Q5_K_M.gguf", "-c", "2048")
    assert built.args == (
        ("REPO_URL", "http://127.0.0.1:9000/other.git"),
        ("QUANTIZE_TYPE", "Q5_K_M"),
    )


def test_from_image() -> None:
    built = example("from-image", build_args={"BASE": "ubuntu:22.04"})
    assert built.target.base_ref == StageRef("image", "ubuntu:22.04")
    assert built.target.from_.created_by == "FROM ubuntu:22.04"
    label, named, context, cmd = records(built)
    assert isinstance(label, Label)
    assert label.created_by == 'LABEL gguf.model.from="a named build context"'
    assert label_values(built) == {"gguf.model.from": "a named build context"}
    # --from=smollm2 names no stage: a named build context (an image, to the plan).
    assert isinstance(named, Copy) and named.from_ref == StageRef("image", "smollm2")
    assert (named.sources, named.dest) == (("SmolLM2-135M-Instruct.Q4_1.gguf",), "/app/")
    assert isinstance(context, Copy) and context.from_ref == StageRef("context", "context")
    assert (context.sources, context.dest) == (("/",), "/app")
    assert isinstance(cmd, Cmd)
    assert cmd.roles == [Role("model", "-m", "/app/SmolLM2-135M-Instruct.Q4_1.gguf", 1)]
    assert [(f.flag, f.path, f.index) for f in cmd.file_args] == [
        ("--system-prompt-file", "/app/system-prompt.txt", 3)
    ]
    assert built.warnings == ()


def test_convert_lora() -> None:
    built = example("convert-lora")
    assert [s.display_name for s in built.stages] == ["lora", "base", "stage-2"]
    copy_base, copy_adapter, convert = records(built, 0)
    assert isinstance(copy_base, Copy) and copy_base.sources == ("tiny-llama",)
    assert isinstance(copy_adapter, Copy) and copy_adapter.sources == ("tiny-llama-lora",)
    assert isinstance(convert, Convert)
    assert (convert.cls, convert.base, convert.type) == ("lora", "tiny-llama", "F16")
    assert (convert.source, convert.dest) == ("tiny-llama-lora", "tiny-llama-lora.F16.gguf")
    base_convert = records(built, 1)[1]
    assert isinstance(base_convert, Convert)
    assert (base_convert.cls, base_convert.type) == ("model", "Q8_0")
    model, adapter, cmd = records(built)
    assert isinstance(model, Copy) and model.from_ref == StageRef("stage", "base", 1)
    assert isinstance(adapter, Copy) and adapter.from_ref == StageRef("stage", "lora", 0)
    assert adapter.created_by == "COPY --from=lora tiny-llama-lora.F16.gguf ."
    assert isinstance(cmd, Cmd) and built.cmd is cmd
    assert cmd.roles == [
        Role("model", "-m", "tiny-llama.Q8_0.gguf", 1),
        Role("adapter", "--lora", "tiny-llama-lora.F16.gguf", 3),
    ]


def test_dockerfile_syntax_with_build_args() -> None:
    built = plan(
        load(DATA / "dockerfile-syntax" / "Dockerfile"), build_args={"QUANTIZE_TYPE": "Q8_0"}
    )
    assert built.packerfile.syntax == "gpustack/gguf-packer:latest"
    assert [s.display_name for s in built.stages] == ["f16", "stage-1"]
    convert = records(built, 0)[1]
    assert isinstance(convert, Convert) and convert.type == "F16"  # the default type
    quantize = records(built)[0]
    assert isinstance(quantize, Quantize) and quantize.type == "Q8_0"
    assert quantize.created_by == (
        "QUANTIZE --from=f16 --type=Q8_0 tiny-llama.F16.gguf tiny-llama.Q8_0.gguf"
    )
    assert built.cmd is not None and built.cmd.args == ("-m", "tiny-llama.Q8_0.gguf")
    assert built.args == (("QUANTIZE_TYPE", "Q8_0"),)
    assert built.build_args == (("QUANTIZE_TYPE", "Q8_0"),)


def test_dockerfile_with_a_projector_role() -> None:
    built = plan(
        parse(
            "# syntax=gpustack/gguf-packer:latest\n"
            "ARG MODEL=llava-v1.5-7b\nFROM scratch\nLABEL gguf.model.vendor=second-state\n"
            'CMD ["-m", "${MODEL}-Q5_K_M.gguf", "--mmproj", "${MODEL}-mmproj-model-f16.gguf"]\n',
            "ctx/Dockerfile",
        )
    )
    assert built.cmd is not None
    assert [(r.kind, r.path, r.index) for r in built.cmd.roles] == [
        ("model", "llava-v1.5-7b-Q5_K_M.gguf", 1),
        ("projector", "llava-v1.5-7b-mmproj-model-f16.gguf", 3),
    ]
    assert label_values(built)["gguf.model.vendor"] == "second-state"
    assert built.warnings == ()


# --- variables --------------------------------------------------------------------------------


def test_global_args_are_visible_in_every_stage_without_redeclaring() -> None:
    built = planned(
        "ARG NAME=qwen\nFROM scratch AS one\nLABEL a=$NAME\n"
        "FROM scratch\nCOPY --from=one ${NAME}.gguf .\nLABEL b=${NAME}\n"
        'CMD ["-m", "${NAME}.gguf"]\n'
    )
    assert built.stages[0].instructions[0].items == (("a", "qwen"),)  # type: ignore[union-attr]
    copy = built.target.instructions[0]
    assert isinstance(copy, Copy) and copy.sources == ("qwen.gguf",)
    assert label_values(built) == {"b": "qwen"}
    assert built.warnings == ()


def test_build_args_override_global_and_stage_defaults() -> None:
    text = "ARG G=global\nFROM scratch\nARG S=stage\nLABEL g=$G s=$S\n"
    assert label_values(planned(text)) == {"g": "global", "s": "stage"}
    overridden = planned(text, build_args={"G": "g2", "S": "s2"})
    assert label_values(overridden) == {"g": "g2", "s": "s2"}
    assert overridden.args == (("G", "g2"),)


def test_stage_arg_without_default_takes_the_global_value() -> None:
    built = planned("ARG V=1\nFROM scratch\nARG V\nARG W\nLABEL v=$V w=${W:-none}\n")
    assert label_values(built) == {"v": "1", "w": "none"}
    arg = built.target.instructions[0]
    assert arg.value == "1" and arg.created_by == "ARG V=1"  # type: ignore[union-attr]


def test_build_args_need_a_declaring_arg() -> None:
    built = planned(
        'FROM scratch\nLABEL x=${UNDECLARED:-default}\nCMD ["-m", "x"]\n',
        build_args={"UNDECLARED": "y"},
    )
    assert label_values(built) == {"x": "default"}
    (warning,) = built.warnings
    assert warning.code == "unused-build-arg"
    assert "UNDECLARED" in warning.message


def test_a_stage_arg_is_visible_only_after_it_and_only_in_its_stage() -> None:
    built = planned(
        "FROM scratch AS a\nLABEL before=${X:-unset}\nARG X=1\nLABEL after=$X\n"
        "FROM scratch\nCOPY --from=a f .\nLABEL other=${X:-unset}\n"
    )
    first = built.stages[0].instructions
    assert first[0].items == (("before", "unset"),)  # type: ignore[union-attr]
    assert first[2].items == (("after", "1"),)  # type: ignore[union-attr]
    assert label_values(built) == {"other": "unset"}


def test_from_sees_only_global_args() -> None:
    built = planned("ARG BASE=alpine\nFROM ${BASE}\nARG BASE=ubuntu\n")
    assert built.target.base_ref == StageRef("image", "alpine")


def test_platform_args_are_visible_everywhere_when_passed() -> None:
    text = 'FROM --platform=$TARGETPLATFORM scratch\nLABEL arch=$TARGETARCH\nCMD ["-m", "x"]\n'
    built = planned(text, build_args={"TARGETPLATFORM": "linux/arm64", "TARGETARCH": "arm64"})
    assert built.target.from_.platform == "linux/arm64"
    assert label_values(built) == {"arch": "arm64"}
    assert built.warnings == ()


def test_global_defaults_can_use_earlier_globals() -> None:
    built = planned("ARG A=x\nARG B=${A}-y\nFROM scratch\nLABEL b=$B\n", build_args={"A": "z"})
    assert label_values(built) == {"b": "z-y"}


@pytest.mark.parametrize(
    ("word", "value"),
    [
        ("$V", "v"),
        ("${V}", "v"),
        ("pre${V}post", "prevpost"),
        ("${U:-word}", "word"),
        ("${E:-word}", "word"),
        ("${E-word}", ""),
        ("${U-word}", "word"),
        ("${V:+word}", "word"),
        ("${E:+word}", ""),
        ("${E+word}", "word"),
        ("${U:+word}", ""),
        ("${U:-${V}}", "v"),
        ("\\$V", "$V"),
        ("'$V'", "$V"),
        ('"$V x"', "v x"),
        ('"\\$V"', "$V"),
        ("a\\ b", "a b"),
        ("$", "$"),
        ("$1", ""),
    ],
)
def test_variable_forms(word: str, value: str) -> None:
    built = planned(f'ARG V=v\nARG E=""\nFROM scratch\nLABEL k={word}\n')
    assert label_values(built) == {"k": value}


def test_escape_directive_backtick_escapes_dollars_too() -> None:
    built = planned("# escape=`\nARG V=v\nFROM scratch\nLABEL a=`$V b=$V `\n      c=C:\\dir\n")
    assert label_values(built) == {"a": "$V", "b": "v", "c": "C:\\dir"}


def test_cmd_strings_keep_their_quotes_and_backslashes() -> None:
    built = planned(
        "ARG T=\"{{ 'x' }}\"\nFROM scratch\n"
        'CMD ["-m", "m.gguf", "--chat-template", "${T}", "-a", "\'lit\' \\\\n \\\\$T"]\n'
    )
    assert built.cmd is not None
    assert built.cmd.args[3:] == ("{{ 'x' }}", "-a", "'lit' \\n $T")
    assert built.cmd.created_by == (
        'CMD ["-m", "m.gguf", "--chat-template", "{{ \'x\' }}", "-a", "\'lit\' \\\\n $T"]'
    )


def test_include_weights_are_split_after_expansion() -> None:
    built = planned("ARG W=a,b\nFROM scratch\nQUANTIZE --imatrix=i --include-weights=$W,c x y\n")
    quantize = built.target.instructions[0]
    assert isinstance(quantize, Quantize) and quantize.include_weights == ("a", "b", "c")


def test_optional_flags_that_expand_to_nothing_are_unset() -> None:
    built = planned("ARG FROM_STAGE\nFROM scratch\nCONVERT --from=${FROM_STAGE} --base=$B a b\n")
    convert = built.target.instructions[0]
    assert isinstance(convert, Convert)
    assert convert.from_ is None and convert.base is None
    assert convert.from_ref == StageRef("stage", "stage-0", 0)


# --- heredocs, expanded -----------------------------------------------------------------------


def test_unquoted_heredoc_expands_and_keeps_backslashes() -> None:
    built = planned(
        "ARG WHO=world\nFROM scratch\nCAT <<EOF <<'RAW' <<-\"TABS\" out.txt\n"
        "hello $WHO \\$HOME C:\\dir \\n\nEOF\nraw $WHO\nRAW\n\t\ttabbed ${WHO}\n\tTABS\n"
    )
    cat = built.target.instructions[0]
    assert isinstance(cat, Cat)
    assert cat.content == "hello world $HOME C:\\dir \\n\nraw $WHO\ntabbed ${WHO}\n"
    assert cat.created_by == "CAT <<EOF <<'RAW' <<-\"TABS\" out.txt"


def test_cat_words_expand_as_shell_words() -> None:
    # The shell form splits on blanks before anything else, as BuildKit does for COPY.
    built = planned("ARG WHO=world\nFROM scratch\nCAT \"hello   $WHO\" '$WHO' out.txt\n")
    cat = built.target.instructions[0]
    assert isinstance(cat, Cat) and cat.content == "hello world $WHO"


def test_copy_heredoc_expands_unless_quoted() -> None:
    built = planned("ARG A=1\nFROM scratch\nCOPY <<X <<'Y' /d/\n$A\nX\n$A\nY\n")
    copy = built.target.instructions[0]
    assert isinstance(copy, Copy)
    assert [h.content for h in copy.heredocs] == ["1\n", "$A\n"]


# --- stages and references --------------------------------------------------------------------


def test_lineage_has_only_the_stages_the_target_needs_in_build_order() -> None:
    text = (
        "FROM scratch AS a\nFROM scratch AS b\nCOPY --from=a x x\n"
        "FROM scratch AS unused\nFROM b AS c\nQUANTIZE --from=0 x y\n"
    )
    built = planned(text)
    assert [s.display_name for s in built.stages] == ["a", "b", "c"]
    assert built.target.base_ref == StageRef("stage", "b", 1)
    assert [s.display_name for s in planned(text, target="B").stages] == ["a", "b"]
    assert [s.display_name for s in planned(text, target="unused").stages] == ["unused"]


@pytest.mark.parametrize(
    ("value", "ref"),
    [
        ("0", StageRef("stage", "base", 0)),
        ("1", StageRef("stage", "alpine", 1)),
        ("BASE", StageRef("stage", "base", 0)),
        ("alpine", StageRef("stage", "alpine", 1)),
        ("context", StageRef("context", "context")),
        ("scratch", StageRef("scratch", "scratch")),
        ("llama.cpp:server", StageRef("image", "llama.cpp:server")),
        ("ghcr.io/a/b@sha256:" + "0" * 64, StageRef("image", "ghcr.io/a/b@sha256:" + "0" * 64)),
    ],
)
def test_from_flag_resolves_index_then_name_then_context_then_image(
    value: str, ref: StageRef
) -> None:
    text = f"FROM scratch AS base\nFROM scratch AS alpine\nFROM scratch\nCOPY --from={value} a b\n"
    copy = planned(text).target.instructions[0]
    assert isinstance(copy, Copy) and copy.from_ref == ref


def test_a_from_flag_close_to_a_stage_name_warns_that_it_is_an_image() -> None:
    built = planned('FROM scratch AS f16\nFROM scratch\nCOPY --from=f61 a b\nCMD ["-m", "b"]\n')
    copy = built.target.instructions[0]
    assert isinstance(copy, Copy) and copy.from_ref == StageRef("image", "f61")
    assert [w.code for w in built.warnings] == ["from-image"]


def test_from_naming_its_own_stage_is_an_image_as_in_docker() -> None:
    built = planned("FROM alpine AS alpine\n")
    assert built.target.base_ref == StageRef("image", "alpine")


def test_target_inherits_the_cmd_of_the_stage_it_builds_on() -> None:
    built = planned('FROM scratch AS base\nCMD ["-m", "x.gguf"]\nFROM base\nLABEL a=b\n')
    assert built.target.cmd is None
    assert built.cmd is not None and built.cmd.args == ("-m", "x.gguf")
    assert built.warnings == ()


def test_a_target_without_any_cmd_on_scratch_warns() -> None:
    built = example("convert-lora", target="lora")
    assert [s.display_name for s in built.stages] == ["lora"]
    assert built.cmd is None
    (warning,) = built.warnings
    assert warning.code == "no-model"
    assert warning.location == built.target.from_.location
    assert warning.location is not None and warning.location.line == 2
    assert "stage 'lora' has no CMD and builds on scratch" in warning.message


def test_history_keeps_the_original_spelling() -> None:
    built = planned(
        "ARG T=Q4_K_M\nfrom   scratch   as   Final\nquantize  --type=$T   a.gguf  b.gguf\n"
        'Label  x="two  words"\ncmd ["-m", "b.gguf"]\n'
    )
    quantize, label, cmd = built.target.instructions
    assert built.target.from_.created_by == "from scratch as Final"
    assert quantize.created_by == "quantize --type=Q4_K_M a.gguf b.gguf"
    assert label.created_by == 'Label x="two  words"'
    assert cmd.created_by == 'cmd ["-m", "b.gguf"]'


def test_plan_does_not_change_the_parsed_records() -> None:
    pf = parse("ARG T=Q4_0\nFROM scratch\nQUANTIZE --type=$T a b\n")
    built = plan(pf)
    assert pf.stages[0].instructions[0].type == "$T"  # type: ignore[union-attr]
    assert built.target.instructions[0].type == "Q4_0"  # type: ignore[union-attr]
    assert pf.stages[0].base_ref is None
    assert built.packerfile is pf

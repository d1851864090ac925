"""Evaluating expectations against GGUF facts and image labels: every matcher form, both ways."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from harness.expect import Check, CheckResult, Subject, evaluate, load_spec
from harness.gguf._facts import ArraySummary, GGUFFacts

FACTS = GGUFFacts(
    path="smollm2.gguf",
    paths=("smollm2.gguf",),
    version=3,
    byte_order="little",
    architecture="llama",
    name="SmolLM2 135M Instruct",
    file_type="Q8_0",
    file_type_inferred=False,
    parameters=134_515_008,
    size=143_000_000,
    bpw=8.504,
    file_size=145_000_000,
    tensor_count=272,
    context_length=8192,
    embedding_length=576,
    block_count=30,
    head_count=9,
    head_count_kv=3,
    vocab_size=49152,
    chat_template=True,
    tokenizer_model="gpt2",
    metadata={
        "general.license": "apache-2.0",
        "general.flag": True,
        "general.one": 1,
        "llama.context_length": 8192,
        "llama.rope.freq_base": 100000.0,
        "llama.attention.layer_norm_rms_epsilon": 9.999999747378752e-06,  # 1e-5 as float32
        "tokenizer.ggml.tokens": ArraySummary("STRING", 49152),
    },
)
LABELS = {
    "gguf.model.architecture": "llama",
    "gguf.model.parameters": "134.52 M",
    "org.opencontainers.image.title": "SmolLM2 135M Instruct",
    "n": "8192",
}


def _results(
    tmp_path: Path,
    expect: str,
    facts: GGUFFacts = FACTS,
    labels: Mapping[str, str] | None = LABELS,
) -> list[CheckResult]:
    body = "".join(f"  {line}\n" for line in expect.splitlines())
    path = tmp_path / "model.yaml"
    path.write_text(f"schemaVersion: 1\nexpect:\n{body}")
    subject = Subject(facts, labels)
    return [evaluate(check, subject) for check in load_spec(path).checks]


def _one(tmp_path: Path, expect: str, **kwargs: Any) -> CheckResult:
    [result] = _results(tmp_path, expect, **kwargs)
    # Results go into the JSON report as they are.
    json.dumps({"expected": result.expected, "actual": result.actual})
    return result


CASES = [
    # plain values: equality
    ("architecture: llama", True, "architecture is 'llama'"),
    ("architecture: qwen2", False, "expected architecture 'qwen2', got 'llama'"),
    ("file_type: {equals: Q8_0}", True, "file_type is 'Q8_0'"),
    ("tokenizer_model: llama", False, "expected tokenizer_model 'llama', got 'gpt2'"),
    # regex / not_regex / contains / in
    ("name: {regex: '^SmolLM2'}", True, "name 'SmolLM2 135M Instruct' matching /^SmolLM2/"),
    (
        "name: {regex: '^Qwen'}",
        False,
        "expected name matching /^Qwen/, got 'SmolLM2 135M Instruct'",
    ),
    ("name: {not_regex: '(?i)base'}", True, "name 'SmolLM2 135M Instruct' not matching /(?i)base/"),
    (
        "name: {not_regex: Instruct}",
        False,
        "expected name not matching /Instruct/, got 'SmolLM2 135M Instruct'",
    ),
    ("name: {contains: 135M}", True, "name 'SmolLM2 135M Instruct' containing '135M'"),
    (
        "name: {contains: 360M}",
        False,
        "expected name containing '360M', got 'SmolLM2 135M Instruct'",
    ),
    ("file_type: {in: [Q8_0, Q4_0]}", True, "file_type 'Q8_0' one of 'Q8_0', 'Q4_0'"),
    ("file_type: {in: [Q4_K_M]}", False, "expected file_type one of 'Q4_K_M', got 'Q8_0'"),
    # several tests: all must hold, the message names the ones that failed
    (
        "name: {regex: '^Smol', contains: 360M, not_regex: base}",
        False,
        "expected name containing '360M', got 'SmolLM2 135M Instruct'",
    ),
    # metadata numbers
    ("metadata: {llama.context_length: 8192}", True, "metadata llama.context_length is 8192"),
    (
        "metadata: {llama.context_length: 8193}",  # integers are exact, however large
        False,
        "expected metadata llama.context_length 8193, got 8192",
    ),
    (
        "metadata: {llama.context_length: {min: 1, max: 4096}}",
        False,
        "expected metadata llama.context_length at most 4096, got 8192",  # only what failed
    ),
    (
        "metadata: {llama.context_length: {min: 2048}}",
        True,
        "metadata llama.context_length 8192 at least 2048",
    ),
    (
        "metadata: {llama.context_length: {max: 2048}}",
        False,
        "expected metadata llama.context_length at most 2048, got 8192",
    ),
    # floats compare at float32 precision; ints equal floats
    (
        "metadata: {llama.attention.layer_norm_rms_epsilon: 1.0e-5}",
        True,
        "metadata llama.attention.layer_norm_rms_epsilon is 1e-05",
    ),
    ("metadata: {llama.rope.freq_base: 100000}", True, "metadata llama.rope.freq_base is 100000"),
    (
        "metadata: {llama.rope.freq_base: 10000}",
        False,
        "expected metadata llama.rope.freq_base 10000, got 100000",
    ),
    # booleans are not numbers
    ("metadata: {general.flag: true}", True, "metadata general.flag is true"),
    ("metadata: {general.one: true}", False, "expected metadata general.one true, got 1"),
    ("metadata: {general.flag: 1}", False, "expected metadata general.flag 1, got true"),
    # arrays: summarized, so only their length can be tested
    (
        "metadata: {tokenizer.ggml.tokens: {length: 49152}}",
        True,
        "metadata tokenizer.ggml.tokens an array of 49152 STRING with length 49152",
    ),
    (
        "metadata: {tokenizer.ggml.tokens: {length: {min: 100000}}}",
        False,
        "expected metadata tokenizer.ggml.tokens with length at least 100000, got an array of"
        " 49152 STRING (length 49152)",
    ),
    (
        "metadata: {tokenizer.ggml.tokens: {contains: hello}}",
        False,
        "expected metadata tokenizer.ggml.tokens containing 'hello', got an array of 49152 STRING"
        " (array contents are not read; test its length)",
    ),
    (
        "metadata: {general.license: {length: 10}}",
        True,
        "metadata general.license 'apache-2.0' with length 10",
    ),
    (
        "metadata: {general.one: {length: 1}}",
        False,
        "expected metadata general.one with length 1, got 1 (neither a string nor an array)",
    ),
    (
        "metadata: {general.license: {min: 1}}",
        False,
        "expected metadata general.license at least 1, got 'apache-2.0' (not a number)",
    ),
    # presence
    (
        "metadata: {general.license: {present: true}}",
        True,
        "metadata general.license 'apache-2.0' present",
    ),
    (
        "metadata: {general.url: {present: true}}",
        False,
        "expected metadata general.url present, but the GGUF does not record it",
    ),
    ("metadata: {general.url: {present: false}}", True, "metadata general.url is absent"),
    (
        "metadata: {general.license: {present: false}}",
        False,
        "expected metadata general.license absent, got 'apache-2.0'",
    ),
    (
        "metadata: {general.url: x}",
        False,
        "expected metadata general.url 'x', but the GGUF does not record it",
    ),
    # labels are text; numbers compare with them by text or value
    ("labels: {gguf.model.architecture: llama}", True, "label gguf.model.architecture is 'llama'"),
    ("labels: {n: 8192}", True, "label n is '8192'"),
    ("labels: {n: {min: 4096}}", True, "label n '8192' at least 4096"),
    (
        "labels: {gguf.model.parameters: {regex: '^494'}}",
        False,
        "expected label gguf.model.parameters matching /^494/, got '134.52 M'",
    ),
    (
        "labels: {gguf.model.vendor: gguf-packer}",
        False,
        "expected label gguf.model.vendor 'gguf-packer', but the image has no such label",
    ),
    # sizes and counts: exact as written, or bounds
    ("parameters: 134.52M", True, "parameters is 134.52M (134,515,008)"),
    ("parameters: 134.53M", False, "expected parameters 134.53M, got 134.52M (134,515,008)"),
    ("parameters: 0.13B", True, "parameters is 0.13B (134,515,008)"),
    ("parameters: 134515008", True, "parameters is 134.52 M (134,515,008)"),
    ("parameters: 134515009", False, "expected parameters 134515009, got 134.52 M (134,515,008)"),
    (
        "parameters: {min: 130M, max: 140M}",
        True,
        "parameters 134.52 M (134,515,008) within [130M, 140M]",
    ),
    (
        "parameters: {max: 100M}",
        False,
        "expected parameters at most 100M, got 134.52 M (134,515,008)",
    ),
    ("size: 136.38MiB", True, "size is 136.38MiB (143,000,000)"),
    ("size: 143 MB", True, "size is 143 MB (143,000,000)"),
    ("size: {max: 100MiB}", False, "expected size at most 100MiB, got 136.38 MiB (143,000,000)"),
    (
        "file_size: {min: 1GB}",
        False,
        "expected file_size at least 1GB, got 138.28 MiB (145,000,000)",
    ),
    # plain numbers: floats as written, integers exactly
    ("bpw: 8.5", True, "bpw is 8.504"),
    ("bpw: 8.51", False, "expected bpw 8.51, got 8.504"),
    ("bpw: 9", True, "bpw is 8.504"),  # written without decimals: 8.5 to 9.5
    ("bpw: {min: 4, max: 8}", False, "expected bpw within [4, 8], got 8.504"),
    ("context_length: 8192", True, "context_length is 8192"),
    ("context_length: 4096", False, "expected context_length 4096, got 8192"),
    ("block_count: {min: 31}", False, "expected block_count at least 31, got 30"),
    ("tensor_count: {min: 100, max: 300}", True, "tensor_count 272 within [100, 300]"),
    ("embedding_length: 576", True, "embedding_length is 576"),
    ("vocab_size: {max: 32000}", False, "expected vocab_size at most 32000, got 49152"),
    # chat template presence
    ("chat_template: true", True, "chat_template is present"),
    ("chat_template: present", True, "chat_template is present"),
    ("chat_template: absent", False, "expected chat_template absent, but it is present"),
]


@pytest.mark.parametrize(("expect", "passed", "message"), CASES, ids=[c[0] for c in CASES])
def test_check(tmp_path: Path, expect: str, passed: bool, message: str) -> None:
    result = _one(tmp_path, expect)
    assert (result.passed, result.message) == (passed, message)


def test_missing_facts(tmp_path: Path) -> None:
    bare = dataclasses.replace(FACTS, context_length=None, name=None, chat_template=False)
    result = _one(tmp_path, "context_length: 8192", facts=bare)
    assert (result.passed, result.actual) == (False, None)
    assert result.message == "expected context_length 8192, but the GGUF does not record it"
    result = _one(tmp_path, "name: {present: false}", facts=bare)
    assert (result.passed, result.message) == (True, "name is absent")
    result = _one(tmp_path, "chat_template: false", facts=bare)
    assert (result.passed, result.message) == (True, "chat_template is absent")


def test_labels_need_an_image(tmp_path: Path) -> None:
    result = _one(tmp_path, "labels: {gguf.model.architecture: llama}", labels=None)
    assert not result.passed
    assert result.actual is None
    assert result.message == (
        "expected label gguf.model.architecture 'llama', but the artifact is a bare GGUF file"
        " without an image, so it has no labels"
    )


def test_results_carry_json_values(tmp_path: Path) -> None:
    results = _results(
        tmp_path,
        "parameters: 134.52M\n"
        "size: {min: 50MiB}\n"
        "bpw: {min: 4, max: 9}\n"
        "file_type: {in: [Q8_0]}\n"
        "chat_template: true\n"
        "metadata:\n"
        "  tokenizer.ggml.tokens: {length: {min: 1}}\n",
    )
    assert [(r.expected, r.actual) for r in results] == [
        ({"written": "134.52M", "min": 134_515_000, "max": 134_525_000}, 134_515_008),
        ({"min": 50 * 1024**2}, 143_000_000),
        ({"min": 4, "max": 9}, 8.504),
        ({"in": ["Q8_0"]}, "Q8_0"),
        ({"present": True}, True),
        ({"length": {"min": 1}}, {"type": "STRING", "length": 49152}),
    ]
    assert all(isinstance(r.check, Check) for r in results)
    json.dumps([[r.expected, r.actual] for r in results])


def test_check_subjects(tmp_path: Path) -> None:
    path = tmp_path / "model.yaml"
    path.write_text(
        "schemaVersion: 1\nexpect:\n  bpw: 5\n  metadata: {a.b: 1}\n  labels: {c.d: x}\n"
    )
    assert [check.subject for check in load_spec(path).checks] == [
        "bpw",
        "metadata a.b",
        "label c.d",
    ]

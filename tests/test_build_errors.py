"""Every way a native build fails: a BuildError that names the Packerfile line, and no image.

Each case is a small Packerfile over a tiny GGUF (no llama.cpp needed). The same failure through
``gguf-harness build`` is one error line on stderr and exit status 1, never a traceback.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from harness.builder import BuildError, BuildOptions, build
from harness.cli import main
from harness.errors import HarnessError
from harness.oci import (
    HistoryEntry,
    LayerEntry,
    LayoutWriter,
    extract,
    files,
    image_config,
    read_layout,
)
from harness.packerfile import PackerfileError
from tests.gguf_files import write_model

MODEL = 'COPY model.gguf .\nCMD ["-m", "model.gguf"]\n'
OS_FILES = {
    "etc/os-release": b'NAME="Tiny OS"\n',
    "etc/passwd": b"root:x:0:0:root:/root:/bin/sh\nllama:x:1000:1001::/home/llama:/bin/sh\n",
    "etc/group": b"root:x:0:\nmodels:x:2000:\n",
}


@pytest.fixture(autouse=True)
def build_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "cache"
    monkeypatch.setenv("GGUF_HARNESS_CACHE", str(cache))
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    return cache


@pytest.fixture(scope="module")
def model_gguf(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    path = tmp_path_factory.mktemp("model") / "model.gguf"
    write_model(path)
    return path.read_bytes()


def write_base(out: Path) -> None:
    """A tiny ordinary image (no model) at ``out``, tagged latest."""
    with LayoutWriter(out) as writer:
        layer = writer.add_layer([LayerEntry(p, data) for p, data in OS_FILES.items()])
        config = image_config(
            {"Labels": {"com.example.os": "tiny"}},
            [layer.diff_id],
            [HistoryEntry("ADD rootfs.tar / # buildkit", comment="")],
            "2024-01-01T00:00:00Z",
        )
        writer.tag(writer.add_image(config, [layer]), "latest")


def _tar(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        info = tarfile.TarInfo(name)
        info.type = kind
        info.linkname = link
        data = b"abc" if kind == tarfile.REGTYPE else b""
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _layer_blob(layout: Path) -> Path:
    image = read_layout(layout, "latest")
    return image.blob_path(image.layers[0].digest)


def _corrupt_layer(layout: Path) -> None:
    blob = _layer_blob(layout)
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, other bytes
    blob.chmod(0o644)
    blob.write_bytes(bytes(data))


def _write_bad_rootfs(out: Path) -> None:
    """A layout whose config names more diff_ids than the manifest has layers."""
    with LayoutWriter(out) as writer:
        layer = writer.add_layer([LayerEntry("etc/os-release", OS_FILES["etc/os-release"])])
        config = image_config({}, [layer.diff_id, layer.diff_id], [], "2024-01-01T00:00:00Z")
        writer.tag(writer.add_image(config, [layer.descriptor]), "latest")


def _drop_layer(layout: Path) -> None:
    _layer_blob(layout).unlink()


def _break_index(layout: Path) -> None:
    (layout / "index.json").write_text('{"schemaVersion": 2, "manifests": [')


Setup = Callable[[Path], None]


def _files(**named: bytes | str) -> Setup:
    def setup(context: Path) -> None:
        for name, data in named.items():
            path = context / name.replace("__", "/")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data if isinstance(data, bytes) else data.encode())

    return setup


def _base(then: Setup | None = None) -> Setup:
    def setup(context: Path) -> None:
        write_base(context / "base")
        if then is not None:
            then(context / "base")

    return setup


def _outside_link(context: Path) -> None:
    (context.parent / "secret.txt").write_text("not in the context\n")
    (context / "secret.txt").symlink_to(context.parent / "secret.txt")


# (id, Packerfile, setup, line of the failing instruction, what the message says)
CASES: list[tuple[str, str, Setup | None, int, str]] = [
    (
        "copy-source-missing",
        "FROM scratch\nCOPY weights/ /app/\n" + MODEL,
        None,
        2,
        "weights/: not found in the build context",
    ),
    (
        "copy-from-stage-missing",
        "FROM scratch AS one\nCOPY model.gguf .\nFROM scratch\nCOPY --from=one other.gguf .\n"
        + MODEL,
        None,
        4,
        "other.gguf: not found in stage one",
    ),
    (
        "cmd-names-a-missing-file",
        'FROM scratch\nCOPY model.gguf .\nCMD ["-m", "model.gguf", "--lora", "lora.gguf"]\n',
        None,
        3,
        r"CMD names lora\.gguf \(--lora\), which is not in the image",
    ),
    ("no-cmd", "FROM scratch\nCOPY model.gguf .\n", None, 1, "the image has no CMD"),
    (
        "from-a-registry",
        "FROM ghcr.io/gpustack/qwen:0.5b\n" + MODEL,
        None,
        1,
        "the native builder reads images from OCI layouts on disk",
    ),
    (
        "copy-from-a-registry",
        "FROM scratch\nCOPY --from=ghcr.io/gpustack/qwen:0.5b model.gguf .\n" + MODEL,
        None,
        2,
        "the native builder reads images from OCI layouts on disk",
    ),
    (
        "several-sources-no-slash",
        "FROM scratch\nCOPY model.gguf notes.txt app\n" + MODEL,
        _files(**{"notes.txt": "n"}),
        2,
        "with several sources needs a destination ending in /",
    ),
    (
        "glob-sources-no-slash",
        "FROM scratch\nCOPY *.txt app\n" + MODEL,
        _files(**{"a.txt": "a", "b.txt": "b"}),
        2,
        "with several sources needs a destination ending in /",
    ),
    (
        "chown-unknown-user-on-scratch",
        "FROM scratch\nCOPY --chown=llama model.gguf .\n" + MODEL,
        None,
        2,
        "--chown: no 'llama' in the stage's /etc/passwd",
    ),
    (
        "chown-unknown-user",
        "FROM oci-layout://base:latest\nCOPY --chown=nobody model.gguf .\n" + MODEL,
        _base(),
        2,
        "--chown: no 'nobody' in the stage's /etc/passwd",
    ),
    (
        "chown-unknown-group",
        "FROM oci-layout://base:latest\nCOPY --chown=llama:wheel model.gguf .\n" + MODEL,
        _base(),
        2,
        "--chown: no 'wheel' in the stage's /etc/group",
    ),
    (
        "chmod-not-octal",
        "FROM scratch\nCOPY --chmod=u+x model.gguf .\n" + MODEL,
        None,
        2,
        "--chmod=u\\+x: expected an octal mode",
    ),
    (
        "chmod-not-a-digit",
        "FROM scratch\nCOPY --chmod=9 model.gguf .\n" + MODEL,
        None,
        2,
        "--chmod=9: expected an octal mode",
    ),
    (
        "chmod-negative",
        "FROM scratch\nCOPY --chmod=-1 model.gguf .\n" + MODEL,
        None,
        2,
        "--chmod=-1: expected an octal mode",
    ),
    (
        "chmod-too-large",
        "FROM scratch\nCOPY --chmod=17777 model.gguf .\n" + MODEL,
        None,
        2,
        "--chmod=17777: expected an octal mode",
    ),
    (
        "base-index-malformed",
        "FROM oci-layout://base:latest\n" + MODEL,
        _base(_break_index),
        1,
        "index.json.*malformed JSON",
    ),
    (
        "base-not-a-layout",
        "FROM oci-layout://nothing:latest\n" + MODEL,
        None,
        1,
        "oci-layout://nothing:latest: ",
    ),
    (
        "base-tag-missing",
        "FROM oci-layout://base:v9\n" + MODEL,
        _base(),
        1,
        "no image tagged 'v9'",
    ),
    (
        "base-layer-missing",
        "FROM oci-layout://base:latest\n" + MODEL,
        _base(_drop_layer),
        1,
        "missing",
    ),
    (
        "base-diff-ids-mismatch",
        "FROM oci-layout://base:latest\n" + MODEL,
        lambda context: _write_bad_rootfs(context / "base"),
        1,
        "the config lists 2 diff_ids for 1 layers",
    ),
    (
        "base-layer-corrupted",
        "FROM oci-layout://base:latest\n" + MODEL,
        _base(_corrupt_layer),
        1,
        "oci-layout://base:latest: ",
    ),
    (
        "tar-member-leaves-the-root",
        "FROM scratch\nADD evil.tar /app/\n" + MODEL,
        _files(**{"evil.tar": _tar("../../etc/evil")}),
        2,
        "archive member '../../etc/evil' leaves the root",
    ),
    (
        "tar-member-absolute",
        "FROM scratch\nADD evil.tar /app/\n" + MODEL,
        _files(**{"evil.tar": _tar("/etc/evil")}),
        2,
        "archive member '/etc/evil' leaves the root",
    ),
    (
        "tar-member-symlink",
        "FROM scratch\nADD evil.tar /app/\n" + MODEL,
        _files(**{"evil.tar": _tar("passwd", tarfile.SYMTYPE, "/etc/passwd")}),
        2,
        "links and devices are not unpacked",
    ),
    (
        "context-link-leaves-the-context",
        "FROM scratch\nCOPY secret.txt .\n" + MODEL,
        _outside_link,
        2,
        "secret.txt: points outside the build context",
    ),
    (
        "quantize-missing-file",
        "FROM scratch\nQUANTIZE --type=Q8_0 f16.gguf q8.gguf\n" + MODEL,
        None,
        2,
        "f16.gguf: no such file in the source of this step",
    ),
    (
        "secret-netrc-in-a-directory",
        "FROM scratch\nCOPY home /app/\n" + MODEL,
        _files(**{"home/.netrc": "machine r login u password p"}),
        2,
        r"home/\.netrc: a credentials file \(\.netrc\); refusing to put it into an image layer",
    ),
    (
        "secret-docker-config",
        "FROM scratch\nCOPY home/.docker/config.json /app/\n" + MODEL,
        _files(**{"home/.docker/config.json": '{"auths": {}}'}),
        2,
        r"home/\.docker/config\.json: a credentials file",
    ),
    (
        "secret-private-key",
        "FROM scratch\nCOPY deploy.txt /app/\n" + MODEL,
        _files(**{"deploy.txt": "-----BEGIN OPENSSH PRIVATE KEY-----\nabc\n"}),
        2,
        r"deploy\.txt: a private key",
    ),
    (
        "quantize-already-quantized",
        "FROM scratch\nCOPY model.gguf src.gguf\nQUANTIZE --type=Q4_K_M src.gguf q.gguf\n" + MODEL,
        None,
        3,
        r"QUANTIZE src\.gguf is already quantized \(Q8_0\): add --allow-requantize",
    ),
    (
        "convert-missing-directory",
        "FROM scratch\nCONVERT --type=F16 hf-model model.F16.gguf\n" + MODEL,
        None,
        2,
        "hf-model: no such directory in the source of this step",
    ),
    (
        "add-git-unreachable",
        "FROM scratch\nADD http://127.0.0.1:9/none.git repo\n" + MODEL,
        None,
        2,
        r"http://127\.0\.0\.1:9/none\.git: git clone",
    ),
    (
        "add-http-unreachable",
        "FROM scratch\nADD http://127.0.0.1:9/model.gguf /app/\n" + MODEL,
        None,
        2,
        r"download failed .*rerun to resume",
    ),
]


def _context(tmp_path: Path, packerfile: str, setup: Setup | None, model: bytes) -> Path:
    context = tmp_path / "context"
    context.mkdir()
    (context / "GGUFPackerfile").write_text(packerfile)
    (context / "model.gguf").write_bytes(model)
    if setup is not None:
        setup(context)
    return context


@pytest.mark.parametrize(("packerfile", "setup", "line", "message"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])  # fmt: skip
def test_a_failing_build_names_the_packerfile_line(
    tmp_path: Path,
    model_gguf: bytes,
    packerfile: str,
    setup: Setup | None,
    line: int,
    message: str,
) -> None:
    context = _context(tmp_path, packerfile, setup, model_gguf)
    out = tmp_path / "out"
    with pytest.raises(BuildError, match=message) as caught:
        build(BuildOptions(context=context, output=out))
    error = caught.value
    assert error.location is not None
    assert (error.location.path, error.location.line) == (str(context / "GGUFPackerfile"), line)
    assert str(error).startswith(f"{context / 'GGUFPackerfile'}:{line}:")
    assert "\n" not in str(error)
    assert not out.exists()
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith((".out", "out"))]


@pytest.mark.parametrize(("packerfile", "setup", "line", "message"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])  # fmt: skip
def test_the_cli_prints_one_line_and_exits_1(
    tmp_path: Path,
    model_gguf: bytes,
    capsys: pytest.CaptureFixture[str],
    packerfile: str,
    setup: Setup | None,
    line: int,
    message: str,
) -> None:
    context = _context(tmp_path, packerfile, setup, model_gguf)
    status = main(["build", str(context), "-o", str(tmp_path / "out")])
    captured = capsys.readouterr()
    assert status == 1
    assert captured.out == ""
    errors = [entry for entry in captured.err.splitlines() if not entry.startswith("=> ")]
    assert len(errors) == 1, captured.err
    assert errors[0].startswith(f"gguf-harness: error: {context / 'GGUFPackerfile'}:{line}:")
    assert "Traceback" not in captured.err
    assert not (tmp_path / "out").exists()


def test_the_installed_command_prints_no_traceback(tmp_path: Path, model_gguf: bytes) -> None:
    context = _context(tmp_path, "FROM scratch\nCOPY model.gguf .\n", None, model_gguf)
    done = subprocess.run(
        [sys.executable, "-m", "harness", "build", str(context), "-o", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        env={**os.environ, "GGUF_HARNESS_CACHE": str(tmp_path / "cache")},
        timeout=120,
    )
    assert done.returncode == 1
    assert done.stdout == ""
    lines = [entry for entry in done.stderr.splitlines() if not entry.startswith("=> ")]
    assert lines == [
        f"gguf-harness: error: {context / 'GGUFPackerfile'}:1:1: the image has no CMD: "
        "it must name the main model with -m"
    ]


# --- the same instructions, right: the cases above fail for the reason they name -------------


def test_chown_chmod_and_arg_work_on_a_base_with_users(tmp_path: Path, model_gguf: bytes) -> None:
    packerfile = (
        "FROM oci-layout://base:latest\n"
        "ARG MODE=600\n"
        "COPY --chown=llama --chmod=${MODE} model.gguf /app/\n"
        "COPY --chown=1234:models notes.txt /app/\n"
        'CMD ["-m", "/app/model.gguf"]\n'
    )
    context = _context(tmp_path, packerfile, _files(**{"notes.txt": "n"}), model_gguf)
    write_base(context / "base")
    build(BuildOptions(context=context, output=tmp_path / "out"))
    image = read_layout(tmp_path / "out")
    history = [(h["created_by"], h.get("empty_layer", False)) for h in image.config["history"]]
    assert history == [
        ("ADD rootfs.tar / # buildkit", False),
        ("ARG MODE=600 # buildkit", True),
        ("COPY --chown=llama --chmod=600 model.gguf /app/ # buildkit", False),
        ("COPY --chown=1234:models notes.txt /app/ # buildkit", False),
        ('CMD ["-m", "/app/model.gguf"] # buildkit', True),
    ]
    seen = files(image)
    model = seen["/app/model.gguf"]
    # Docker's rule: a user given without a group has its UID as the GID too
    assert (model.uid, model.gid, model.mode) == (1000, 1000, 0o600)
    notes = seen["/app/notes.txt"]
    assert (notes.uid, notes.gid, notes.mode) == (1234, 2000, 0o644)
    assert image.labels["com.example.os"] == "tiny"


def test_a_base_corrupted_after_a_cached_build_is_still_refused(
    tmp_path: Path, model_gguf: bytes
) -> None:
    """The base's files are cached by manifest digest; its layers are reused as they are, so a
    layer blob that rotted since must not slip into the new image unchecked."""
    context = _context(tmp_path, "FROM oci-layout://base:latest\n" + MODEL, _base(), model_gguf)
    build(BuildOptions(context=context, output=tmp_path / "first"))
    _corrupt_layer(context / "base")
    with pytest.raises(BuildError, match="oci-layout://base:latest") as caught:
        build(BuildOptions(context=context, output=tmp_path / "second"))
    assert str(caught.value).startswith(f"{context / 'GGUFPackerfile'}:1:")
    assert not (tmp_path / "second").exists()


def test_a_cmd_without_a_model_is_a_packerfile_error_with_its_line(
    tmp_path: Path, model_gguf: bytes
) -> None:
    packerfile = 'FROM scratch\nCOPY model.gguf .\nCMD ["-c", "2048"]\n'
    context = _context(tmp_path, packerfile, None, model_gguf)
    with pytest.raises(PackerfileError, match="command must point out the main model") as caught:
        build(BuildOptions(context=context, output=tmp_path / "out"))
    assert str(caught.value).startswith(f"{context / 'GGUFPackerfile'}:3:")
    assert not (tmp_path / "out").exists()


def test_a_wrong_checksum_format_names_its_line(tmp_path: Path, model_gguf: bytes) -> None:
    packerfile = "FROM scratch\nADD --checksum=md5:abc http://127.0.0.1:9/x.gguf /app/\n" + MODEL
    context = _context(tmp_path, packerfile, None, model_gguf)
    with pytest.raises(HarnessError, match="checksum") as caught:
        build(BuildOptions(context=context, output=tmp_path / "out"))
    assert f"{context / 'GGUFPackerfile'}:2:" in str(caught.value)


def test_an_unpacked_tar_lands_in_the_destination(tmp_path: Path, model_gguf: bytes) -> None:
    context = _context(
        tmp_path,
        "FROM scratch\nADD data.tar /app/\n" + MODEL,
        _files(**{"data.tar": _tar("sub/file.txt")}),
        model_gguf,
    )
    build(BuildOptions(context=context, output=tmp_path / "out"))
    image = read_layout(tmp_path / "out")
    assert sorted(files(image)) == sorted(["/app", "/app/sub", "/app/sub/file.txt", "/model.gguf"])
    assert extract(image, "/app/sub/file.txt", tmp_path / "file.txt").read_bytes() == b"abc"


@pytest.mark.component("llama.cpp")
def test_allow_requantize_quantizes_a_quantized_file(tmp_path: Path, model_gguf: bytes) -> None:
    context = _context(
        tmp_path,
        "FROM scratch\nCOPY model.gguf src.gguf\n"
        "QUANTIZE --allow-requantize --type=Q4_0 src.gguf /q.gguf\n"
        'CMD ["-m", "/q.gguf"]\n',
        None,
        model_gguf,
    )
    build(BuildOptions(context=context, output=tmp_path / "out"))
    image = read_layout(tmp_path / "out")
    out = extract(image, "/q.gguf", tmp_path / "q.gguf")
    from harness.gguf import read_facts

    assert read_facts(out).file_type == "Q4_0"


def test_an_archive_bomb_in_add_is_refused_streamed(tmp_path: Path, model_gguf: bytes) -> None:
    import gzip as gz

    bomb = io.BytesIO()
    with (
        gz.GzipFile(fileobj=bomb, mode="wb", compresslevel=9) as packed,
        tarfile.open(fileobj=packed, mode="w|") as tar,
    ):
        info = tarfile.TarInfo("zeros.bin")
        info.size = 300 << 20  # 300 MiB of zeros: ~300 KiB packed
        tar.addfile(info, io.BytesIO(bytes(info.size)))
    context = _context(
        tmp_path,
        "FROM scratch\nADD bomb.tar.gz /app/\n" + MODEL,
        _files(**{"bomb.tar.gz": bomb.getvalue()}),
        model_gguf,
    )
    import resource

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(BuildError, match=r"bomb\.tar\.gz: unpacks to more than \d+ bytes") as e:
        build(BuildOptions(context=context, output=tmp_path / "out"))
    assert e.value.location is not None and e.value.location.line == 2
    # streamed: the process did not hold the 300 MiB member (or even the 64 MiB cap) in memory
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert grown < 48 << 10  # KiB
    assert not (tmp_path / "out").exists()


def test_a_named_context_has_its_ignore_file_too(tmp_path: Path, model_gguf: bytes) -> None:
    # A credentials file in a named context, left out by that context's .dockerignore: the
    # build goes through without it (and would refuse it otherwise).
    named = tmp_path / "weights"
    (named / "home").mkdir(parents=True)
    (named / "home" / ".netrc").write_text("machine r login u password p")
    (named / "home" / "notes.txt").write_text("ok")
    context = _context(
        tmp_path, "FROM scratch\nCOPY --from=w home /app/\n" + MODEL, None, model_gguf
    )
    with pytest.raises(BuildError, match="a credentials file"):
        build(BuildOptions(context=context, output=tmp_path / "out1", contexts={"w": named}))
    (named / ".dockerignore").write_text("**/.netrc\n")
    build(BuildOptions(context=context, output=tmp_path / "out2", contexts={"w": named}))
    assert sorted(files(read_layout(tmp_path / "out2"))) == [
        "/app", "/app/notes.txt", "/model.gguf",
    ]  # fmt: skip

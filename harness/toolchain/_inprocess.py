"""llama.cpp's quantizer called in this process, through llama-cpp-python's ctypes binding.

``llama_model_quantize`` is the function llama-quantize itself calls, so the output bytes are the
same. At the pinned commit its imatrix parameter is a plain C array of ``{name, data, size}``
records, built here from the file ``_imatrix`` loads; its log arrives through the process-wide
``llama_log_set`` callback, captured for the duration of one call.
"""

from __future__ import annotations

import ctypes
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.errors import ToolchainError

from ._imatrix import Imatrix, load_imatrix
from ._llama import Progress
from ._process import error_line
from ._qtypes import QuantizeOptions

if TYPE_CHECKING:  # numpy only where an imatrix is read or passed: not on the import path
    import numpy as np

__all__ = ["quantize_in_process"]

# enum ggml_log_level at the pinned commit (llama_cpp._logger still uses an older numbering)
_LOG_ERROR = 4
_LOG_CONT = 5
_KV_OVERRIDE_INT = 0
_KV_OVERRIDE_STR = 3
_KV_TEXT = 128

# llama.cpp's log callback is process-wide: one in-process quantization at a time.
_LOCK = threading.Lock()


def quantize_in_process(
    source: Path, out: Path, options: QuantizeOptions, progress: Progress | None
) -> None:
    """Run ``llama_model_quantize`` in this process; its log goes to ``progress``."""
    binding = _binding()
    params = binding.llama_model_quantize_default_params()
    params.ftype = options.ftype
    params.nthread = options.nthread or 0
    params.pure = options.pure
    params.allow_requantize = options.allow_requantize
    params.only_copy = options.type == "COPY"
    if options.leave_output_tensor:
        params.quantize_output_tensor = False
    if options.output_tensor_type is not None:
        params.output_tensor_type = options.output_tensor_type
    if options.token_embedding_type is not None:
        params.token_embedding_type = options.token_embedding_type

    # The C arrays below point into these objects: they must outlive the call.
    keep_alive: list[Any] = []
    if options.imatrix is not None:
        matrix = load_imatrix(options.imatrix)
        entries = matrix.select(options.include_weights, options.exclude_weights)
        if entries:
            params.imatrix = _imatrix_array(binding, entries, keep_alive)
            label = options.imatrix_label or os.fspath(options.imatrix)
            overrides = _imatrix_overrides(binding, label, matrix, entries)
            keep_alive.append(overrides)
            params.kv_overrides = ctypes.cast(
                overrides, ctypes.POINTER(binding.llama_model_kv_override)
            )

    log = _Log(progress)
    with _LOCK, _capture_log(binding, log):
        status = binding.llama_model_quantize(
            os.fsencode(source), os.fsencode(out), ctypes.byref(params)
        )
    keep_alive.clear()
    if status != 0:
        raise ToolchainError.at(
            source, f"quantizing to {options.type} failed: {log.reason()}", detail=log.tail()
        )


def _binding() -> Any:
    try:
        import llama_cpp.llama_cpp as binding
    except (ImportError, OSError) as error:
        raise ToolchainError(f"cannot load llama.cpp through llama_cpp: {error}") from error
    return binding


def _imatrix_array(binding: Any, entries: dict[str, np.ndarray], keep_alive: list[Any]) -> Any:
    import numpy as np

    record = binding.llama_model_imatrix_data
    array = (record * (len(entries) + 1))()  # zeroed: the last record is the terminator
    float_p = ctypes.POINTER(ctypes.c_float)
    for index, (name, values) in enumerate(entries.items()):
        data = np.ascontiguousarray(values, dtype=np.float32)
        encoded = name.encode("utf-8")
        keep_alive += [data, encoded]
        array[index].name = encoded
        array[index].data = data.ctypes.data_as(float_p)
        array[index].size = data.size
    keep_alive.append(array)
    return ctypes.cast(array, ctypes.POINTER(record))


def _imatrix_overrides(
    binding: Any, label: str, matrix: Imatrix, entries: dict[str, np.ndarray]
) -> Any:
    # The same metadata, in the same order, that llama-quantize records about its imatrix.
    values: list[tuple[str, str | int]] = [("quantize.imatrix.file", label)]
    if matrix.datasets:
        values.append(("quantize.imatrix.dataset", matrix.datasets[0]))
    values.append(("quantize.imatrix.entries_count", len(entries)))
    if matrix.chunk_count > 0:
        values.append(("quantize.imatrix.chunks_count", matrix.chunk_count))
    record = binding.llama_model_kv_override
    array = (record * (len(values) + 1))()  # zeroed: an empty key ends the list
    for index, (key, value) in enumerate(values):
        array[index].key = key.encode("utf-8")
        if isinstance(value, str):
            array[index].tag = _KV_OVERRIDE_STR
            array[index].value.val_str = value.encode("utf-8")[: _KV_TEXT - 1]
        else:
            array[index].tag = _KV_OVERRIDE_INT
            array[index].value.val_i64 = value
    return array


class _Log:
    """llama.cpp's log, reassembled into lines as its callback hands them over in pieces."""

    def __init__(self, progress: Progress | None) -> None:
        self._progress = progress
        self._pending = ""
        self._level = 0
        self.lines: list[tuple[int, str]] = []

    def feed(self, level: int, text: str) -> None:
        if level != _LOG_CONT and not self._pending:
            self._level = level
        self._pending += text
        while "\n" in self._pending:
            line, self._pending = self._pending.split("\n", 1)
            self._emit(line)

    def close(self) -> None:
        if self._pending:
            self._emit(self._pending)
            self._pending = ""

    def _emit(self, line: str) -> None:
        line = line.rstrip()
        if not line:
            return
        self.lines.append((self._level, line))
        if self._progress is not None:
            self._progress(line)

    def reason(self) -> str:
        for _, line in reversed(self.lines):
            if "failed to quantize:" in line:
                return line.split("failed to quantize:", 1)[1].strip()
        errors = [line for level, line in self.lines if level == _LOG_ERROR]
        if errors:
            return errors[-1].strip()
        return error_line(self.tail())

    def tail(self, count: int = 40) -> str:
        return "\n".join(line for _, line in self.lines[-count:])


@contextmanager
def _capture_log(binding: Any, log: _Log) -> Iterator[None]:
    callback_type: Callable[..., Any] = binding.llama_log_callback

    def receive(level: int, text: bytes | None, _user_data: object) -> None:
        if text:
            log.feed(level, text.decode("utf-8", "replace"))

    callback = callback_type(receive)
    previous = callback_type()
    previous_data = ctypes.c_void_p()
    binding.llama_log_get(ctypes.byref(previous), ctypes.byref(previous_data))
    binding.llama_log_set(callback, None)
    try:
        yield
    finally:
        binding.llama_log_set(previous, previous_data)
        log.close()

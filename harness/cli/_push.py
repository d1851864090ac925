"""`push`: an OCI layout to a registry; a SIGINT or SIGTERM stops it between chunks (the next
run resumes), a second one at once."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from harness.errors import HarnessError, UsageError
from harness.units import parse_size

__all__ = ["push_command"]


def push_command(args: argparse.Namespace) -> int:
    from harness import _progress
    from harness.distribution import DEFAULT_CHUNK_SIZE, RegistryOptions, push_layout

    from ._stop import graceful_stop

    _progress.configure(quiet=args.quiet)
    directory, colon, tag = args.layout.rpartition(":")
    if not colon or "/" in tag:
        directory, tag = args.layout, ""
    chunk = parse_size(args.chunk_size) if args.chunk_size else DEFAULT_CHUNK_SIZE
    if chunk < 1 << 20:
        raise UsageError(f"--chunk-size {args.chunk_size}: at least 1MiB")
    with graceful_stop() as stop:
        try:
            result = push_layout(
                Path(directory),
                args.reference,
                tag=tag or None,
                options=RegistryOptions(insecure=args.insecure, chunk_size=chunk),
                report=None if args.quiet else _say,
            )
        except HarnessError as error:
            if stop.signum is None:
                raise
            print(f"gguf-harness: {error}", file=sys.stderr)  # "stopped after N of M bytes..."
            return stop.status
    state = "pushed" if result.changed else "unchanged"
    print(f"{result.reference} {result.descriptor.digest} ({state}, {result.bytes_sent} bytes)")
    return 0


def _say(message: str) -> None:
    print(message, file=sys.stderr)

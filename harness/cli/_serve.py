"""`run` and `smoke`: a model served by llama-server (or its container) from the command line."""

from __future__ import annotations

import argparse
import signal
import sys

__all__ = ["run_command", "smoke_command"]


def run_command(args: argparse.Namespace) -> int:
    from harness.smoke import dry_run, front, ports, server_command, start

    command = server_command(args.image, args.server_args)
    # llama-server has no --system-prompt-file: a proxy on the port asked for adds the prompt.
    inner, note = ports(command, args.port)
    if args.dry_run:
        print(dry_run(command, args.by, port=inner).command_line)
        if note:
            print(note, file=sys.stderr)
        return 0
    # A signal while the server loads stops it too (start() cleans up on any exception); once it
    # serves, Server.serve passes each signal on to it and waits.
    previous = {signum: signal.signal(signum, _interrupted) for signum in _STOP_SIGNALS}
    try:
        with start(command, args.by, port=inner) as server, front(server, args.port) as url:
            if note:
                print(note, file=sys.stderr)
            print(f"serving {args.image} at {url} (Ctrl-C stops it)", file=sys.stderr)
            return server.serve()
    except _Interrupted as stop:
        return 128 + stop.signum
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


_STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


class _Interrupted(BaseException):
    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _interrupted(signum: int, _frame: object) -> None:
    raise _Interrupted(signum)


def smoke_command(args: argparse.Namespace) -> int:
    from harness.smoke import SmokeCheck, server_command, smoke

    check = SmokeCheck.from_mapping(
        {"name": "prompt", "kind": "chat", "prompt": args.prompt, "max_tokens": args.max_tokens}
    )
    run = smoke(server_command(args.image, args.server_args), [check], args.by)
    (result,) = run.results
    print(result.text if result.text is not None else result.message)
    return 0 if result.passed else 1

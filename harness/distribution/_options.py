"""How to reach a registry: TLS, credentials, retries, chunk size, in one frozen record."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ._credentials import Credentials

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "DEFAULT_RANGE_SEGMENT",
    "DEFAULT_RANGE_STREAMS",
    "DEFAULT_TRANSFERS",
    "RegistryOptions",
    "RetryPolicy",
]

# Big enough that HTTP round trips cost nothing next to the bytes, small enough that a broken
# connection costs at most one chunk on a registry that can resume.
DEFAULT_CHUNK_SIZE = 64 << 20
# Blobs moved at once: the shards of a split model, a model and its projector.
DEFAULT_TRANSFERS = 4
# One big blob's download over this many connections, a segment each: object storage behind a
# registry often caps each connection's rate. At most streams x segment bytes are held.
DEFAULT_RANGE_STREAMS = 4
DEFAULT_RANGE_SEGMENT = 16 << 20


@dataclass(frozen=True)
class RetryPolicy:
    """Transient failures (5xx, 429, a reset or refused connection) are retried ``attempts``
    times in all, waiting ``backoff`` seconds, doubling up to ``max_wait``; a ``Retry-After``
    from the registry is honoured up to ``max_wait``."""

    attempts: int = 5
    backoff: float = 0.5
    max_wait: float = 8.0

    def wait(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (0-based)."""
        if retry_after is not None and retry_after >= 0:
            return min(retry_after, self.max_wait)
        return float(min(self.backoff * (2**attempt), self.max_wait))


@dataclass(frozen=True)
class RegistryOptions:
    """Connection settings for one registry.

    ``insecure`` allows plain HTTP and TLS without certificate checks (docker's "insecure
    registry", skopeo's ``--tls-verify=false``); ``ca_file`` trusts one more CA instead (a
    self-signed registry), on top of the system's and ``/etc/docker/certs.d/<host>/*.crt``.
    ``credentials`` None means: look them up (environment, docker config, helpers).
    ``transfers``: blobs pushed or pulled at once. ``range_streams``: connections one big blob
    is downloaded over, ``range_segment`` bytes each at a time (``harness.distribution._ranges``:
    for storage that caps each connection's rate; its digest stays one sequential pass).
    """

    insecure: bool = False
    ca_file: Path | None = None
    credentials: Credentials | None = None
    retry: RetryPolicy = RetryPolicy()
    chunk_size: int = DEFAULT_CHUNK_SIZE
    connect_timeout: float = 10.0
    read_timeout: float = 120.0
    user_agent: str = "gguf-harness"
    transfers: int = DEFAULT_TRANSFERS
    range_streams: int = DEFAULT_RANGE_STREAMS
    range_segment: int = DEFAULT_RANGE_SEGMENT

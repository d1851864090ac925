"""OCI distribution: push OCI layouts to registries and pull images from them, verified.

``RegistryClient`` speaks the distribution API to one registry (manifests, blobs, tags, mounts,
referrers) with retries, resumable chunked uploads and downloads, and the registry's auth
(docker config, credential helpers, environment tokens; Basic and Bearer). ``push`` /
``push_layout`` send an ``Artifact`` (a manifest and where its blobs lie) sending only what the
registry lacks; ``resolve`` / ``pull_layout`` read one back with every digest checked;
``attach`` / ``list_referrers`` hang artifacts (a test report) on a manifest.
``request_stop`` asks the uploads in flight to stop at their next chunk boundary (a person's
Ctrl-C); what each one sent is journaled for the next push of the same blob to resume.
"""

from harness.errors import AuthError, DigestError, NotFoundError, RegistryError, redact

from ._artifact import Artifact, parse_descriptor
from ._client import MANIFEST_TYPES, ManifestBlob, RegistryClient
from ._credentials import Credentials, docker_config_path, find_credentials
from ._download import Prefix
from ._options import DEFAULT_CHUNK_SIZE, DEFAULT_TRANSFERS, RegistryOptions, RetryPolicy
from ._parallel import clear_stop, each, request_stop
from ._pull import Platform, ResolvedImage, choose_platform, pull_layout, resolve
from ._push import PushResult, push, push_layout
from ._reference import DOCKER_HUB, Reference, is_tag
from ._referrers import (
    EMPTY_CONFIG,
    Attached,
    attach,
    fallback_tag,
    list_referrers,
    referrer_artifact,
)
from ._source import ImageSource, LayoutImageSource, RegistryImageSource, SourceImage
from ._stream import BlobStream, open_blob
from ._transfer import BlobSource

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "DEFAULT_TRANSFERS",
    "DOCKER_HUB",
    "EMPTY_CONFIG",
    "MANIFEST_TYPES",
    "Artifact",
    "Attached",
    "AuthError",
    "BlobSource",
    "BlobStream",
    "Credentials",
    "DigestError",
    "ImageSource",
    "LayoutImageSource",
    "ManifestBlob",
    "NotFoundError",
    "Platform",
    "Prefix",
    "PushResult",
    "Reference",
    "RegistryClient",
    "RegistryError",
    "RegistryImageSource",
    "RegistryOptions",
    "ResolvedImage",
    "RetryPolicy",
    "SourceImage",
    "attach",
    "choose_platform",
    "clear_stop",
    "docker_config_path",
    "each",
    "fallback_tag",
    "find_credentials",
    "is_tag",
    "list_referrers",
    "open_blob",
    "parse_descriptor",
    "pull_layout",
    "push",
    "push_layout",
    "redact",
    "referrer_artifact",
    "request_stop",
    "resolve",
]

"""OCI images for GGUF models: a reproducible layout writer, a verifying reader, and the image
config GGUF Packer writes (see docs/image-format.md).

``LayoutWriter`` builds an OCI image layout all-or-nothing; ``read_layout`` reads one back
(OCI or Docker schema 2 media types) checking every blob; ``files`` and ``extract`` see the
merged filesystem and copy files out safely. ``gguf_entry``, ``seed_config``, ``image_config``
and ``derived_labels`` build the config the seed writes; ``parse_seed_config`` checks one as
the seed's consumer reads it.
"""

from harness.errors import OCIError

from ._extract import ImageFile, files
from ._extract_write import Extracted, extract, extract_hashed
from ._layer import (
    COMPRESSIONS,
    TAR_LAYOUT,
    Layer,
    LayerEntry,
    LayerStats,
    default_mtime,
    layer_bound,
    write_layer,
)
from ._layout import Image, blob_path, check_blob_size, layout_index, read_blob, read_layout
from ._layout_write import LayoutWriter, platform_of
from ._media import (
    DOCKER_CONFIG,
    DOCKER_LAYER_GZIP,
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    IMAGE_MANIFESTS,
    INDEXES,
    LABEL_PREFIX,
    OCI_CONFIG,
    OCI_INDEX,
    OCI_LAYER,
    OCI_LAYER_GZIP,
    OCI_LAYER_ZSTD,
    OCI_MANIFEST,
    REF_NAME,
    Descriptor,
    canonical_json,
)
from ._seed import (
    HISTORY_COMMENT,
    HistoryEntry,
    SeedConfig,
    SeedEntry,
    derived_labels,
    format_bpw,
    format_parameters,
    gguf_entry,
    image_config,
    parse_seed_config,
    seed_config,
)
from ._tarread import EXPANSION_FLOOR, MAX_EXPANSION, expansion_cap
from ._unpacked import in_image_relative, is_unpacked, unpack, unpack_root

__all__ = [
    "COMPRESSIONS",
    "DOCKER_CONFIG",
    "DOCKER_LAYER_GZIP",
    "DOCKER_MANIFEST",
    "DOCKER_MANIFEST_LIST",
    "EXPANSION_FLOOR",
    "HISTORY_COMMENT",
    "IMAGE_MANIFESTS",
    "INDEXES",
    "LABEL_PREFIX",
    "MAX_EXPANSION",
    "OCI_CONFIG",
    "OCI_INDEX",
    "OCI_LAYER",
    "OCI_LAYER_GZIP",
    "OCI_LAYER_ZSTD",
    "OCI_MANIFEST",
    "REF_NAME",
    "TAR_LAYOUT",
    "Descriptor",
    "Extracted",
    "HistoryEntry",
    "Image",
    "ImageFile",
    "Layer",
    "LayerEntry",
    "LayerStats",
    "LayoutWriter",
    "OCIError",
    "SeedConfig",
    "SeedEntry",
    "blob_path",
    "canonical_json",
    "check_blob_size",
    "default_mtime",
    "derived_labels",
    "expansion_cap",
    "extract",
    "extract_hashed",
    "files",
    "format_bpw",
    "format_parameters",
    "gguf_entry",
    "image_config",
    "in_image_relative",
    "is_unpacked",
    "layer_bound",
    "layout_index",
    "parse_seed_config",
    "platform_of",
    "read_blob",
    "read_layout",
    "seed_config",
    "unpack",
    "unpack_root",
    "write_layer",
]

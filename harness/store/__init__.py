"""The local model store: what ``pull``, ``list``, ``inspect``, ``remove`` and ``run`` use.

``Store().pull(ref)`` fetches an image (the seed's, a ModelPack artifact or a Docker Model
Runner model) verified into ``$GGUF_HARNESS_STORE``; each blob is kept once, tar layers are
unpacked once, and each model's files are hard links that llama.cpp opens in place
(``StoredModel.model_file``). ``list`` returns the seed's columns as ``ModelRow`` records,
``inspect`` the config JSON, ``remove`` drops a reference and collects what nothing else uses.
Hostile layers (``..``, absolute paths, escaping links, devices, decompression bombs) are
refused with ``UnsafeLayerError`` before anything is stored.
"""

from harness.errors import StoreError, UnsafeLayerError

from ._formats import Facts, facts
from ._records import Collected, ModelRow, ModelSummary, StoredModel
from ._root import store_root
from ._store import Store
from ._unpack import UnpackLimits

__all__ = [
    "Collected",
    "Facts",
    "ModelRow",
    "ModelSummary",
    "Store",
    "StoreError",
    "StoredModel",
    "UnpackLimits",
    "UnsafeLayerError",
    "facts",
    "store_root",
]

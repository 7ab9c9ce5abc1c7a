"""buying-circles: the node, persistence, discovery, vendors and command line."""

from ._errors import CirclesError as CirclesError
from ._errors import KeyFileError as KeyFileError
from ._keyfile import generate_identity as generate_identity
from ._keyfile import load_identity as load_identity
from ._keyfile import save_identity as save_identity
from ._store import Store as Store
from ._store import StoredEnvelope as StoredEnvelope
from ._store import StoreError as StoreError

__all__ = [
    "CirclesError",
    "KeyFileError",
    "generate_identity",
    "load_identity",
    "save_identity",
    "Store",
    "StoredEnvelope",
    "StoreError",
]

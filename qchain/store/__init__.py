"""Storage: a small key-value interface (`KVStore`) with an in-memory and a LevelDB backend,
and the one schema module (`schema`) that builds every key."""

from qchain.store.kv import Batch, KVStore, open_store
from qchain.store.memory import MemoryStore

__all__ = ["Batch", "KVStore", "MemoryStore", "open_store"]

"""Local state: one atomically written JSON file per stack, guarded by a lock file."""

from madinfra.state.lock import LockInfo, StateLock, force_unlock, pid_alive, read_lock
from madinfra.state.store import STATE_VERSION, ResourceRecord, State, StateStore

__all__ = [
    "STATE_VERSION",
    "LockInfo",
    "ResourceRecord",
    "State",
    "StateLock",
    "StateStore",
    "force_unlock",
    "pid_alive",
    "read_lock",
]

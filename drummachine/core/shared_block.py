"""Shared memory the instrument's processes share (the mixer's event ring, a kit, the listener's
readings): letting go of a block the same way everywhere."""

from __future__ import annotations


def untrack(shm) -> None:
    """For a block this process attached to, not made: Python < 3.13 tracks attached blocks too,
    and would unlink the owner's when this process exits."""
    try:
        from multiprocessing import resource_tracker

        resource_tracker.unregister(shm._name, "shared_memory")
    except Exception:
        pass


def release(shm, owner: bool) -> None:
    """Close this process's view of ``shm`` and, if this process made it, remove it. A view still
    exported (a numpy array over it) or a block already removed by its owner is not an error: the
    memory goes when the last view does."""
    try:
        shm.close()
        if owner:
            shm.unlink()
    except (BufferError, FileNotFoundError):
        pass

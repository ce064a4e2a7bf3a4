"""Bounded hand-over channels between pipeline threads. Waiting blocks on a Condition, never sleep-polls."""

from __future__ import annotations

import threading
from collections import deque
from typing import Generic, TypeVar

T = TypeVar("T")


class Closed(Exception):
    """The channel was closed and holds nothing more."""


class LatestSlot(Generic[T]):
    """Size-1 channel that keeps only the newest item: a slow consumer never sees stale frames.

    ``put`` overwrites an unread item and counts it in ``dropped``.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._item: T | None = None
        self._has_item = False
        self._closed = False
        self.dropped = 0
        self.delivered = 0

    def put(self, item: T) -> None:
        with self._cond:
            if self._has_item:
                self.dropped += 1
            self._item, self._has_item = item, True
            self._cond.notify_all()

    def get(self, timeout: float | None = None) -> T | None:
        """Newest item, waiting up to ``timeout`` s (None: forever). None on timeout; Closed when closed and empty."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._has_item or self._closed, timeout):
                return None
            if not self._has_item:
                raise Closed
            item, self._item, self._has_item = self._item, None, False
            self.delivered += 1
            return item

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()


class BoundedQueue(Generic[T]):
    """FIFO of fixed depth: ``put`` blocks while full (back-pressure), ``get`` blocks while empty."""

    def __init__(self, depth: int) -> None:
        if depth < 1:
            raise ValueError("depth must be >= 1")
        self._cond = threading.Condition()
        self._items: deque[T] = deque()
        self._depth = depth
        self._closed = False

    def put(self, item: T, timeout: float | None = None) -> bool:
        """False if the queue was closed (or the wait timed out) before there was room."""
        with self._cond:
            if not self._cond.wait_for(lambda: len(self._items) < self._depth or self._closed, timeout):
                return False
            if self._closed:
                return False
            self._items.append(item)
            self._cond.notify_all()
            return True

    def get(self, timeout: float | None = None) -> T | None:
        """Next item; None on timeout; Closed once closed and drained."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._items or self._closed, timeout):
                return None
            if not self._items:
                raise Closed
            item = self._items.popleft()
            self._cond.notify_all()
            return item

    def close(self) -> None:
        """No more puts; getters drain what is left, then see Closed."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)

"""Owned-resource lifetime: idempotent ``close()`` and context-manager use (STYLE rule 12)."""

from __future__ import annotations

from typing import TypeVar

T = TypeVar("T", bound="Closeable")


class Closeable:
    """Subclasses free their resources in ``_close()``; ``close()`` runs it once, however often it is called."""

    _closed = False

    def _close(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._close()

    def __enter__(self: T) -> T:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

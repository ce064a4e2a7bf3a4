"""PassTimer: GL time of named render passes (GL_TIME_ELAPSED queries), for `bench render`."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, nullcontext


class PassTimer:
    """``with timer("depth"): ...`` times the GL work of the block; ``collect()`` → {name: ms} since the
    last collect (repeated names add up). GL time queries do not nest: do not use it inside another."""

    def __init__(self, ctx) -> None:
        self.ctx = ctx
        self._pending: list[tuple[str, object]] = []
        self._free: list[object] = []

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        query = self._free.pop() if self._free else self.ctx.query(time=True)
        with query:
            yield
        self._pending.append((name, query))

    def collect(self) -> dict[str, float]:
        """Wait for the queries and return GL ms per pass name."""
        out: dict[str, float] = {}
        for name, query in self._pending:
            ns = query.elapsed
            # llvmpipe runs compute outside its timer and reports a wrapped negative: not a time
            out[name] = out.get(name, 0.0) + (ns / 1e6 if ns < 2**31 else float("nan"))
            self._free.append(query)
        self._pending.clear()
        return out

    def close(self) -> None:
        self.collect()
        self._free.clear()  # moderngl queries have no release(): the context frees them


def timed(timer: PassTimer | None, name: str):
    """``timer(name)``, or a no-op context when not profiling."""
    return timer(name) if timer is not None else nullcontext()

"""The benchmarks' samplers' shared loop: ``tick()`` every ``interval_s`` on a daemon thread between ``start()``
and ``stop()`` (the CPU per process group and the GPU load, sampled through each level of ``bench serve``)."""

from __future__ import annotations

import threading


class PeriodicSampler:
    """Subclasses define ``tick()`` and call ``start()`` / ``stop()`` from their ``__enter__`` / ``__exit__``."""

    thread_name = "sampler"

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name=self.thread_name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Ends the loop and waits for its last tick (a no-op where it never started)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.tick()

    def tick(self) -> None:
        raise NotImplementedError

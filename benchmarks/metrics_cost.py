"""
The CPU the metrics add to one scenario-c upload, measured in process
(no HTTP, no load generator), so that a busy machine blurs it less than a
throughput ratio: the store and locker calls of a creation-with-upload POST
and a HEAD, with the request counting, through a composer instrumented by
L{txtus.metrics.PrometheusMetrics} and through the bare one.

    python benchmarks/metrics_cost.py
"""

from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from txtus.composer import StoreComposer  # noqa: E402
from txtus.info import UploadInfo  # noqa: E402
from txtus.lockers.memory import MemoryLocker  # noqa: E402
from txtus.metrics import NO_METRICS, PrometheusMetrics  # noqa: E402
from txtus.stores.memory import MemoryStore  # noqa: E402

UPLOADS = 5000


def one_upload(metrics, composer) -> None:
    # POST with a body: create, lock, write, commit, finish, answer.
    upload = composer.core.new_upload(UploadInfo(size=10)).result
    upload.get_info()
    lock = composer.locker.lock(upload.id, lambda: None).result
    writer = upload.open_chunk(0).result
    writer.write(b"x" * 10)
    writer.commit()
    upload.finish()
    lock.unlock()
    metrics.request_done(b"POST", 201, 0.001)
    # HEAD: lock, look up, answer.
    lock = composer.locker.lock(upload.id, lambda: None).result
    composer.core.get_upload(upload.id).result.get_info()
    lock.unlock()
    metrics.request_done(b"HEAD", 200, 0.001)


def cpu_per_upload(metrics) -> float:
    """Microseconds of CPU per upload, the best of 5 rounds."""
    base = StoreComposer()
    MemoryStore().use_in(base)
    MemoryLocker().use_in(base)
    composer = metrics.instrument(base)
    best = float("inf")
    for _ in range(5):
        started = time.process_time()
        for _ in range(UPLOADS):
            one_upload(metrics, composer)
        best = min(best, (time.process_time() - started) / UPLOADS)
    return best * 1e6


if __name__ == "__main__":
    off, on = cpu_per_upload(NO_METRICS), cpu_per_upload(PrometheusMetrics())
    print(f"metrics off: {off:.1f} us, on: {on:.1f} us CPU per upload; metrics add {on - off:.1f} us")

"""Short garbage-collection pauses for long-running servers that hold many long-lived objects.

CPython's default thresholds (700, 10, 10) make a full collection walk every tracked object every few seconds once a
process holds hundreds of thousands of them (a gateway's sockets, a worker's profiles and models): measured here,
100-190 ms pauses every ~5 s, which alone exceed the event-to-browser latency budget. :func:`tune_gc` is called once
by the gateway after start-up and by the worker after its tables are recovered.
"""

from __future__ import annotations

import gc


def tune_gc() -> None:
    """Move everything allocated so far to the permanent generation and make collections rarer.

    The young-generation threshold goes from 700 to 50,000 allocations, so that the objects of a burst of events or
    pushes die young instead of being promoted into the generations a full collection walks; frozen objects (modules,
    settings, clients, recovered state) are never walked again.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)

"""The garbage collector's settings for a process that keeps a cluster's objects in memory.

Its own module because both modes (``runtime.app`` embedded, ``runtime.kubernetes_mode``)
tune the collector the same way, and neither should import the other's start-up to do so.
"""

from __future__ import annotations

import gc

__all__ = ["freeze_heap", "pause_gc", "tune_gc"]


def tune_gc() -> None:
    """The controller keeps every schedule, run and instance in memory: a heap of
    millions of long-lived objects that CPython's default collector re-scans on
    every full collection (measured: 1.0 s of a 10,000-schedule burst). Collect
    young objects less often, and once the caches are filled, freeze them out of
    the collector (as long-running CPython services do)."""
    gc.set_threshold(50_000, 20, 100)


def pause_gc() -> None:
    """No collection until :func:`freeze_heap`: filling the caches allocates millions of
    objects that all live on, and the collections their allocations set off scanned them
    again and again for nothing (a sixth of a 100,000-schedule restart, in py-spy's
    samples). Only for a start that is sure to reach ``freeze_heap``."""
    gc.disable()


def freeze_heap() -> None:
    gc.collect()
    gc.freeze()
    gc.enable()

"""Checking a large apply on every core.

Reading and checking a document is pure Python, a tenth of a millisecond or so
each: for 100,000 of them that was most of ``apply -f``, on one core. So a large
manifest is cut at its document markers (``---`` at the start of a line) into
one piece per core, and each piece is checked by :func:`validate.check` in a
process of its own (forked: every module is loaded already), the first piece
here. The pieces' documents and warnings, in order, are what checking the whole
gives, because a document never spans a marker (a ``---`` at the start of a line
inside a quoted or flow value is an error). On any error, or any doubt (a
directive ``%``, a worker that fails), the whole is checked again here in one
pass, so every message, with its line and column, is the one a single pass gives.
"""

from __future__ import annotations

import contextlib
import gc
import itertools
import multiprocessing
import os
import re
import sys
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from datetime import datetime

import orjson

from sympozium_schedule.cli.manifest_files import Source
from sympozium_schedule.cli.validate import Checked, Document, check
from sympozium_schedule.core.model import Kind

# Below this many characters in all, one process is done before a second has started.
PARALLEL_MIN_CHARS = 1_000_000
MAX_WORKERS = 8
_MARKER = re.compile(r"^---(?=[ \t\r\n]|\Z)", re.MULTILINE)
_DIRECTIVE = re.compile(r"^%", re.MULTILINE)


def check_all(sources: Sequence[Source], *, namespace: str, now: datetime,
              workers: int | None = None) -> Checked:
    """What ``check(sources, ...)`` returns, on up to ``workers`` processes (default:
    one per core)."""
    count = min(workers or os.cpu_count() or 1, MAX_WORKERS)
    total = sum(len(s.text) for s in sources)
    if count < 2 or total < PARALLEL_MIN_CHARS or "fork" not in multiprocessing.get_all_start_methods():
        return check(sources, namespace=namespace, now=now)
    groups = _groups([p for s in sources for p in cut(s, count, total)], count)
    if len(groups) < 2:
        return check(sources, namespace=namespace, now=now)
    parts: list[Checked] = []
    try:
        sys.stdout.flush()  # a forked child must not write the parent's buffer again
        sys.stderr.flush()
        with ProcessPoolExecutor(max_workers=len(groups) - 1,
                                 mp_context=multiprocessing.get_context("fork")) as pool:
            futures = [pool.submit(_check_packed, group, namespace, now) for group in groups[1:]]
            parts.append(check(groups[0], namespace=namespace, now=now))
            parts.extend(_unpack(future.result()) for future in futures)
    except Exception:  # a worker that failed: the single pass says what it was
        return check(sources, namespace=namespace, now=now)
    if any(part.errors for part in parts):
        return check(sources, namespace=namespace, now=now)
    out = Checked()
    for part in parts:
        out.documents.extend(part.documents)
        out.warnings.extend(part.warnings)
    return out


# A worker's answer: errors, warnings, each document's (source, kind, namespace, name),
# and the objects as one JSON text (orjson: a third of pickle's time each way, and
# exact for the JSON values a checked document holds).
Packed = tuple[list[str], list[str], list[tuple[str, str, str, str]], bytes]


def _check_packed(group: list[Source], namespace: str, now: datetime) -> Packed:
    checked = check(group, namespace=namespace, now=now)
    if checked.errors:
        return checked.errors, checked.warnings, [], b"[]"
    heads = [(d.source, d.kind.value, d.namespace, d.name) for d in checked.documents]
    return [], checked.warnings, heads, orjson.dumps([d.obj for d in checked.documents])


def _unpack(packed: Packed) -> Checked:
    errors, warnings, heads, objects = packed
    documents = [Document(source, Kind(kind), namespace, name, obj)
                 for (source, kind, namespace, name), obj
                 in zip(heads, orjson.loads(objects), strict=True)]
    return Checked(documents, errors, warnings)


def cut(source: Source, pieces: int, total: int) -> list[Source]:
    """``source`` cut at document markers into about ``pieces * len(text) / total``
    pieces of similar size (one piece when it has directives or no marker)."""
    text = source.text
    want = round(pieces * len(text) / total) if total else 1
    if want < 2 or _DIRECTIVE.search(text):
        return [source]
    bounds = [0]
    for i in range(1, want):
        found = _MARKER.search(text, len(text) * i // want)
        if found is None:
            break
        if found.start() > bounds[-1]:
            bounds.append(found.start())
    bounds.append(len(text))
    return [Source(source.name, text[a:b]) for a, b in itertools.pairwise(bounds)]


def _groups(pieces: list[Source], count: int) -> list[list[Source]]:
    """Consecutive pieces in ``count`` groups of about equal size, order kept."""
    total = sum(len(p.text) for p in pieces) or 1
    groups: list[list[Source]] = [[]]
    filled = 0
    for piece in pieces:
        if groups[-1] and filled >= total * len(groups) / count and len(groups) < count:
            groups.append([])
        groups[-1].append(piece)
        filled += len(piece.text)
    return groups


@contextlib.contextmanager
def no_cycle_collection() -> Iterator[None]:
    """Python's cyclic garbage collector paused (reference counting still frees all
    that is not a cycle). An apply allocates millions of objects that live until it
    ends (every document, read, checked and written), and each full collection
    walked them all again: 40 % of applying 100,000 objects. The forked checkers
    inherit the pause."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()

"""The embedded NATS server's log is bounded: every refused login writes to it, and an agent
can try to log in as often as it likes, so the log rotates and keeps two files at most."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import nats
import nats.errors
import pytest

from sympozium_schedule.adapters.nats.callout import RunTokens
from sympozium_schedule.adapters.nats.server import BusAuth, EmbeddedNats
from sympozium_schedule.adapters.nats.subjects import RESULT_STREAM
from sympozium_schedule.runtime.app import serve_callout

pytestmark = pytest.mark.e2e


async def test_refused_logins_cannot_grow_the_log_without_bound(tmp_path: Path) -> None:
    limit = 2048
    auth = BusAuth.generate()
    server = EmbeddedNats(tmp_path, auth=auth, log_bytes=limit)
    url = await server.start()
    # The callout `run` serves: it refuses an unknown token at once.
    callout = asyncio.create_task(serve_callout(url, auth, RunTokens(result_stream=RESULT_STREAM)))
    try:
        for attempt in range(60):
            with pytest.raises((nats.errors.Error, OSError)):  # noqa: PT012
                nc = await nats.connect(servers=[url], token=f"guess-{attempt}",
                                        allow_reconnect=False, connect_timeout=2)
                await nc.close()
    finally:
        callout.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await callout
        await server.stop()
    sizes = await asyncio.to_thread(lambda: {p.name: p.stat().st_size
                                             for p in tmp_path.glob("nats-server.log*")})
    assert len(sizes) == 2, sizes  # it rotated several times and kept two files
    assert sum(sizes.values()) <= 2 * limit + 1024

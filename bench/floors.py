"""Floor processes: what a bare Python process on this machine does, for comparison.

Run as ``python -m bench.floors <mode> ...`` by the benchmarks, alongside the
product, so both see the same machine at the same moment. Standard library only:
the floor must not pay for the product's imports.

    timers FILE   arm one loop.call_at timer per wall-clock instant listed in FILE
                  (a JSON list of Unix times) and print the lag of each (seconds), as JSON
    idle          an asyncio loop with nothing to do, until SIGTERM
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
from pathlib import Path

# Instants closer than this to the start cannot be armed in time: not counted.
_ARM_MARGIN = 0.2


async def timers(targets: list[float]) -> dict[str, object]:
    loop = asyncio.get_running_loop()
    lags: list[float] = []
    done = asyncio.Event()
    now = time.time()
    armed = [t for t in sorted(targets) if t > now + _ARM_MARGIN]
    if not armed:
        return {"lags": [], "skipped": len(targets)}
    remaining = [len(armed)]

    def fire(target: float) -> None:
        lags.append(time.time() - target)
        remaining[0] -= 1
        if not remaining[0]:
            done.set()

    # Wall-clock instants on the loop's monotonic clock, as the controller arms its
    # timer (it computes a delay from the wall clock and calls call_later).
    offset = loop.time() - time.time()
    for target in armed:
        loop.call_at(target + offset, fire, target)
    await done.wait()
    return {"lags": lags, "skipped": len(targets) - len(armed)}


async def idle() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()


def main(argv: list[str]) -> int:
    if argv[:1] == ["timers"] and len(argv) == 2:
        targets = json.loads(Path(argv[1]).read_text())
        print(json.dumps(asyncio.run(timers(targets))))
        return 0
    if argv == ["idle"]:
        asyncio.run(idle())
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

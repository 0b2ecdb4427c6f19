"""Attacks through the IPC folder (issue 9): everything in it is written by the agent.
Symlinks and other non-files are never followed, answers never land outside the
folder or through a planted link, a reused file name is a new request, and a request
is read only once its writer is done."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pytest

from sympozium_schedule.adapters.ipc import FolderUnusable, ScheduleFolder
from sympozium_schedule.agents.schedule_task import result_path
from tests.selfsched.conftest import Agent, System, assert_answer, eventually

# The router's and the bridge's logic: on the in-memory bus (see conftest).
pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.memory_bus]

HOURLY: dict[str, Any] = {"schedule": "@hourly", "task": "check the cluster"}
SECRET = "TOP-SECRET-VALUE"


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A folder outside the agent's, holding what a bridge must never read or write:
    a secret shaped like a request (so a bridge that read it would echo its values)."""
    folder = tmp_path / "outside"
    folder.mkdir()
    (folder / "secret.json").write_text(json.dumps({"name": SECRET, "action": "create", **HOURLY}))
    (folder / "store.db").write_bytes(b"the scheduler's store")
    return folder


def contents(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def archived(agent: Agent) -> list[str]:
    return agent.sent_files()


# --- request files that are not files -------------------------------------------------------


async def test_a_symlinked_request_is_refused_and_its_target_never_read(
        system: System, alice: Agent, outside: Path) -> None:
    before, store = contents(outside), await system.snapshot()
    link = alice.folder / "schedule-link.json"
    link.symlink_to(outside / "secret.json")

    answer = await alice.answer(link)

    assert_answer(answer, "rejected", "not a regular file")
    assert SECRET not in json.dumps(answer)
    assert contents(outside) == before
    assert await system.snapshot() == store
    assert not link.is_symlink(), "the link itself is cleared away"
    assert alice.bridge.published == 0


async def test_a_hard_link_to_a_file_outside_is_refused(
        system: System, alice: Agent, outside: Path) -> None:
    before = contents(outside)
    link = alice.folder / "schedule-hard.json"
    os.link(outside / "secret.json", link)

    answer = await alice.answer(link)

    assert_answer(answer, "rejected", "hard links")
    assert SECRET not in json.dumps(answer)
    assert contents(outside) == before
    assert (outside / "secret.json").stat().st_nlink == 1


@pytest.mark.parametrize("kind", [pytest.param("fifo", id="named-pipe"),
                                  pytest.param("dir", id="directory")])
async def test_a_pipe_or_directory_named_like_a_request_does_not_stall_the_bridge(
        system: System, alice: Agent, kind: str) -> None:
    name = alice.folder / "schedule-odd.json"
    if kind == "fifo":
        os.mkfifo(name)
    else:
        name.mkdir()

    answer = await alice.answer(name)
    later = await alice.ask(name="after", action="create", **HOURLY)

    assert_answer(answer, "rejected", "not a regular file")
    assert_answer(later, "accepted", "created")


# --- answers and archives never go through a planted link ------------------------------------


async def test_a_symlink_planted_at_the_answers_name_is_replaced_not_followed(
        system: System, alice: Agent, outside: Path) -> None:
    before = contents(outside)
    request = alice.folder / "schedule-1.json"
    result_path(request).symlink_to(outside / "store.db")

    alice.drop(request.name, json.dumps({"name": "one", "action": "create", **HOURLY}))
    answer = await alice.answer(request)

    assert_answer(answer, "accepted")
    assert contents(outside) == before
    assert not result_path(request).is_symlink()


async def test_symlinks_at_the_old_predictable_temporary_name_are_never_written(
        system: System, alice: Agent, outside: Path) -> None:
    """The bridge used to write answers to ``.<sha256(answer name)[:16]>.result.tmp``:
    an agent could plant a link there to have any file the scheduler can write
    overwritten. Temporary names are now random and created exclusively."""
    before = contents(outside)
    request = alice.folder / "schedule-2.json"
    final = result_path(request).name
    old_tmp = f".{hashlib.sha256(final.encode()).hexdigest()[:16]}.result.tmp"
    (alice.folder / old_tmp).symlink_to(outside / "store.db")

    alice.drop(request.name, json.dumps({"name": "two", "action": "create", **HOURLY}))
    assert_answer(await alice.answer(request), "accepted")

    assert contents(outside) == before


@pytest.mark.parametrize("which", [".sent", ".outbox"])
async def test_archive_folders_replaced_by_symlinks_keep_requests_inside(
        system: System, alice: Agent, outside: Path, which: str) -> None:
    before = contents(outside)
    folder = alice.folder / which
    for entry in folder.iterdir():
        entry.unlink()
    folder.rmdir()
    folder.symlink_to(outside)

    request = alice.submit({"name": "three", "action": "create", **HOURLY})
    assert_answer(await alice.answer(request), "accepted")

    assert contents(outside) == before
    assert not folder.is_symlink()
    assert archived(alice) == [request.name]


async def test_a_schedules_folder_that_is_a_symlink_is_refused(tmp_path: Path, outside: Path) -> None:
    ipc = tmp_path / "ipc"
    ipc.mkdir()
    (ipc / "schedules").symlink_to(outside)

    with pytest.raises(FolderUnusable, match="not a directory"):
        ScheduleFolder(ipc, max_bytes=1024)


# --- reused names, partial writes ------------------------------------------------------------


async def test_a_reused_file_name_is_a_new_request_with_its_own_answer(
        system: System, alice: Agent) -> None:
    request = alice.drop("schedule-again.json", json.dumps({"name": "one", "action": "create", **HOURLY}))
    first = await alice.answer(request)
    result_path(request).unlink()

    alice.drop(request.name, json.dumps({"name": "two", "action": "create", **HOURLY}))
    second = await alice.answer(request)

    assert_answer(first, "accepted", "'alice-one'")
    assert_answer(second, "accepted", "'alice-two'")
    assert first["requestId"] != second["requestId"]
    assert await system.schedule_names() == ["alice-one", "alice-two"]
    assert archived(alice) == [request.name, request.name]


async def test_a_name_reused_as_soon_as_it_is_taken_is_still_a_new_request(
        system: System, alice: Agent) -> None:
    """Written again the moment the bridge claimed the first (no answer awaited)."""
    name = "schedule-quick.json"
    for n in range(3):
        request = alice.drop(name, json.dumps({"name": f"quick-{n}", "action": "create", **HOURLY}))
        await eventually(lambda r=request: not r.exists(), what=f"request {n} claimed")

    async def three() -> list[str] | None:
        names = await system.schedule_names()
        return names if len(names) == 3 else None

    assert await eventually(three, what="three schedules") == [
        "alice-quick-0", "alice-quick-1", "alice-quick-2"]
    await eventually(lambda: archived(alice) == [name] * 3, what="three requests archived")


async def test_a_request_written_in_pieces_is_read_once_whole(system: System, alice: Agent) -> None:
    """Written straight into its final name, with pauses longer than any debounce: the
    bridge reads it when the writer closes it, not before."""
    body = json.dumps({"name": "slow", "action": "create", **HOURLY}).encode()
    request = alice.folder / "schedule-slow.json"
    answered = alice.bridge.answered
    with request.open("wb") as handle:
        for piece in (body[:10], body[10:30], body[30:]):
            handle.write(piece)
            handle.flush()
            await asyncio.sleep(0.6)
            assert not result_path(request).exists(), "read before the writer was done"

    answer = await alice.answer(request)

    assert_answer(answer, "accepted", "created schedule 'alice-slow'")
    assert archived(alice) == [request.name]
    assert alice.bridge.answered == answered + 1


async def test_many_requests_at_once_each_get_one_answer(system: System, alice: Agent) -> None:
    requests = [alice.submit({"name": f"job-{n}", "action": "create", **HOURLY}) for n in range(8)]

    answers = [await alice.answer(r) for r in requests]

    assert [a["status"] for a in answers] == ["accepted"] * 8
    assert len({a["requestId"] for a in answers}) == 8
    await eventually(lambda: len(archived(alice)) == 8, what="all archived")

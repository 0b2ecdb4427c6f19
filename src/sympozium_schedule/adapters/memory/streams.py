"""What the in-memory bus keeps: streams (stored messages, the limits that refuse
or discard, the duplicate window) and durable consumers (what waits, what is out
unacknowledged, how often each went out)."""

from __future__ import annotations

import asyncio
import itertools
from collections import OrderedDict, deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from sympozium_schedule.ports.bus import MSG_ID, Disposition, PublishRefused, subject_matches


@dataclass(slots=True)
class Message:
    seq: int
    subject: str
    data: bytes
    headers: dict[str, str]


@dataclass(slots=True)
class Stream:
    name: str
    subjects: list[str]
    work_queue: bool
    max_msgs: int
    max_msgs_per_subject: int
    discard_new: bool
    max_msg_size: int
    duplicate_window: float
    messages: OrderedDict[int, Message] = field(default_factory=OrderedDict)
    seen: dict[str, float] = field(default_factory=dict)  # message id -> stored at
    next_seq: int = 1

    def captures(self, subject: str) -> bool:
        return any(subject_matches(pattern, subject) for pattern in self.subjects)

    def store(self, subject: str, data: bytes, headers: dict[str, str], now: float) -> Message | None:
        """The stored message; None for a duplicate. :class:`PublishRefused` over a limit."""
        msg_id = headers.get(MSG_ID)
        if msg_id is not None:
            stored_at = self.seen.get(msg_id)
            if stored_at is not None and now - stored_at < self.duplicate_window:
                return None
        if self.max_msg_size >= 0 and len(data) > self.max_msg_size:
            raise PublishRefused("the request is too large for the bus (message size exceeds "
                                 "maximum allowed)")
        same = [s for s, m in self.messages.items() if m.subject == subject]
        if 0 <= self.max_msgs_per_subject <= len(same):
            if self.discard_new:
                raise PublishRefused("the request queue is full (maximum messages per subject "
                                     "exceeded)")
            for seq in same[:len(same) - self.max_msgs_per_subject + 1]:
                del self.messages[seq]
        if 0 <= self.max_msgs <= len(self.messages):
            if self.discard_new:
                raise PublishRefused("the request queue is full (maximum messages exceeded)")
            self.messages.popitem(last=False)
        msg = Message(self.next_seq, subject, data, headers)
        self.next_seq += 1
        self.messages[msg.seq] = msg
        if msg_id is not None:
            self.seen[msg_id] = now
        return msg

    def last(self, subject: str) -> Message | None:
        for msg in reversed(self.messages.values()):
            if msg.subject == subject:
                return msg
        return None


class Consumer:
    """A durable consumer: what is waiting, what is out and how often it went out."""

    def __init__(self, stream: Stream, filters: Sequence[str], ack_wait: float):
        self.stream = stream
        self.filters = list(filters)
        self.ack_wait = ack_wait
        self.waiting: deque[int] = deque(s for s, m in stream.messages.items() if self.wants(m))
        self.again: deque[int] = deque()  # nacked or timed out: before new ones
        self.out: dict[int, int] = {}  # seq -> deliveries so far, while unacknowledged
        self.counts: dict[int, int] = {}
        self.wake = asyncio.Event()

    def wants(self, msg: Message) -> bool:
        return any(subject_matches(f, msg.subject) for f in self.filters)

    def offer(self, msg: Message) -> None:
        if self.wants(msg):
            self.waiting.append(msg.seq)
            self.wake.set()

    def take(self, most: int) -> list[tuple[Message, int]]:
        taken: list[tuple[Message, int]] = []
        while len(taken) < most and (self.again or self.waiting):
            seq = (self.again or self.waiting).popleft()
            msg = self.stream.messages.get(seq)
            if msg is None or seq in self.out:
                continue
            count = self.counts.get(seq, 0) + 1
            self.counts[seq] = count
            self.out[seq] = count
            asyncio.get_running_loop().call_later(self.ack_wait, self._expire, seq, count)
            taken.append((msg, count))
        if not self.again and not self.waiting:
            self.wake.clear()
        return taken

    def _expire(self, seq: int, count: int) -> None:
        if self.out.get(seq) == count:  # never acknowledged: delivered again
            self.nak(seq, 0.0)

    def settle(self, seq: int, verdict: Disposition, delay: float) -> None:
        if seq not in self.out:
            return
        if verdict is Disposition.NAK:
            self.nak(seq, delay)
            return
        del self.out[seq]
        self.counts.pop(seq, None)
        if self.stream.work_queue:
            self.stream.messages.pop(seq, None)

    def nak(self, seq: int, delay: float) -> None:
        self.out.pop(seq, None)

        def again() -> None:
            self.again.append(seq)
            self.wake.set()

        if delay > 0:
            asyncio.get_running_loop().call_later(delay, again)
        else:
            again()

    @property
    def pending(self) -> tuple[int, int]:
        """(waiting to be delivered, delivered and not yet acknowledged)."""
        waiting = {s for s in itertools.chain(self.waiting, self.again) if s in self.stream.messages}
        return len(waiting - set(self.out)), len(self.out)

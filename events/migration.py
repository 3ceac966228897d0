"""Copying a log into a new topic in sealed form: how a log written in clear (before sealing) is
changed, since a log is never rewritten in place.

Each partition is read in offset order and every event appended again (`KafkaEventLog.append_bulk`,
which seals a personal event under its user's key and keys it by their subject), so a user's events
keep their order; event ids are kept, so the projections and idempotency see the same events. A
record that does not decode (a dead letter) or whose key is gone (a forgotten user) is left behind.
Copying again into the same topic appends the events again: the projections skip the copies.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Callable

from events.codec import DecodeError, decode, decode_account
from events.log import KafkaEventLog
from events.reader import read_log
from events.sealing import Keys, Unreadable, record_subjects


@dataclass
class Copied:
    events: int = 0
    left_behind: dict[str, int] = field(default_factory=dict)  # reason -> records


def leave(copied: Copied, reason: str) -> None:
    copied.left_behind[reason] = copied.left_behind.get(reason, 0) + 1


async def copy_sealed(bootstrap: str, source: str, target: KafkaEventLog, keys: Keys, *, accounts: bool = False,
                      progress: Callable[[int], None] = lambda n: None) -> Copied:
    """Append every event of topic `source` to `target` (sealed); `accounts`: it is an accounts topic.
    A batch read is appended, and acknowledged, before the next is read: each partition's order holds."""
    copied = Copied()

    def counted(n: int) -> None:
        copied.events += n

    async for batch in read_log(bootstrap, source):
        await asyncio.to_thread(keys.load, record_subjects(r.key for r in batch))
        events = []
        for record in sorted(batch, key=lambda r: (r.partition, r.offset)):
            try:
                value = record.value or b""
                events.append(decode_account(value, keys)[0] if accounts else decode(value, keys))
            except (DecodeError, Unreadable) as error:
                leave(copied, "forgotten" if isinstance(error, Unreadable) else "undecodable")
        # A clear event of a user forgotten since is not sealed again: no key is ever made for them.
        held = await asyncio.to_thread(keys.subjects, list({e.user_id for e in events if e.personal}))
        for event in events:
            if event.personal and event.user_id not in held:
                leave(copied, "forgotten")
        await target.append_bulk([e for e in events if not e.personal or e.user_id in held], on_acked=counted)
        progress(len(batch))
    return copied

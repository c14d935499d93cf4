"""What the broker (Redis, through kombu) holds right now: queue depths and the work its messages name.

Kombu keeps a queue as Redis lists (one per priority step) that workers pop, and
every message a worker took but did not acknowledge yet (running, or reserved)
in the ``unacked`` hash. A pending chunk whose message is in neither has lost its
wake-up (the broker restarted without its data, a publish failed after a
release...) and needs a new one. Counting is cheap (LLEN, HLEN-sized reads);
listing the messages of a queue is done only when the counts say something is
missing.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from factory import queue
from factory.config import Settings

log = logging.getLogger(__name__)

SCAN_PAGE = 1000


@dataclass(frozen=True)
class QueueSnapshot:
    name: str
    ready: int  # waiting in the queue
    unacked: int  # taken by a worker and not acknowledged yet (running, or reserved)


# (task name, its first argument: the chunk or job id the message wakes up)
Subject = tuple[str, str]


def _list_keys(channel: Any, name: str) -> list[str]:
    """Kombu's Redis transport keeps one list per priority step; priority 0 is the plain name."""
    return [name if pri == 0 else f"{name}{channel.sep}{pri}" for pri in channel.priority_steps]


def _unacked(channel: Any) -> list[tuple[dict[str, Any], str]]:
    """Every unacknowledged message with its routing key (the hash is small: one entry per taken message)."""
    out = []
    for raw in channel.client.hvals(channel.unacked_key):
        try:
            message, _exchange, routing_key = json.loads(raw)
            out.append((message, str(routing_key)))
        except (ValueError, TypeError):
            continue
    return out


def subject_of(message: dict[str, Any]) -> Subject | None:
    """The (task, id) a message is about. Our messages are JSON with the id as their only argument."""
    try:
        task = str(message["headers"]["task"])
        body = message["body"]
        if message.get("properties", {}).get("body_encoding") == "base64":
            body = base64.b64decode(body)
        args = json.loads(body)[0]
        return task, str(args[0])
    except (KeyError, IndexError, TypeError, ValueError):
        return None


def snapshot(settings: Settings, queues: Iterable[str]) -> dict[str, QueueSnapshot]:
    names = sorted(set(queues))
    with queue.broker_channel(settings) as channel:
        client = channel.client
        taken: dict[str, int] = {}
        for _message, routing_key in _unacked(channel):
            taken[routing_key] = taken.get(routing_key, 0) + 1
        out = {}
        for name in names:
            ready = sum(int(client.llen(key)) for key in _list_keys(channel, name))
            out[name] = QueueSnapshot(name=name, ready=ready, unacked=taken.get(name, 0))
        return out


def subjects(settings: Settings, queues: Iterable[str]) -> set[Subject]:
    """Everything these queues' messages (waiting or taken) ask for.

    The lists are read before the unacknowledged hash: a message a worker takes in
    between moves from the first to the second and is still seen. A message missed
    anyway only causes a duplicate wake-up, which the conditional claim makes harmless.
    """
    found: set[Subject] = set()
    with queue.broker_channel(settings) as channel:
        client = channel.client
        for name in sorted(set(queues)):
            for key in _list_keys(channel, name):
                start = 0
                while True:
                    page = client.lrange(key, start, start + SCAN_PAGE - 1)
                    for raw in page:
                        try:
                            subject = subject_of(json.loads(raw))
                        except ValueError:
                            subject = None
                        if subject is not None:
                            found.add(subject)
                    if len(page) < SCAN_PAGE:
                        break
                    start += SCAN_PAGE
        for message, _routing_key in _unacked(channel):
            subject = subject_of(message)
            if subject is not None:
                found.add(subject)
    return found

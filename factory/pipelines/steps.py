"""Chained steps: which kind may follow which, checking a chain when it is saved, and turning a step's
output into the next step's input.

A pipeline's first step is its ``job`` (a campaign, an augmentation job or a batch over the run's
input); each later step takes the previous step's output:

    batch  after a batch: each text of the previous batch's output file (a chat completion's choices,
           a personalization's results, an augment line's rows) becomes one ``/v1/chat/completions``
           line, whose body is the step's ``body`` with the text appended as the last user message;
           the lines are written as a ``batch`` file, the new batch's input.
    export after a batch or an augmentation job: the previous batch's output file, or the augmentation
           job's dataset rows (JSONL), saved as the tenant's file named ``<prefix><pipeline>-<slot>``
           (so another pipeline's ``newest``/``new_since_last_run`` input can take it). Nothing follows it.

Every step is checked when the pipeline is saved, as a direct submission would be (``check``):
the kind may take the previous kind's output, a batch step's request is a valid ``POST /v1/batches``
body for ``/v1/chat/completions``, and its ``body`` makes a valid chat line.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from collections.abc import Iterator
from typing import IO, Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StrictStr, ValidationError
from sqlalchemy.orm import Session

from factory.batches import lines as batch_lines
from factory.batches.lines import CHAT, LineContext, LineError
from factory.config import Settings
from factory.db.models import StoredFile
from factory.errors import FactoryError, InvalidInput, NotFound
from factory.files import service as files_service
from factory.files.service import BATCH_PURPOSE, DATA_PURPOSE, GENERATED_PURPOSE
from factory.pipelines import jobspec
from factory.storage import ObjectStore
from factory.storage.keys import DATASET_JSONL, dataset_file_key
from factory.webhooks.delivery import check_url as check_webhook_url

# The kinds a step may be, by the kinds whose output it takes.
TAKES_PREVIOUS: dict[str, tuple[str, ...]] = {"batch": ("batch",), "export": ("batch", "augmentation")}
# A file id that a later step's request is validated with (its input is made when the run gets there).
_LATER_INPUT = "file-chained-input"


class ExportRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    prefix: Annotated[StrictStr, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")]


def follows(previous: str) -> list[str]:
    return [kind for kind, sources in TAKES_PREVIOUS.items() if previous in sources]


# --- saving ---------------------------------------------------------------------
def check(settings: Settings, first_kind: str, chain: list[dict[str, Any]]) -> None:
    """The steps after the first, each a 422 naming ``steps[i].<field>``; nothing is written."""
    if 1 + len(chain) > settings.pipeline_max_steps:
        raise InvalidInput(f"a pipeline has at most {settings.pipeline_max_steps} steps "
                           "(FACTORY_PIPELINE_MAX_STEPS)", field="steps")
    previous = first_kind
    for index, step in enumerate(chain, start=1):
        where, kind = f"steps[{index}]", step["kind"]
        if previous not in TAKES_PREVIOUS.get(kind, ()):
            after = ", ".join(follows(previous)) or "nothing (it must be the last step)"
            raise InvalidInput(f"a '{kind}' step cannot take the output of the '{previous}' step before it; "
                               f"after '{previous}': {after}", field=f"{where}.kind")
        if kind == "batch":
            _check_batch(settings, where, step)
        else:
            _check_export(where, step)
        previous = kind


def check_first(kind: str, body: dict[str, Any] | None) -> None:
    if kind == "export":
        raise InvalidInput("an export step exports the step before it: it cannot be the first",
                           field="steps[0].kind")
    if body is not None:
        raise InvalidInput("'body' is for a batch step after a batch; the first step's input is the pipeline's",
                           field="steps[0].body")


def _check_batch(settings: Settings, where: str, step: dict[str, Any]) -> None:
    try:
        body = jobspec.build("batch", step["request"], _LATER_INPUT)
    except InvalidInput as exc:
        raise renamed(exc, "job.", f"{where}.") from None
    if getattr(body, "endpoint", None) != CHAT:
        raise InvalidInput(f"a batch step after a batch runs chat lines: endpoint must be '{CHAT}'",
                           field=f"{where}.request.endpoint")
    webhook_url = getattr(body, "webhook_url", None)
    if webhook_url is not None:  # as the batch's own check_request would (all of it but the input file)
        check_webhook_url(webhook_url, settings, field=f"{where}.request.webhook_url")
    if step.get("body") is None:
        raise InvalidInput("a batch step after a batch needs 'body': each line's chat body (the previous "
                           "step's text is appended as the last user message)", field=f"{where}.body")
    line = json.dumps(chat_line("sample", step["body"], "a sample text")).encode()
    ctx = LineContext(settings=settings, batch_seed=0)
    try:
        batch_lines.expand(ctx, 1, batch_lines.parse_line(line, ctx.json_limits))
    except LineError as exc:
        param = (exc.param or "").removeprefix("body").lstrip(".")
        field = f"{where}.body" + (f".{param}" if param and not param.startswith("[") else param)
        message = f"{where}.{exc.message}" if exc.message.startswith("body.") else exc.message
        raise InvalidInput(message, field=field) from None


def _check_export(where: str, step: dict[str, Any]) -> None:
    if step.get("body") is not None:
        raise InvalidInput("'body' is for a batch step after a batch", field=f"{where}.body")
    try:
        ExportRequest.model_validate(step["request"])
    except ValidationError as exc:
        error = exc.errors(include_input=False, include_context=False)[0]
        field = ".".join(str(part) for part in error["loc"]) or "prefix"
        raise InvalidInput(f"{error['msg']} (a file name prefix: letters, digits, '.', '_', '-')",
                           field=f"{where}.request.{field}") from None


def renamed(exc: FactoryError, old: str, new: str) -> FactoryError:
    """The same error with its field (and the field at the head of its message) under ``new``."""
    if exc.field is not None and exc.field.startswith(old):
        exc.field = new + exc.field.removeprefix(old)
    if exc.message.startswith(old):
        exc.message = new + exc.message.removeprefix(old)
    return exc


# --- running --------------------------------------------------------------------
def chat_line(custom_id: str, body: dict[str, Any], text: str) -> dict[str, Any]:
    """A chained batch's line: the step's body, the previous step's text as the last user message."""
    given = body.get("messages", [])
    messages = [*(given if isinstance(given, list) else [given]), {"role": "user", "content": text}]
    return {"custom_id": custom_id, "method": "POST", "url": CHAT, "body": {**body, "messages": messages}}


def texts(response_body: dict[str, Any]) -> list[str]:
    """The texts of one output line's response, whichever endpoint made it."""
    kind = response_body.get("object")
    if kind == "chat.completion":
        return [str(c["message"]["content"] or "") for c in response_body.get("choices", [])]
    if kind == "personalization":
        return [str(r["text"]) for r in response_body.get("results", [])]
    if kind == "augmentation.result":
        return [str(r["text"]) for r in response_body.get("data", [])]
    return []


def generated_id(run_id: str, lane: int, step: int) -> str:
    """Deterministic: a finalize step that runs again overwrites the same file."""
    return "file_" + hashlib.sha256(f"{run_id}:{lane}:{step}".encode()).hexdigest()[:28]


def chained_batch_input(session: Session, settings: Settings, store: ObjectStore, tenant_id: str,
                        previous_output: str | None, body: dict[str, Any], file_id: str,
                        filename: str) -> StoredFile:
    """The next batch's input file, one chat line per text of the previous batch's output."""
    source = _output_row(session, tenant_id, previous_output)

    def produce() -> Iterator[str]:
        for _, raw in files_service.iter_lines(store, source, settings.batch_max_line_bytes):
            if not raw.strip():
                continue
            try:
                line = json.loads(raw)
            except ValueError:
                raise InvalidInput("a line of the previous step's output is too long to chain",
                                   field="input_file_id") from None
            found = texts(line["response"]["body"])
            for i, text in enumerate(found):
                custom_id = line["custom_id"] if len(found) == 1 else f"{line['custom_id']}#{i}"
                yield json.dumps(chat_line(custom_id, body, text), ensure_ascii=False)

    return _register(session, store, tenant_id, produce(), file_id, filename, BATCH_PURPOSE)


def export(session: Session, store: ObjectStore, tenant_id: str, previous_kind: str, previous_job_id: str | None,
           previous_output: str | None, file_id: str, filename: str) -> StoredFile:
    """The previous step's output saved as the tenant's file ``filename``: a batch's output file, or an
    augmentation job's dataset rows."""
    if previous_kind == "batch":
        source = _output_row(session, tenant_id, previous_output)
        lines: Iterator[str] = _lines_of(files_service.iter_content(store, source))
        purpose = GENERATED_PURPOSE
    else:
        assert previous_job_id is not None
        key = dataset_file_key(tenant_id, previous_job_id, DATASET_JSONL)
        if not store.exists(key):
            raise NotFound("the augmentation job left no dataset to export", field="input")
        lines, purpose = _lines_of(store.iter_bytes(key)), DATA_PURPOSE
    return _register(session, store, tenant_id, lines, file_id, filename, purpose)


def _output_row(session: Session, tenant_id: str, file_id: str | None) -> StoredFile:
    row = files_service.find_file(session, tenant_id, file_id) if file_id is not None else None
    if row is None:
        raise NotFound("the previous step has no output file (no line succeeded, or it was deleted)",
                       field="input")
    return row


def _lines_of(chunks: Iterator[bytes]) -> Iterator[str]:
    rest = b""
    for chunk in chunks:
        rest += chunk
        *complete, rest = rest.split(b"\n")
        yield from (line.decode() for line in complete if line.strip())
    if rest.strip():
        yield rest.decode()


def _register(session: Session, store: ObjectStore, tenant_id: str, lines: Iterator[str], file_id: str,
              filename: str, purpose: str) -> StoredFile:
    """Spool the lines (in memory up to 8 MiB, then on disk) and store them as the tenant's file."""
    with tempfile.SpooledTemporaryFile(8 << 20) as fh:
        size, count, digest = _spool(fh, lines)
        if count == 0:
            raise InvalidInput("the previous step's output has no text to take", field="input")
        fh.seek(0)
        return files_service.register_generated(session, store, tenant_id, file_id=file_id, filename=filename,
                                                fileobj=fh, size=size, lines=count, sha256=digest,
                                                purpose=purpose)


def _spool(fh: IO[bytes], lines: Iterator[str]) -> tuple[int, int, str]:
    digest, size, count = hashlib.sha256(), 0, 0
    for line in lines:
        data = line.encode() + b"\n"
        fh.write(data)
        digest.update(data)
        size, count = size + len(data), count + 1
    return size, count, digest.hexdigest()

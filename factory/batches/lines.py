"""One line of a batch file: parse it, validate it, and turn it into the items a worker generates.

A line is ``{"custom_id", "method": "POST", "url", "body"}``. Each supported ``url``
has an expander that validates the body and returns item specs:

- ``/v1/chat/completions``: one item per choice (``n``), each with the messages,
  sampling parameters and stop strings in ``item.request`` (the worker's default
  handler runs those), merged back into one chat completion with ``n`` choices.
- ``/v1/personalize``: the job API's personalization body; the template is rendered
  over the audience here, one item per (recipient, variant), merged back into one
  response listing every text.
- ``/v1/augment``: accepted (the URL is part of the contract) but not run by this
  server yet: its line is born failed and answered in the error file with the code
  ``unsupported_endpoint``. Wiring a real augmentation kind means replacing
  ``_expand_augment``.

Problems raise ``LineError`` with an OpenAI-style code and the parameter at fault;
messages never repeat the submitted values.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from factory.chat.schemas import ChatCompletionRequest
from factory.chat.seeds import choice_seeds
from factory.config import Settings
from factory.errors import InvalidInput
from factory.jobs.schemas import JobCreate
from factory.jobs.service import render_audience
from factory.models import registry
from factory.provenance.hashing import canonical_json, derive_seed, sha256_text

CHAT = "/v1/chat/completions"
PERSONALIZE = "/v1/personalize"
AUGMENT = "/v1/augment"
SUPPORTED_URLS = (CHAT, PERSONALIZE, AUGMENT)
UNSUPPORTED_ENDPOINT = "unsupported_endpoint"
MAX_CUSTOM_ID = 256
_ENVELOPE_KEYS = frozenset({"custom_id", "method", "url", "body"})


class LineError(Exception):
    """A line the batch cannot accept; becomes one entry of ``errors.data``."""

    def __init__(self, code: str, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.param = param

    def as_error(self, line: int) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "param": self.param, "line": line}


@dataclass(frozen=True)
class ItemSpec:
    key: str
    variant: int
    record: dict[str, Any]
    prompt: str
    prompt_sha256: str
    request: dict[str, Any] | None
    seed: int
    error: str | None = None


@dataclass
class LineContext:
    """What lines share while one file is read: settings, the batch seed and the batch's single model."""

    settings: Settings
    batch_seed: int
    model: str | None = None
    _known: set[str] = field(default_factory=set)

    def use_model(self, name: str, param: str = "body.model") -> str:
        """Check ``name`` against the allow-list (once per name) and that every line uses the same model.

        One model per batch, as OpenAI requires: a batch is one job on that model's queue.
        """
        if name not in self._known:
            try:
                registry.resolve(name, self.settings.model_allowlist)
            except InvalidInput as exc:
                raise LineError("model_not_found", exc.message, param) from None
            self._known.add(name)
        if self.model is None:
            self.model = name
        elif name != self.model:
            raise LineError("mismatched_model", "every line of a batch must use the same model "
                            "(this line names a different one)", param)
        return name


def parse_envelope(raw: bytes) -> tuple[str, str, dict[str, Any]]:
    """(custom_id, url, body) of a JSON line, or a LineError naming what is wrong."""
    try:
        line = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise LineError("invalid_json_line", "this line is not valid JSON") from None
    if not isinstance(line, dict):
        raise LineError("invalid_json_line", "this line is not a JSON object")
    unknown = sorted(set(line) - _ENVELOPE_KEYS)
    if unknown:
        raise LineError("invalid_request", f"unknown field '{unknown[0][:64]}'", unknown[0][:64])
    for name in ("custom_id", "method", "url", "body"):
        if name not in line:
            raise LineError("missing_required_parameter", f"missing required field '{name}'", name)
    custom_id, method, url, body = line["custom_id"], line["method"], line["url"], line["body"]
    if not isinstance(custom_id, str) or not custom_id or len(custom_id) > MAX_CUSTOM_ID:
        raise LineError("invalid_request", f"custom_id must be a string of 1 to {MAX_CUSTOM_ID} characters",
                        "custom_id")
    if method != "POST":
        raise LineError("invalid_method", "method must be POST", "method")
    if url not in SUPPORTED_URLS:
        raise LineError("invalid_url", "url must be one of " + ", ".join(SUPPORTED_URLS), "url")
    if not isinstance(body, dict):
        raise LineError("invalid_request", "body must be a JSON object", "body")
    return custom_id, url, body


def expand(ctx: LineContext, line_no: int, custom_id: str, url: str, body: dict[str, Any]) -> list[ItemSpec]:
    if url == CHAT:
        return _expand_chat(ctx, line_no, custom_id, body)
    if url == PERSONALIZE:
        return _expand_personalize(ctx, line_no, custom_id, body)
    return _expand_augment(ctx, line_no, custom_id, body)


def _pydantic_error(exc: ValidationError) -> LineError:
    first = exc.errors()[0]
    loc = ".".join(str(p) for p in first.get("loc", ()))
    param = f"body.{loc}" if loc else "body"
    # Only the message: pydantic's 'input' and 'ctx' would echo the submitted value.
    return LineError("invalid_request", f"{param}: {first.get('msg', 'invalid value')}", param)


def _expand_chat(ctx: LineContext, line_no: int, custom_id: str, body: dict[str, Any]) -> list[ItemSpec]:
    try:
        req = ChatCompletionRequest.model_validate(body)
    except ValidationError as exc:
        raise _pydantic_error(exc) from None
    ctx.use_model(req.model)
    if req.n > ctx.settings.max_variants:
        raise LineError("invalid_request", f"n must be at most {ctx.settings.max_variants}", "body.n")
    messages = req.generation_messages()
    request = {"messages": messages, "params": req.generation_params(), "stop": req.stop_list()}
    prompt = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
    prompt_sha = sha256_text(canonical_json(messages))
    record = {"line": line_no, "url": CHAT}
    return [ItemSpec(key=custom_id, variant=i, record=record, prompt=prompt, prompt_sha256=prompt_sha,
                     request=request, seed=seed)
            for i, seed in enumerate(choice_seeds(req.seed, ctx.batch_seed, custom_id, req.n))]


def _expand_personalize(ctx: LineContext, line_no: int, custom_id: str, body: dict[str, Any]) -> list[ItemSpec]:
    try:
        job = JobCreate.model_validate({"kind": "personalization", **body})
    except ValidationError as exc:
        raise _pydantic_error(exc) from None
    ctx.use_model(job.model or ctx.model or ctx.settings.model)
    try:
        _, keys, prompts = render_audience(ctx.settings, job)
    except InvalidInput as exc:
        param = f"body.{exc.field}" if exc.field else "body"
        raise LineError("invalid_request", exc.message, param) from None
    params = job.params.model_dump()
    seed = params.pop("seed")
    job_seed = ctx.batch_seed if seed is None else seed
    system = [{"role": "system", "content": job.system_prompt}] if job.system_prompt else []
    specs: list[ItemSpec] = []
    for key, prompt in zip(keys, prompts, strict=True):
        request = {"messages": [*system, {"role": "user", "content": prompt}], "params": params, "stop": []}
        prompt_sha = sha256_text(prompt)
        for variant in range(job.variants):
            specs.append(ItemSpec(
                key=custom_id, variant=len(specs),
                record={"line": line_no, "url": PERSONALIZE, "recipient": key, "variant": variant},
                prompt=prompt, prompt_sha256=prompt_sha, request=request,
                seed=derive_seed(job_seed, key, variant),
            ))
    return specs


def _expand_augment(ctx: LineContext, line_no: int, custom_id: str, body: dict[str, Any]) -> list[ItemSpec]:
    model = body.get("model")
    if model is not None:
        if not isinstance(model, str):
            raise LineError("invalid_request", "body.model must be a string", "body.model")
        ctx.use_model(model)
    return [ItemSpec(key=custom_id, variant=0, record={"line": line_no, "url": AUGMENT}, prompt="",
                     prompt_sha256=sha256_text(""), request=None, seed=0,
                     error=f"{UNSUPPORTED_ENDPOINT}: {AUGMENT} is not available on this server yet")]

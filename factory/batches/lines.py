"""One line of a batch file: parse it, validate it, and turn it into the items a worker generates.

A line is ``{"custom_id", "method": "POST", "url", "body"}``. Each supported ``url``
has an expander that validates the body and returns item specs:

- ``/v1/chat/completions``: one item per choice (``n``), each with the messages,
  sampling parameters, stop strings and ``response_format`` (checked once per distinct
  format, factory/structured/) in ``item.request`` (the worker's default handler runs
  those), merged back into one chat completion with ``n`` choices.
- ``/v1/personalize``: the job API's personalization body; the template is rendered
  over the audience here, one item per (recipient, variant), merged back into one
  response listing every text.
- ``/v1/augment``: the job API's augmentation body, checked strictly and planned by
  the augmentation service itself (same items and seeds as ``POST /v1/jobs``); one
  item per planned (method, row or label, k). The line's first item also carries
  what the batch's finalize step needs to filter the line's outputs and render its
  response: the source rows, the filters and ``include_source`` (see
  ``augment_line_context``).

Problems raise ``LineError`` with an OpenAI-style code and the parameter at fault;
messages never repeat the submitted values.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Annotated, Any, Final, Literal, NamedTuple

from pydantic import Field, TypeAdapter, ValidationError, with_config
from pydantic_core import to_json
from typing_extensions import TypedDict

from factory import strict_json
from factory.augmentation import service as augmentation_service
from factory.augmentation.schemas import AugmentationJobCreate
from factory.chat import schemas as chat_schemas
from factory.chat.schemas import STRICT, ChatCompletionRequest
from factory.chat.seeds import choice_seeds
from factory.config import Settings
from factory.errors import InvalidInput
from factory.models import registry
from factory.personalization.schemas import JobCreate
from factory.personalization.service import render_audience
from factory.provenance.hashing import derive_seed, sha256_text
from factory.strict_json import JSONLimits
from factory.templates.budget import RenderBudget, bound

CHAT: Final = "/v1/chat/completions"
PERSONALIZE: Final = "/v1/personalize"
AUGMENT: Final = "/v1/augment"
SUPPORTED_URLS = (CHAT, PERSONALIZE, AUGMENT)
UNSUPPORTED_ENDPOINT = "unsupported_endpoint"
# The key, in an augment line's first item record, of what the whole line shares.
AUGMENT_LINE = "augment_line"
MAX_CUSTOM_ID = 256


class PersonalizeBody(JobCreate):
    """The job API's body; ``kind`` may be left out (the URL says it)."""

    kind: Literal["personalization"] = "personalization"


class AugmentBody(AugmentationJobCreate):
    """The job API's augmentation body; ``kind`` may be left out (the URL says it)."""

    kind: Literal["augmentation"] = "augmentation"


CustomId = Annotated[str, Field(min_length=1, max_length=MAX_CUSTOM_ID)]


@with_config(STRICT)
class ChatLine(TypedDict):
    custom_id: CustomId
    method: Literal["POST"]
    url: Literal["/v1/chat/completions"]
    body: ChatCompletionRequest


@with_config(STRICT)
class PersonalizeLine(TypedDict):
    custom_id: CustomId
    method: Literal["POST"]
    url: Literal["/v1/personalize"]
    body: PersonalizeBody


@with_config(STRICT)
class AugmentLine(TypedDict):
    custom_id: CustomId
    method: Literal["POST"]
    url: Literal["/v1/augment"]
    body: AugmentBody


Line = ChatLine | PersonalizeLine | AugmentLine
# One pass in pydantic-core parses the JSON and validates the envelope and the body the URL selects.
_LINE: TypeAdapter[Line] = TypeAdapter(Annotated[Line, Field(discriminator="url")])
_ENVELOPE_FIELDS = ("custom_id", "method", "url", "body")


class LineError(Exception):
    """A line the batch cannot accept; becomes one entry of ``errors.data``."""

    def __init__(self, code: str, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.param = param

    def as_error(self, line: int) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "param": self.param, "line": line}


class ItemSpec(NamedTuple):
    """One item a line expands to (a tuple: a 50,000-line file makes one per line at least).

    ``record_json`` and ``request_json``, when set, are ``record`` and ``request`` already as
    JSON text (a chat line builds them cheaper than a serializer call on a dict).
    """

    key: str
    variant: int
    record: dict[str, Any] | None
    prompt: str
    prompt_sha256: str
    request: dict[str, Any] | None
    seed: int
    error: str | None = None
    record_json: str | None = None
    request_json: str | None = None


@dataclass
class LineContext:
    """What lines share while one file is read: settings, the batch seed and the batch's single model."""

    settings: Settings
    batch_seed: int
    model: str | None = None
    _known: set[str] = field(default_factory=set)
    # The JSON of a chat request after its messages, per distinct sampling parameters and stops
    # (a batch usually has a handful): ',"params":{...},"stop":[...]}'.
    _request_tails: dict[tuple[Any, ...], str] = field(default_factory=dict)
    # The JSON of a structured line's response_format for the worker, per distinct format as sent
    # (its schema is checked once however many lines repeat it): ',"response_format":{...}'.
    _format_tails: dict[tuple[bytes, bool], str] = field(default_factory=dict)
    # One template budget for the whole file: its personalize lines render against it together.
    render_budget: RenderBudget | None = None

    def __post_init__(self) -> None:
        if self.render_budget is None:
            self.render_budget = RenderBudget.from_settings(self.settings)

    @property
    def json_limits(self) -> JSONLimits:
        return JSONLimits(max_depth=self.settings.json_max_depth)

    def request_tail(self, req: ChatCompletionRequest) -> str:
        stop = req.get("stop")
        key = (req.get("max_completion_tokens"), req.get("max_tokens"), req.get("temperature"), req.get("top_p"),
               req.get("repetition_penalty"), stop if stop is None or isinstance(stop, str) else tuple(stop))
        tail = self._request_tails.get(key)
        if tail is None:
            tail = to_json({"params": chat_schemas.generation_params(req),
                            "stop": chat_schemas.stop_list(req)}).decode()
            tail = "," + tail[1:]
            if len(self._request_tails) < 1024:
                self._request_tails[key] = tail
        return tail

    def format_tail(self, req: ChatCompletionRequest) -> str:
        """',"response_format":{...}' to close a structured line's request JSON with; "" for free text."""
        fmt = req.get("response_format")
        if fmt is None or fmt["type"] == "text":
            return ""
        key = (to_json(fmt), bool(req.get("stop")))
        tail = self._format_tails.get(key)
        if tail is None:
            try:
                spec = chat_schemas.output_format(req, self.settings)
            except InvalidInput as exc:
                raise LineError("invalid_request", exc.message, f"body.{exc.field}"[:128]) from None
            tail = ',"response_format":' + to_json(spec).decode()
            if len(self._format_tails) < 256:
                self._format_tails[key] = tail
        return tail

    def use_model(self, name: str, param: str = "body.model") -> str:
        """Check ``name`` against the allow-list (once per name) and that every line uses the same model.

        One model per batch, as OpenAI requires: a batch is one job on that model's queue.
        """
        if name == self.model:
            return name
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


def parse_line(raw: bytes, limits: JSONLimits | None = None) -> Line:
    """The validated line, or a LineError with an OpenAI-style code and the parameter at fault.

    Decoded by the API's strict decoder (duplicate keys, lone surrogates, NUL, NaN, out-of-range
    numbers, deep nesting are refused, naming the JSON path), then validated.
    """
    try:
        value = strict_json.decode(raw, limits)
    except strict_json.InvalidJSON as exc:
        if not exc.path:  # the line as a whole: not UTF-8, not JSON, too deep, a bad top-level key
            raise LineError("invalid_json_line", f"this line is {exc.reason}") from None
        raise LineError("invalid_request", f"{exc.path}: {exc.reason}", exc.path[:128]) from None
    try:
        return _LINE.validate_python(value)
    except ValidationError as exc:
        raise _line_error(exc.errors(include_input=False, include_context=False)) from None


def _line_error(errors: list[Any]) -> LineError:
    """The most telling error first: not JSON, then the envelope (url, custom_id, method), then the body."""
    def rank(err: Any) -> int:
        loc = err.get("loc", ())
        if not loc or err["type"].startswith("union_tag"):
            return 0
        return 1 if len(loc) < 3 and loc[1] != "body" else 2

    err = min(errors, key=rank)
    kind, loc = err["type"], tuple(str(p) for p in err.get("loc", ()))
    if kind == "json_invalid":
        return LineError("invalid_json_line", "this line is not valid JSON")
    if not loc and kind != "union_tag_not_found" and kind != "union_tag_invalid":
        return LineError("invalid_json_line", "this line is not a JSON object")
    if kind == "union_tag_not_found":
        return LineError("missing_required_parameter", "missing required field 'url'", "url")
    if kind == "union_tag_invalid":
        return LineError("invalid_url", "url must be one of " + ", ".join(SUPPORTED_URLS), "url")
    param = loc[1] if len(loc) == 2 else "body." + ".".join(loc[2:])
    param = param[:128]
    if kind == "missing":
        return LineError("missing_required_parameter", f"missing required field '{param}'", param)
    if param == "method":
        return LineError("invalid_method", "method must be POST", "method")
    if param == "custom_id":
        return LineError("invalid_request", f"custom_id must be a string of 1 to {MAX_CUSTOM_ID} characters",
                         "custom_id")
    if kind == "extra_forbidden" and param not in _ENVELOPE_FIELDS and not param.startswith("body."):
        return LineError("invalid_request", f"unknown field '{param}'", param)
    return LineError("invalid_request", f"{param}: {err.get('msg', 'invalid value')}", param)


def expand(ctx: LineContext, line_no: int, line: Line) -> list[ItemSpec]:
    if line["url"] == CHAT:
        return _expand_chat(ctx, line_no, line["custom_id"], line["body"])
    if line["url"] == PERSONALIZE:
        return _expand_personalize(ctx, line_no, line["custom_id"], line["body"])
    return _expand_augment(ctx, line_no, line["custom_id"], line["body"])


def chat_items(ctx: LineContext, line: Line) -> int | None:
    """A chat line's item count after the checks ``expand`` makes, without building its items; None for
    the other lines, which are checked by expanding them."""
    if line["url"] == CHAT:
        return _chat_choices(ctx, line["body"])
    return None


def _chat_choices(ctx: LineContext, req: ChatCompletionRequest) -> int:
    ctx.use_model(req["model"])
    n = req.get("n", 1)
    if n > ctx.settings.max_variants:
        raise LineError("invalid_request", f"n must be at most {ctx.settings.max_variants}", "body.n")
    ctx.format_tail(req)
    return n


def _expand_chat(ctx: LineContext, line_no: int, custom_id: str, req: ChatCompletionRequest) -> list[ItemSpec]:
    n = _chat_choices(ctx, req)
    messages: list[Any] = req["messages"]
    if not all(type(m["content"]) is str and m["role"] != "developer" and len(m) == 2 for m in messages):
        messages = chat_schemas.generation_messages(req)  # else they already are {"role", "content"} dicts
    messages_json = to_json(messages)
    # The JSON of {"messages", "params", "stop"}, byte for byte what the serializer would write (tested).
    request_json = '{"messages":' + messages_json.decode() + ctx.request_tail(req)
    format_tail = ctx.format_tail(req)
    if format_tail:
        request_json = request_json[:-1] + format_tail + "}"
    prompt = chat_schemas.last_user_message(messages)
    prompt_sha = hashlib.sha256(messages_json).hexdigest()  # chat_schemas.messages_sha256, without a 2nd encode
    record_json = f'{{"line":{line_no},"url":"{CHAT}"}}'
    seed = req.get("seed")
    if n == 1 and seed is not None:  # the common line: no derived seed to hash
        return [ItemSpec(custom_id, 0, None, prompt, prompt_sha, None, seed, None, record_json, request_json)]
    return [ItemSpec(custom_id, i, None, prompt, prompt_sha, None, choice_seed, None, record_json, request_json)
            for i, choice_seed in enumerate(choice_seeds(seed, ctx.batch_seed, custom_id, n))]


def _expand_personalize(ctx: LineContext, line_no: int, custom_id: str, job: PersonalizeBody) -> list[ItemSpec]:
    ctx.use_model(job.model or ctx.model or ctx.settings.model)
    try:
        assert ctx.render_budget is not None
        with bound(ctx.render_budget):
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


def _expand_augment(ctx: LineContext, line_no: int, custom_id: str, body: AugmentBody) -> list[ItemSpec]:
    """One item per planned augmentation item; LLM methods carry messages, rule methods options.

    ``variant`` numbers the line's items (unique per line, as the item table needs);
    ``record["variant"]`` is the planned item's own k index, as in an augmentation job.
    With ``params.seed`` the items get the seeds the job API gives the same body; without,
    the line's seed derives from the batch seed and the custom_id (two lines over one
    dataset draw differently).
    """
    ctx.use_model(body.model or ctx.model or ctx.settings.model)
    params = body.params.model_dump()
    seed = params.pop("seed")
    line_seed = derive_seed(ctx.batch_seed, custom_id, 0) if seed is None else seed
    if body.dataset.file_id is not None:
        raise LineError("invalid_request", "a batch line's dataset is given inline (rows or content); "
                        "dataset.file_id is for the job API", "body.dataset.file_id")
    try:
        planned = augmentation_service.plan(ctx.settings, body, line_seed,
                                            augmentation_service.load_inline_rows(ctx.settings, body.dataset))
    except InvalidInput as exc:
        param = f"body.{exc.field}" if exc.field else "body"
        raise LineError("invalid_request", exc.message, param) from None
    specs: list[ItemSpec] = []
    for n, item in enumerate(planned.items):
        record = {"line": line_no, "url": AUGMENT, **item.record, "variant": item.variant}
        if n == 0:
            record[AUGMENT_LINE] = {
                "sources": [[r.row_id, r.label, r.text] for r in planned.rows],
                "filters": body.filters.model_dump(), "include_source": body.include_source,
            }
        request = {**item.request, "params": params} if "messages" in item.request else item.request
        specs.append(ItemSpec(key=custom_id, variant=n, record=record, prompt=item.prompt,
                              prompt_sha256=item.prompt_sha256, request=request, seed=planned.seed_of(item)))
    return specs


def augment_line_context(first_item_record: dict[str, Any]) -> dict[str, Any]:
    """What an augment line's first item records for filtering and rendering the line:
    ``sources`` ([row_id, label, text] per dataset row), ``filters`` (a FilterSpec dump)
    and ``include_source``."""
    context: dict[str, Any] = first_item_record[AUGMENT_LINE]
    return context

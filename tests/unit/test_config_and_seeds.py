import pytest
from pydantic import ValidationError

from factory.config import Settings
from factory.errors import UnknownModel
from factory.models.registry import resolve
from factory.provenance.hashing import derive_seed


def test_time_limits_must_be_ordered() -> None:
    with pytest.raises(ValidationError):
        Settings(task_soft_time_limit_s=100, task_time_limit_s=90)
    with pytest.raises(ValidationError):
        Settings(task_time_limit_s=1000, broker_visibility_timeout_s=900)


def test_queue_per_model() -> None:
    assert Settings().queue_for_model("smollm2-135m-instruct") == "gen.smollm2-135m-instruct"


def test_item_seed_depends_on_identity_not_position() -> None:
    assert derive_seed(42, "r-1", 0) == derive_seed(42, "r-1", 0)
    assert derive_seed(42, "r-1", 0) != derive_seed(42, "r-1", 1)
    assert derive_seed(42, "r-1", 0) != derive_seed(43, "r-1", 0)
    assert 0 <= derive_seed(7, "x", 3) < 2**31


def test_model_allow_list() -> None:
    assert resolve("smollm2-135m-instruct").source == "package"
    with pytest.raises(UnknownModel):
        resolve("gpt-unknown")
    with pytest.raises(UnknownModel):
        resolve("smollm2-135m-instruct", allowlist=["something-else"])

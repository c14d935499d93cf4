"""Pipeline schedules, the catch-up decision and the example pipeline files, without services."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from factory.config import Settings
from factory.db.models import Pipeline
from factory.errors import InvalidInput
from factory.pipelines import firing, jobspec, schedule, steps
from factory.pipelines.cli import load_specs
from factory.pipelines.schemas import PipelineSpec

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples" / "pipelines").glob("*.yaml"))
BERLIN_MONDAY_6 = {"cron": "0 6 * * MON", "timezone": "Europe/Berlin"}


def at(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)  # type: ignore[misc]


def test_a_cron_slot_keeps_its_local_time_across_daylight_saving() -> None:
    first = schedule.next_after(BERLIN_MONDAY_6, at(2026, 3, 25))
    assert first == at(2026, 3, 30, 4)  # summer time since the 29th: 06:00 is 04:00 UTC
    assert schedule.next_after(BERLIN_MONDAY_6, at(2026, 3, 20)) == at(2026, 3, 23, 5)  # winter: 05:00 UTC
    assert schedule.upcoming(BERLIN_MONDAY_6, first) == [at(2026, 3, 30, 4), at(2026, 4, 6, 4), at(2026, 4, 13, 4)]


def test_latest_due_counts_the_slots_it_stands_for() -> None:
    every = {"every_seconds": 10}
    assert schedule.latest_due(every, at(2026, 1, 1), at(2026, 1, 1, 0, 0, 35)) == (at(2026, 1, 1, 0, 0, 30), 4)
    assert schedule.latest_due(BERLIN_MONDAY_6, at(2026, 3, 30, 4), at(2026, 4, 14)) == (at(2026, 4, 13, 4), 3)


@pytest.mark.parametrize(("spec", "field"), [
    ({"cron": "0 25 * * *"}, "schedule.cron"),
    ({"cron": "0 6 * *"}, "schedule.cron"),
    ({"cron": "0 6 * * MON", "timezone": "Europe/Nowhere"}, "schedule.timezone"),
    ({"every_seconds": 30}, "schedule.every_seconds"),
])
def test_bad_schedules_name_their_field(spec: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        schedule.check(spec, min_interval_s=60)
    assert caught.value.field == field


def _pipeline(next_fire_at: datetime, catch_up: str = "run_once") -> Pipeline:
    return Pipeline(id="pipe_x", tenant_id="t", name="p", schedule={"every_seconds": 60}, job={}, enabled=True,
                    concurrency="skip", catch_up=catch_up, next_fire_at=next_fire_at, revision=0)


def test_slots_that_came_due_while_no_scheduler_ran_are_a_catch_up() -> None:
    now = at(2026, 1, 1, 12, 3, 30)
    # The scheduler came back at 12:03:20; slots from 12:00 were due while it was down.
    slot = firing.due(_pipeline(at(2026, 1, 1, 12)), now, resumed_at=at(2026, 1, 1, 12, 3, 20))
    assert slot == firing.Slot(at(2026, 1, 1, 12, 3), "catch_up", 3, at(2026, 1, 1, 12, 4))
    # It has been up since before the slot: on time, however late the tick ran.
    slot = firing.due(_pipeline(at(2026, 1, 1, 12, 3)), now, resumed_at=at(2026, 1, 1, 11))
    assert slot == firing.Slot(at(2026, 1, 1, 12, 3), "schedule", 0, at(2026, 1, 1, 12, 4))
    assert firing.due(_pipeline(at(2026, 1, 1, 12, 4)), now, None) is None  # not due yet
    paused = _pipeline(at(2026, 1, 1, 12))
    paused.enabled = False
    assert firing.due(paused, now, None) is None


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_each_example_pipeline_is_a_valid_spec(path: Path) -> None:
    [raw] = load_specs(path)
    spec = PipelineSpec.model_validate_json(PipelineSpec.model_validate(raw).model_dump_json())
    schedule.check(spec.schedule.model_dump(exclude_none=True), min_interval_s=60)
    file_id = None if spec.input is None else "file_0123456789abcdef0123456789ab"
    first = spec.job or (spec.steps or [])[0]
    body = jobspec.build(first.kind, first.request, file_id)  # the kind's own request model
    assert isinstance(body, jobspec.KINDS[first.kind].body)
    chain = [step.model_dump(exclude_none=True) for step in (spec.steps or [])[1:]]
    steps.check(Settings(), first.kind, chain)  # each later step as it is checked when saved


def test_the_examples_cover_the_three_uses_and_a_chain() -> None:
    specs = [load_specs(p)[0] for p in EXAMPLES]
    kinds = {(spec.get("job") or spec["steps"][0])["kind"] for spec in specs}
    assert kinds == {"campaign", "augmentation", "batch"}
    assert [step["kind"] for spec in specs for step in spec.get("steps", [])] == ["batch", "batch", "export"]

"""The only place with SQL for augmentation: source rows, generated outputs, verdicts."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from sqlalchemy import delete, func, insert, select
from sqlalchemy.orm import Session

from factory.db.models import AugmentationSourceRow, AugmentationVerdict, Item, ItemState
from factory.jobs.repository import JobRepository


class AugmentationRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    def add_source_rows(self, rows: Sequence[dict[str, Any]], batch: int = 2000) -> None:
        for start in range(0, len(rows), batch):
            self.session.execute(insert(AugmentationSourceRow), list(rows[start:start + batch]))

    def source_rows(self, job_id: str) -> list[AugmentationSourceRow]:
        return list(self.session.scalars(
            select(AugmentationSourceRow).where(AugmentationSourceRow.job_id == job_id)
            .order_by(AugmentationSourceRow.seq)
        ))

    def iter_succeeded_items(self, job_id: str, page: int = 1000) -> Iterator[Item]:
        """Generated items in submission order, in pages to bound memory."""
        return JobRepository(self.session).iter_items(job_id, page, (ItemState.SUCCEEDED,))

    def item_counts_by_method(self, job_id: str) -> dict[str, dict[str, int]]:
        """{method: {state: count}}; an item's key starts with its method (``eda:row-1``)."""
        out: dict[str, dict[str, int]] = {}
        rows = self.session.execute(
            select(Item.key, Item.state, func.count()).where(Item.job_id == job_id).group_by(Item.key, Item.state)
        )
        for key, state, n in rows:
            per_state = out.setdefault(key.split(":", 1)[0], {})
            per_state[ItemState(state).value] = per_state.get(ItemState(state).value, 0) + int(n)
        return out

    def replace_verdicts(self, job_id: str, rows: Sequence[dict[str, Any]], batch: int = 2000) -> None:
        """All of a job's verdicts at once: a rerun of finalize replaces them, never adds."""
        self.session.execute(delete(AugmentationVerdict).where(AugmentationVerdict.job_id == job_id))
        for start in range(0, len(rows), batch):
            self.session.execute(insert(AugmentationVerdict), list(rows[start:start + batch]))

    def verdicts_for(self, item_ids: Sequence[str]) -> dict[str, AugmentationVerdict]:
        """The verdicts of these items, by item id (items not judged yet are missing)."""
        if not item_ids:
            return {}
        rows = self.session.scalars(select(AugmentationVerdict).where(AugmentationVerdict.item_id.in_(item_ids)))
        return {v.item_id: v for v in rows}

"""A batch that raises (out of memory, a poison item) is split in halves until it fits or the bad item
is alone; texts do not change."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from workers.generators.base import GenerationRequest, GenerationResult, is_out_of_memory
from workers.generators.fake import FakeGenerator
from workers.kinds.base import generate_isolating


class OutOfMemoryError(RuntimeError):
    """Named like torch.cuda.OutOfMemoryError, which is what a GPU raises."""


class SmallMemoryGenerator(FakeGenerator):
    """The fake generator, on a device where more than ``fits`` requests at once run out of memory."""

    def __init__(self, fits: int, error: type[Exception] = OutOfMemoryError) -> None:
        super().__init__("m")
        self.fits = fits
        self.error = error
        self.batches: list[int] = []

    def generate(self, batch: Sequence[GenerationRequest]) -> list[GenerationResult]:
        self.batches.append(len(batch))
        if len(batch) > self.fits:
            raise self.error("CUDA out of memory. Tried to allocate 2.00 GiB")
        return super().generate(batch)


def _reqs(n: int, poison: int | None = None) -> list[GenerationRequest]:
    return [GenerationRequest.from_prompt("POISON" if i == poison else f"p{i}", seed=i) for i in range(n)]


def test_out_of_memory_is_recognised_without_torch() -> None:
    assert is_out_of_memory(OutOfMemoryError("CUDA out of memory"))
    assert is_out_of_memory(RuntimeError("CUDA error: out of memory"))
    assert is_out_of_memory(RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate"))
    assert is_out_of_memory(MemoryError())
    assert not is_out_of_memory(RuntimeError("shape mismatch"))
    assert not is_out_of_memory(ValueError("out of memory"))  # only allocator errors


def test_batch_is_halved_recursively_until_it_fits() -> None:
    gen = SmallMemoryGenerator(fits=3)
    outcomes = generate_isolating(gen, _reqs(10))
    # 10 -> 5 + 5 -> (2 + 3) + (2 + 3): every sub-batch that fits runs once
    assert gen.batches == [10, 5, 2, 3, 5, 2, 3]
    assert [o.error for o in outcomes] == [None] * 10
    assert [o.extra for o in outcomes] == [{"batch_size": n} for n in (2, 2, 3, 3, 3, 2, 2, 3, 3, 3)]
    # the same texts as one big batch on a device with room for it
    assert [o.result.text for o in outcomes if o.result] == [r.text for r in FakeGenerator("m").generate(_reqs(10))]


def test_an_item_that_does_not_fit_alone_fails_alone() -> None:
    gen = SmallMemoryGenerator(fits=0, error=MemoryError)
    outcomes = generate_isolating(gen, _reqs(3))
    assert [o.error for o in outcomes] == ["generation failed: out of memory"] * 3
    assert gen.batches == [3, 1, 2, 1, 1]


def test_splitting_and_poison_isolation_combine() -> None:
    gen = SmallMemoryGenerator(fits=4)
    outcomes = generate_isolating(gen, _reqs(8, poison=6))
    assert [o.error for o in outcomes] == [None] * 6 + ["generation failed: PoisonedPrompt", None]
    # 8 (out of memory) -> 4 ok + 4 (poison) -> 2 ok + 2 (poison) -> 1 poison + 1 ok
    assert gen.batches == [8, 4, 4, 2, 2, 1, 1]
    assert [o.extra for o in outcomes] == [{"batch_size": n} for n in (4, 4, 4, 4, 2, 2, 1, 1)]


def test_a_poison_item_is_found_by_halving() -> None:
    gen = SmallMemoryGenerator(fits=64)
    outcomes = generate_isolating(gen, _reqs(16, poison=9))
    assert [i for i, o in enumerate(outcomes) if o.error] == [9]
    assert gen.batches == [16, 8, 8, 4, 2, 1, 1, 2, 4]  # 9 calls, not 1 + 16


def test_a_batch_that_fits_runs_once_and_records_nothing_extra() -> None:
    gen = SmallMemoryGenerator(fits=8)
    outcomes = generate_isolating(gen, _reqs(8))
    assert gen.batches == [8] and all(o.extra is None for o in outcomes)


def test_torch_out_of_memory_error_is_recognised() -> None:
    torch = pytest.importorskip("torch")
    assert is_out_of_memory(torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB"))

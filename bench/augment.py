"""Rule-based augmentation throughput per worker process, side by side in one run.

Rows are the example intents dataset repeated (each repeat with new seeds, so
every variant is new work). Compared, on the same rows and seeds:

- EDA as the worker runs it: synonyms looked up in WordNet once per word and
  remembered for the life of the process;
- the same EDA with a WordNet lookup on every use of a word (what an augmenter
  that looks synonyms up per call, as nlpaug's and TextAttack's WordNet
  augmenters do, pays; those libraries also need WordNet downloaded at run time,
  so they cannot run here);
- character noise;
- a whole worker chunk through the kind handler's ``run`` (item rows in, outcomes
  out: what a task does between claiming a chunk and writing it; no database);
- the quality filters of the finalize step over the EDA outputs (sentence
  embeddings dominate; reported for scale, not a target).

Prints a table and, with ``--write``, records it in bench/README.md.

    python -m bench.augment            # full run (a minute or two on a 2-core CPU)
    python -m bench.augment --quick    # smoke mode for CI (seconds)
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

from bench.readme import write_section
from factory.augmentation.schemas import FilterSpec
from factory.db.models import Item, Job
from workers.augment import eda, noise
from workers.augment.synonyms import WordNetSynonyms, default_synonyms
from workers.generators.fake import FakeGenerator
from workers.kinds.augmentation import AugmentationHandler

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "augmentation" / "intents.csv"
TARGET_ROWS_PER_S = 2000


class LookupEveryTime(WordNetSynonyms):
    """The baseline: the same synonym rules, but WordNet is asked again for every word it sees."""

    def synonyms(self, word: str) -> tuple[str, ...]:
        self._cache.clear()
        return super().synonyms(word)


def load_rows(n: int) -> list[tuple[str, str, str]]:
    with EXAMPLE.open(encoding="utf-8") as fh:
        base = [(r["id"], r["text"], r["label"]) for r in csv.DictReader(fh)]
    return [base[i % len(base)] for i in range(n)]


def timed(fn: Callable[[], Any], repeats: int) -> float:
    """Best of ``repeats`` wall-clock runs (the least disturbed by other work on the machine)."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def eda_pass(rows: list[tuple[str, str, str]], lexicon: WordNetSynonyms) -> list[str]:
    out = []
    for n, (_, text, _) in enumerate(rows):
        op = eda.pick_operation(eda.OPERATIONS, n % 2, n)
        out.append(eda.augment(text, operation=op, alpha=0.1, seed=n, lexicon=lexicon))
    return out


def noise_pass(rows: list[tuple[str, str, str]]) -> None:
    for n, (_, text, _) in enumerate(rows):
        noise.augment(text, rate=0.03, operations=noise.OPERATIONS, seed=n)


def handler_chunk(rows: list[tuple[str, str, str]]) -> tuple[AugmentationHandler, Job, list[Item]]:
    job = Job(id="job_" + "0" * 28, kind="augmentation", params={}, seed=1, model="bench", options={})
    options = {"alpha": 0.1, "operations": list(eda.OPERATIONS)}
    items = [Item(id=f"itm_{n:028x}", key=f"eda:{rid}", variant=n % 2, seed=n, prompt=text,
                  record={"method": "eda", "label": label, "source_row_id": rid},
                  request={"method": "eda", "options": options})
             for n, (rid, text, label) in enumerate(rows)]
    return AugmentationHandler(), job, items


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="smoke mode: few rows, one repeat, no filters")
    ap.add_argument("--write", action="store_true", help="record the table in bench/README.md")
    args = ap.parse_args()
    n, repeats = (1_000, 1) if args.quick else (20_000, 3)
    rows = load_rows(n)
    baseline_rows = rows[: max(200, n // 10)]

    start = time.perf_counter()
    lexicon = default_synonyms()
    lexicon.load()
    load_s = time.perf_counter() - start
    eda_pass(rows, lexicon)  # warm the per-word cache, as a worker's first chunks do

    results: list[tuple[str, int, float]] = []
    eda_s = timed(lambda: eda_pass(rows, lexicon), repeats)
    results.append(("EDA, synonyms cached per process (the worker)", n, eda_s))
    uncached = LookupEveryTime()
    uncached._wordnet = lexicon._wordnet  # the same loaded WordNet: only the lookups differ
    base_s = timed(lambda: eda_pass(baseline_rows, uncached), repeats)
    results.append(("EDA, WordNet lookup on every word (per-call baseline)", len(baseline_rows), base_s))
    results.append(("character noise", n, timed(lambda: noise_pass(rows), repeats)))
    handler, job, items = handler_chunk(rows)
    gen = FakeGenerator("bench")
    results.append(("worker chunk: handler.run over EDA items", n,
                    timed(lambda: handler.run(gen, job, items), repeats)))
    if not args.quick:
        results.append(filters_row(rows))

    eda_rate = n / eda_s
    base_rate = len(baseline_rows) / base_s
    lines = ["| what | rows | seconds | rows/s | vs per-call baseline |", "|---|---|---|---|---|"]
    for name, count, secs in results:
        rate = count / secs
        ratio = "–" if name.startswith("quality filters") else f"{rate / base_rate:.1f}x"
        lines.append(f"| {name} | {count} | {secs:.2f} | **{rate:,.0f}** | {ratio} |")
    table = "\n".join(lines)
    meta = (f"one process, {platform.machine()}, Python {platform.python_version()}, best of {repeats}; "
            f"WordNet load once per process: {load_s:.1f} s (not in the rows/s); target ≥ {TARGET_ROWS_PER_S} "
            f"rows/s for EDA per worker process")
    print(table)
    print(meta)
    assert eda_rate > base_rate, "caching synonyms was not faster than looking them up every time"
    if not args.quick:
        assert eda_rate >= TARGET_ROWS_PER_S, f"EDA ran {eda_rate:.0f} rows/s, under {TARGET_ROWS_PER_S}"
    if args.write:
        write_section("augment", table, meta)


def filters_row(rows: list[tuple[str, str, str]]) -> tuple[str, int, float]:
    """The finalize step's filters over 2,000 EDA outputs of 100 source rows (embedding model loaded first)."""
    from workers.augment.embeddings import get_encoder
    from workers.augment.filters import Candidate, FilterPipeline, Source

    sources = [Source(rid, label, text) for rid, text, label in rows[:100]]
    outputs = eda_pass(rows[:2000], default_synonyms())
    cands = [Candidate(f"itm-{n}", "eda", rows[n][2], text, rows[n][0]) for n, text in enumerate(outputs)]
    encoder = get_encoder("cpu")
    encoder.load()
    pipeline = FilterPipeline(FilterSpec(label_check="centroid"), encoder.encode)
    secs = timed(lambda: pipeline.run(cands, sources), 1)
    return ("quality filters (finalize) incl. embeddings, for scale", len(cands), secs)


if __name__ == "__main__":
    main()

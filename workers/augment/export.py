"""The exported dataset: Parquet shards, the same rows as JSONL, rejected rows, and a dataset card.

The layout is the Hugging Face hub's (``README.md`` with YAML front matter and a
``configs`` entry, ``data/train-00000-of-00001.parquet``), so
``datasets.load_dataset("parquet", data_files=...)`` reads the shards as they are
and the folder can be pushed to a hub as is. Every row keeps ``source_row_id``,
``method`` and its provenance (a JSON string: Parquet has no free-form maps).
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from factory.provenance.hashing import canonical_json
from factory.provenance.marking import TRAINED_ALGORITHMIC_MEDIA
from factory.storage.keys import DATASET_CARD, DATASET_JSONL, DATASET_REJECTED, dataset_shard_name

ROWS_PER_SHARD = 100_000

SCHEMA = pa.schema([
    pa.field("text", pa.string(), nullable=False),
    pa.field("label", pa.string(), nullable=False),
    pa.field("method", pa.string(), nullable=False),
    pa.field("source_row_id", pa.string()),
    pa.field("variant", pa.int32()),
    pa.field("item_id", pa.string()),
    pa.field("provenance", pa.string(), nullable=False),
    pa.field("ai_generated", pa.bool_(), nullable=False),
    pa.field("digital_source_type", pa.string()),
], metadata={
    # Machine-readable marking of the file (EU AI Act Art. 50(2)); each row says its own in its columns.
    "ai_generated": "rows with ai_generated=true were made by a trained model",
    "digital_source_type": TRAINED_ALGORITHMIC_MEDIA,
    "marking": "IPTC digital source type per row: trainedAlgorithmicMedia (language model), algorithmicMedia "
               "(rules), null (a source row)",
})

COLUMN_DOCS = {
    "text": "the utterance",
    "label": "its label (kept from the source row, or the label it was generated for)",
    "method": "`original` (a source row), `paraphrase`, `generate`, `eda` or `char_noise`",
    "source_row_id": "id of the source row it was made from (null for `generate`)",
    "variant": "the k index of this variant for its source row or label (null for `original`)",
    "item_id": "the factory item that made it (null for `original`)",
    "provenance": "JSON: model, weights sha256, prompt sha256, parameters, seed, filter scores",
    "ai_generated": "true for a row a language model made (`paraphrase`, `generate`), false otherwise",
    "digital_source_type": "IPTC digital source type: `trainedAlgorithmicMedia` (language model), "
                           "`algorithmicMedia` (rules: `eda`, `char_noise`), null (a source row)",
}


@dataclass(frozen=True)
class ExportedFile:
    name: str
    data: bytes
    content_type: str


def _parquet_bytes(rows: Sequence[dict[str, Any]]) -> bytes:
    table = pa.Table.from_pylist(list(rows), schema=SCHEMA)
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    return buf.getvalue()


def _jsonl(rows: Sequence[dict[str, Any]]) -> bytes:
    return "".join(canonical_json(r) + "\n" for r in rows).encode()


def build_files(rows: Sequence[dict[str, Any]], rejected: Sequence[dict[str, Any]], card: str,
                rows_per_shard: int = ROWS_PER_SHARD) -> list[ExportedFile]:
    """Every file of the dataset folder, in a fixed order (card first)."""
    shards = max(1, -(-len(rows) // rows_per_shard))
    files = [ExportedFile(DATASET_CARD, card.encode(), "text/markdown; charset=utf-8")]
    for n in range(shards):
        part = rows[n * rows_per_shard:(n + 1) * rows_per_shard]
        files.append(ExportedFile(dataset_shard_name(n, shards), _parquet_bytes(part),
                                  "application/vnd.apache.parquet"))
    files.append(ExportedFile(DATASET_JSONL, _jsonl(rows), "application/x-ndjson"))
    files.append(ExportedFile(DATASET_REJECTED, _jsonl(rejected), "application/x-ndjson"))
    return files


# --- the dataset card ---------------------------------------------------------------
def _cell(value: Any) -> str:
    text = "–" if value is None else (f"{value:.4g}" if isinstance(value, float) else str(value))
    return text.replace("|", "\\|").replace("\n", " ")


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _size_category(n: int) -> str:
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"),
                        (1_000_000, "100K<n<1M")):
        if n < limit:
            return name
    return "1M<n<10M"


def _front_matter(report: dict[str, Any]) -> str:
    # Only server-made values go into the YAML (the task name is checked against [a-z0-9-]).
    return "\n".join([
        "---",
        "license: other",
        "task_categories:",
        f"- {report['task']}",
        "language_creators:",
        "- found",
        "- machine-generated",
        "annotations_creators:",
        "- found",
        "source_datasets:",
        "- original",
        "size_categories:",
        f"- {_size_category(report['rows'])}",
        "tags:",
        "- synthetic",
        "- machine-generated",
        "- data-augmentation",
        f"pretty_name: Augmented dataset {report['job_id']}",
        "configs:",
        "- config_name: default",
        "  data_files:",
        "  - split: train",
        "    path: data/train-*.parquet",
        "---",
    ])


def render_card(report: dict[str, Any]) -> str:
    """README.md for the dataset folder, from the job report (one source for both)."""
    src, gen, model = report["source"], report["generated"], report["model"]
    methods = [[m["method"], m["k"], json.dumps(m["params"], sort_keys=True), m["generated"], m["accepted"],
                m["acceptance_rate"]] for m in report["methods"]]
    filters = [[f["name"], json.dumps(f["params"], sort_keys=True), f["evaluated"], f["rejected"],
                f["acceptance_rate"]] for f in report["filters"]]
    div = report["diversity"]
    diversity = [[name, d["rows"], d["distinct_1"], d["distinct_2"], d["mean_pairwise_cosine"]]
                 for name, d in div.items()]
    dist = report["label_distribution"]
    labels = [[label, dist["before"].get(label, 0), dist["generated"].get(label, 0), dist["after"].get(label, 0)]
              for label in sorted(set(dist["before"]) | set(dist["after"]))]
    llm_used = any(m["method"] in ("paraphrase", "generate") for m in report["methods"])
    model_lines = [
        f"- Language model: `{model['name']}` (weights sha256 `{model['weights_sha256']}`), "
        f"parameters `{json.dumps(model['params'], sort_keys=True)}`, prompts sha256 `{model['prompts_sha256']}`."
        if llm_used else "- No language model: rule-based methods only.",
        f"- Rule-based synonyms: {report['synonyms']}." if any(m["method"] == "eda" for m in report["methods"])
        else "",
        f"- Filter embeddings: `{report['embedding_model']['model']}` ({report['embedding_model']['package']}).",
        f"- Job `{report['job_id']}`, seed {report['seed']}, factory {report['factory_version']}.",
    ]
    parts = [
        _front_matter(report),
        "",
        f"# Augmented dataset {report['job_id']}",
        "",
        f"Machine-generated variants of a labelled {report['task']} dataset of {src['rows']} rows: "
        f"{gen['accepted']} of {gen['generated']} generated rows passed the quality filters "
        f"({_cell(report['acceptance_rate'])}), for {report['rows']} rows in all"
        f"{' with the source rows' if report['include_source'] else ''}.",
        "",
        "**AI-generated content.** Rows whose `ai_generated` column is true were written by a language model "
        "(IPTC digital source type `trainedAlgorithmicMedia`); rule-made rows say `algorithmicMedia`. The "
        "Parquet files carry the same marking in their key-value metadata (EU AI Act Art. 50(2)).",
        "",
        "```python",
        "from datasets import load_dataset",
        'ds = load_dataset("parquet", data_files="data/train-*.parquet", split="train")',
        "```",
        "",
        "## Source dataset",
        "",
        f"- sha256 `{src['sha256']}` over its (id, label, text) rows as canonical JSON lines",
        f"- {src['rows']} rows, {len(dist['before'])} labels, read from `{src['format']}` "
        f"(text `{src['text_field']}`, label `{src['label_field']}`, id `{src['id_field']}`)",
        "",
        "## Methods and parameters",
        "",
        _table(["method", "k", "parameters", "generated", "accepted", "acceptance rate"], methods),
        "",
        *[line for line in model_lines if line],
        "",
        "## Quality filters",
        "",
        "Applied in this order, each to the rows that passed the ones before it.",
        "",
        _table(["filter", "parameters", "evaluated", "rejected", "acceptance rate"], filters),
        "",
        "## Diversity",
        "",
        "distinct-n: unique n-grams / all n-grams (higher: more varied wording); mean pairwise cosine "
        "of sentence embeddings (lower: more varied meaning).",
        "",
        _table(["rows", "count", "distinct-1", "distinct-2", "mean pairwise cosine"], diversity),
        "",
        "## Label distribution",
        "",
        _table(["label", "before", "generated (accepted)", "after"], labels),
        "",
        "## Files and columns",
        "",
        "- `data/train-*.parquet`: the dataset; `jsonl/train.jsonl`: the same rows as JSON lines; "
        "`rejected.jsonl`: generated rows the filters refused, with the filter and its scores.",
        "",
        _table(["column", "meaning"], [[f"`{k}`", v] for k, v in COLUMN_DOCS.items()]),
        "",
        "## License and intended use",
        "",
        "Machine-generated text. The rows derive from the source dataset and, for the LLM methods, from the "
        "language model named above: their use is bound by the source dataset's license and the model's "
        "license (SmolLM2: Apache-2.0), and the EDA synonyms by the WordNet 3.0 license. Labels are carried "
        "over, not re-annotated by people; review a sample before training or publishing, and do not use "
        "the rows as evidence about real customers.",
        "",
    ]
    return "\n".join(parts)

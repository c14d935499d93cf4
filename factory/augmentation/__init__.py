"""Augmentation jobs: a labelled dataset in, more labelled rows out, filtered and exported as a dataset.

``schemas`` (the request), ``sources`` (reading CSV/JSONL/Parquet byte streams),
``prompts`` (the LLM methods' chat prompts), ``service`` (planning items, reading
the report and dataset files), ``repository`` (SQL). The methods, filters and the
export run on the worker: ``workers/kinds/augmentation.py`` and ``workers/augment/``.
"""

"""Augmentation on the worker: rule-based methods (EDA, character noise), LLM output cleanup,
quality filters over sentence embeddings, diversity metrics and the dataset export.

The rule-based modules (``eda``, ``noise``, ``synonyms``) import no model runtime;
``embeddings`` loads sentence-transformers lazily, only where the filters need it.
"""

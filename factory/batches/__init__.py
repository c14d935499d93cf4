"""Batches (OpenAI Batch API): a JSONL file of requests run as one job on the worker pool."""

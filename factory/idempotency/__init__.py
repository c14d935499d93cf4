"""Idempotency keys: a retried POST gets the first response instead of doing the work twice."""

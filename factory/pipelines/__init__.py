"""Scheduled pipelines: saved job specs that fire on a calendar, exactly once per slot (docs/pipelines.md)."""

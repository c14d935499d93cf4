"""Verify: regenerate an item from its provenance record, on a worker, and say whether it matches."""

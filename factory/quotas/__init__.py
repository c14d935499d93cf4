"""Quotas and rate limits per tenant and per API key, counted in the database and in Redis."""

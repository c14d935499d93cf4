"""Tenants and API keys: who is asking, for which tenant, allowed to do what."""

"""Security tests: hostile input on every endpoint that takes a body."""

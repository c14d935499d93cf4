"""Structured outputs: ``response_format`` (OpenAI's ``json_schema`` and ``json_object``) checked at submit;
the worker's grammar (workers/generators/structured.py) guarantees the shape of what the model writes."""

"""Channels and the checks every generated copy passes: limits, brand rules, language, placeholders.

Pure Python and torch-free, so the API (validating a control variant) and the worker
(checking and repairing every output) share one implementation.
"""

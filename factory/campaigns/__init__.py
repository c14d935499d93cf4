"""Personalization campaigns: an audience, a brand, templates per channel, variants, checked copy.

A campaign is a job of kind ``campaign`` whose ``options["campaign"]`` holds
its plan (pinned template versions, the brand's rules, variants, segments); the
worker generates, repairs and checks every copy, and the finalize step writes the
report and the ESP exports.
"""

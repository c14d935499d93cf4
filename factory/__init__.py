"""Content factory: bulk text generation over a job queue, with provenance.

`factory` is the producer side (API, domain, data). It never imports torch,
transformers or `workers`, so the API runs on a machine with no model runtime.
"""

__version__ = "0.1.0"

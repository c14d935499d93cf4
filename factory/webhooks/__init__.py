"""Webhooks, signed the Standard Webhooks way (the scheme OpenAI's webhooks use), for every domain
that notifies: batches today (``batch.completed``...), scheduled pipelines' runs next
(``pipeline.run.succeeded``/``failed``).

Each delivery is an HTTP POST of a JSON event::

    {"id": "evt_…", "object": "event", "type": "batch.completed", "created_at": 1767225600,
     "data": {"id": "batch_…"}}

with three headers: ``webhook-id`` (the event id; the same on every retry, so a
receiver can drop duplicates), ``webhook-timestamp`` (unix seconds) and
``webhook-signature``: ``v1,`` + base64(HMAC-SHA256(key, "{webhook-id}.{webhook-timestamp}.{body}")).
The key is ``FACTORY_WEBHOOK_SECRET``: base64-decoded when it starts with ``whsec_``,
else its UTF-8 bytes. The OpenAI SDK verifies it as is:
``OpenAI().webhooks.unwrap(body, headers, secret=...)``.

- ``signing``: the event (``event(type, data, created_at)``) and its signature.
- ``delivery``: the URL check when one is saved, one signed POST (``send``), and the flow a
  domain's worker task runs (``deliver``): one short transaction reads what to send (the domain's
  ``prepare``, which returns plain values), the POST goes out with no database session open, and
  another short transaction records the outcome (the domain's ``record``); then ``retry_after``
  says when to try again (``FACTORY_WEBHOOK_MAX_ATTEMPTS``, exponential backoff). Addresses on
  loopback or private networks are refused unless ``FACTORY_WEBHOOK_ALLOW_PRIVATE`` is set.

A domain supplies only what is its own: which event, to which URL, and where the outcome is kept
(``factory/batches/webhooks.py``).
"""

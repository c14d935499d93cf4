"""Reliability: the reconciler that repairs lost wake-ups and dead workers, and ``factory doctor``.

The database is the source of truth and the broker only a wake-up signal, so
everything here is SQL plus "publish a task by name": re-send unsent outbox
messages, hand expired chunk leases back, re-enqueue work whose message the
broker lost, dead-letter chunks out of attempts, and re-ask for stuck
finalizations. Every step is a conditional UPDATE, safe with two reconcilers
running at once; a leader lease in the database keeps one of them active.
"""

"""``factory top``: queues, workers and running jobs, refreshing in place (an operator's view, all tenants)."""

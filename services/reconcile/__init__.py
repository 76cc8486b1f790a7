"""reconcile: one of the services that write Postgres (README, "Who writes what").

Matches IDs with recipients set-wise, maintains lists, turns export requests into ID batches.
"""

"""reconcile: owns Postgres.

Matches IDs with recipients set-wise, maintains lists, turns export requests into ID batches.
"""

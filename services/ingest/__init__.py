"""ingest: the platform's inbound edge.

Outbound segment files and upstream segment events become membership batches.
"""

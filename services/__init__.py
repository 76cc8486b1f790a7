"""The Audience Bridge services: ingest, reconcile, publish, and ecsim (the local Experience Cloud)."""

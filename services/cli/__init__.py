"""``audience-bridge``: the operators' command line (data sources, audiences, loads, runs, exports)."""

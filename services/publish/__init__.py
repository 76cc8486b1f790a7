"""publish: the platform's outbound edge: ensures shared audiences exist and writes inbound data files."""

"""ecsim: a local Experience Cloud (IMS, AAM-style REST, inbound/outbound files, fault injection)."""

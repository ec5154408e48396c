"""Everything that writes the Prometheus exposition format: the per-site and per-service
families rendered on scrape from the status tables, the label texts they carry, and the
instance's own collector and event metrics."""

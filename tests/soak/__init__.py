"""Fault soak: a seeded CRM workload under worker, broker, Connect and target faults, checked
row by row and event by event against the source (`make soak`, see the README)."""

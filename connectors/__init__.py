"""How data gets in and out: Debezium connector configs, source schemas, sink adapters."""

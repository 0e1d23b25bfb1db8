"""Per-source mappings from raw changes to canonical records."""

"""Dead-letter tooling: list, show and rerun what the stages sent to the DLQ topics."""

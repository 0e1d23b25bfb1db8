"""Sink adapters: apply canonical events to target systems idempotently."""

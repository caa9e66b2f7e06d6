"""Reproducible benchmarks of the outbox, settlement and health paths: ``python -m bench``."""

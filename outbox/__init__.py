"""Transactional outbox: enqueue events with a business change, publish them to the broker.

Delivery is at least once: a row whose publish was accepted but whose mark
was lost (a crash, a killed transaction) is published again, so consumers
deduplicate on the message id, which is the event id.
"""

"""Forgetting a customer (GDPR erasure): ``segstream forget`` and the erase-requests consumer.

Both go through :class:`worker.erase.eraser.Eraser`: one atomic Redis script per customer
(``forget.lua``: every per-customer key, the shared indexes, the unpublished segment changes, a
suppression entry the state script honours), then a tombstone on segment-changes. The design,
the key list and the suppression's bound: docs/forget.md.
"""

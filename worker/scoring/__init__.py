"""Segmentation in the stream: score changed customers, write their segment, publish changes.

- :mod:`.vectors`: customer hash fields -> feature matrix in real units (pure numpy);
- :mod:`.decide`: assignment of a round of customers against the current model (pure);
- :mod:`.snapshot`: the state script's snapshot of changed customers -> rows to score (pure);
- :mod:`.store`: the Redis side (one Lua write per round, a Lua read for customers without a
  snapshot, outbox, unscored stamps, online-model state, claims);
- :mod:`.models`: the model holder (rules-v1 until a K-means model exists, hot reload, online
  drift tracking);
- :mod:`.publisher`: the aiokafka producer of ``segment-changes`` and control notices;
- :mod:`.control`: control-topic messages;
- :mod:`.service`: :class:`ScoringService`, the mode Service the worker runs beside ingestion,
  composed of :mod:`.queue` (who waits, and why), :mod:`.pacing` (the share of the worker's
  time), :mod:`.rounds` (read, assign, write; read-ahead), :mod:`.plan` (a round's write and
  outgoing changes, pure), :mod:`.publishing` (ordered publication, outbox replay),
  :mod:`.drift`, :mod:`.status`, :mod:`.metrics`, :mod:`.retry`; Redis and Kafka as the
  protocols of :mod:`.ports`;
- :mod:`.cli`: ``segstream rescore``.

See docs/scoring.md.
"""

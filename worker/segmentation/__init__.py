"""The segment model as the streaming worker uses it: numpy only, no Kafka or Redis.

:mod:`.features` (names, caps, :class:`~.features.Scaler`), :mod:`.model` (the K-means
artifact), :mod:`.assign` (nearest centroid with hysteresis, explanations), :mod:`.rules` (the
RFM rules used before any model exists), :mod:`.online` (incremental clustering and drift).
Adapters: :mod:`.artifacts` (files) and :mod:`.artifacts_redis` (Redis). Training, profiling and
plots are the offline side (:mod:`analytics`). See docs/segmentation.md.
"""

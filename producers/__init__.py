"""Producers: synthetic customers with known personas, and replay of files and topic ranges.

Modules (each docstring says what it decides):

* :mod:`producers.synthetic` — ``generate(SyntheticConfig(customers, days, seed, start))`` ->
  :class:`~producers.synthetic.SyntheticData` with ``events()`` / ``records()`` in event-time
  order and ``labels`` (customer -> persona); personas in :mod:`producers.personas`.
* :mod:`producers.file_source` — ``FileSource(path, format)``: the reader of each format
  (:mod:`producers.readers`: orders-csv, clicks-csv, online-retail (UCI), jsonl;
  :mod:`producers.profile_readers`: customers-csv) -> events and line-numbered rejects,
  deterministic ids (:mod:`producers.ids`); :mod:`producers.parallel` runs it in a child process.
* :mod:`producers.sinks` — ``KafkaSink`` (kafka-python, acks=all, lz4, delivery confirmed on
  ``close``), ``FileSink``, ``MemorySink``; :mod:`producers.run` — the loop, rejects file,
  progress bar and summary; :mod:`producers.rate` — token bucket and event-time pacing.
* :mod:`producers.topic_replay` — re-emit a bounded range of a topic.
* :mod:`producers.cli` — ``segstream produce synthetic`` and ``segstream replay``.
"""

"""Helpers shared by test modules; a test module never imports another test module for them.

Where to look (fixtures stay in ``tests/conftest.py``; ``tests/unit/test_suite_layout.py``
fails if a test module imports another one):

- ``synthetic``: seeded orders and clicks, ``dataset``, batches, the pandas RFM oracle.
- ``worker_process``: ``segstream worker`` as a subprocess (``WorkerProcess``, ``settings_env``).
- ``producing``: sending records with kafka-python, paced or with their partition and offset.
- ``state_checks``: the Redis state and counters read back and compared with the oracle.
- ``kafka_reads``: dead letters and committed offsets read back from the broker.
- ``redis_servers``: a redis-server of a test's own, for faults the shared one must not suffer.
- ``scripts``: Lua scripts that keep Redis busy for a known time.
- ``records``: a fetched Kafka record without a broker. ``fakes``: in-memory stand-ins.
- ``waiting``: ``wait_for``, polling with a deadline instead of sleeping.
"""

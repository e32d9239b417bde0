"""The orders + clicks hot path of ``segstream worker``: batched aiokafka consumption.

faust hosts the process (lifecycle, signals, web, timers, control agents); this package is the
batched consumer service it starts: fetch a batch, decode and validate it in one pass, send the
rejects to the dead-letter topic, apply the rest to Redis with one state-store call, then commit
the Kafka offsets that call covered, and tell the :class:`ChangeListener` what changed. It holds
no customer state of its own.
"""

from worker.ingest.batch import Assembled, Rejected, assemble, change_reasons
from worker.ingest.errors import DeadLetterError, IngestError
from worker.ingest.listener import ChangeListener, NullListener

__all__ = [
    "Assembled",
    "ChangeListener",
    "DeadLetterError",
    "IngestError",
    "NullListener",
    "Rejected",
    "assemble",
    "change_reasons",
]

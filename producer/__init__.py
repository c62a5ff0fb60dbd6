"""The engine's side of the queue: envelope and keys, Lua scripts, Producer, QueuedEventStore."""

from chem_persistence.producer.config import QueueSettings
from chem_persistence.producer.keys import Keys
from chem_persistence.producer.producer import Producer
from chem_persistence.producer.queued_store import FlowParked, QueuedEventStore
from chem_persistence.producer.wire import InvalidEvent

__all__ = ["FlowParked", "InvalidEvent", "Keys", "Producer", "QueueSettings", "QueuedEventStore"]

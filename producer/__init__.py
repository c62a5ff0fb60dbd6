"""The engine's side of the queue: envelope and keys, Lua scripts, Producer, QueuedEventStore."""

from producer.config import QueueSettings
from producer.keys import Keys
from producer.producer import Producer
from producer.queued_store import FlowParked, QueuedEventStore
from producer.wire import InvalidEvent

__all__ = ["FlowParked", "InvalidEvent", "Keys", "Producer", "QueueSettings", "QueuedEventStore"]

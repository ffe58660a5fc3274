"""The send stage: delivers mapped bodies to the platform, concurrently, with retries.

``Sender`` (one process) and ``MultiProcessSender`` (``--workers N``) share one interface;
``StreamTransport`` is the HTTP/1.1 client they send through.
"""

from .processes import MultiProcessSender, WorkerSpec
from .retry import RetryPolicy
from .sender import RowSource, Sender
from .transport import StreamTransport, Transport

__all__ = [
    "MultiProcessSender",
    "RetryPolicy",
    "RowSource",
    "Sender",
    "StreamTransport",
    "Transport",
    "WorkerSpec",
]

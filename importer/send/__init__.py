"""The send stage: delivers mapped bodies to the platform, concurrently, with retries.

``Sender`` (one process) and ``MultiProcessSender`` (``--workers N``) share one interface;
``StreamTransport`` is the HTTP/1.1 client they send through. They pull ``Request`` objects
(the rows a request carries, its body, its ordering keys) from a ``RequestSource`` and answer
each row through ``on_result``. The retry settings are the config's ``send.retry``
(``importer.config.RetryOptions``), used as is by the sender and its worker processes.
"""

from .processes import MultiProcessSender, WorkerSpec
from .sender import Request, RequestSource, Sender
from .transport import StreamTransport, Transport

__all__ = [
    "MultiProcessSender",
    "Request",
    "RequestSource",
    "Sender",
    "StreamTransport",
    "Transport",
    "WorkerSpec",
]

"""The send stage: delivers mapped records to the platform, concurrently, with retries.

``Sender`` (one process) and ``MultiProcessSender`` (``--workers N``) share one interface;
``StreamTransport`` is the HTTP/1.1 client they send through. They pull ``Request`` objects
(the rows a request carries, their encoded records, its ordering keys) from a
``RequestSource`` and answer each row through ``on_result``; a batch the platform finds too
big is halved, a row error answered for a batch is resolved by bisection
(``importer.send.delivery``); every attempt takes one request from the run's
``RequestBudget`` (the daily quota). The retry settings are the config's ``send.retry``
(``importer.config.RetryOptions``), used as is by the sender and its worker processes.
"""

from .budget import RequestBudget
from .processes import MultiProcessSender, WorkerSpec
from .sender import Request, RequestSource, Sender
from .transport import StreamTransport, Transport

__all__ = [
    "MultiProcessSender",
    "Request",
    "RequestBudget",
    "RequestSource",
    "Sender",
    "StreamTransport",
    "Transport",
    "WorkerSpec",
]

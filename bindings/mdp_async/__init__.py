"""Async driver for mdp_core on anyio: runs natively under trio and asyncio.

* :class:`Broker` - one ROUTER for clients and workers; ``await broker.serve()``
  until cancelled, or ``async with Broker(...)``; notices a worker's dropped
  connection in milliseconds and lets the core re-dispatch its request.
* :class:`Worker` - runs an async handler per request in a task of its own,
  so MDP HEARTBEATs keep flowing during long jobs; ``concurrency=N``
  conversations; reconnects on broker loss.
* :class:`Client` - ``async with Client(...)``: Lazy Pirate requests,
  streaming, MMI ``service_exists``, many concurrent callers over a
  bounded pool of sockets.

The sockets, monitor handling and connection tracking are the pyzmq glue
shared with the blocking driver (:mod:`mdp_zmq.glue`); see docs/async.md.
"""

from mdp_zmq import RequestTimeout, TransportConfig

from mdp_core import BrokerConfig, ClientConfig, Dialect, WorkerConfig

from ._broker import Broker
from ._client import Client
from ._worker import Body, Handler, Worker

__all__ = [
    "Body",
    "Broker",
    "BrokerConfig",
    "Client",
    "ClientConfig",
    "Dialect",
    "Handler",
    "RequestTimeout",
    "TransportConfig",
    "Worker",
    "WorkerConfig",
]

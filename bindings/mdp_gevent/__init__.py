"""gevent driver for mdp_core: greenlets and ``zmq.green`` sockets.

* :class:`Broker` - one ROUTER for clients and workers; ``broker.serve()``
  blocks the calling greenlet until ``broker.close()``, ``broker.start()``
  serves in a new greenlet; notices a worker's dropped connection in
  milliseconds and lets the core re-dispatch its request.
* :class:`Worker` - runs the handler per request in a greenlet of its own,
  so MDP HEARTBEATs keep flowing during jobs that yield to the hub;
  ``concurrency=N`` conversations; reconnects on broker loss.
* :class:`Client` - Lazy Pirate requests, streaming, MMI ``service_exists``,
  many greenlets at once over a bounded pool of sockets.

Works with and without ``gevent.monkey.patch_all()``. The sockets, the
monitor handling, the connection tracking and each socket's I/O turn are
shared with the other drivers (:mod:`mdp_zmq.glue`, :mod:`mdp_zmq.engine`);
see docs/gevent.md.
"""

from mdp_zmq import HandlerError, RequestTimeout, TransportConfig

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
    "HandlerError",
    "RequestTimeout",
    "TransportConfig",
    "Worker",
    "WorkerConfig",
]

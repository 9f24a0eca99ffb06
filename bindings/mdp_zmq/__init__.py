"""Blocking pyzmq driver for mdp_core, the pyzmq glue other drivers share, and the CLI.

* :class:`Broker` - one ROUTER for clients and workers; notices a worker's
  dropped connection in milliseconds (monitor + ``zmq.SRCFD``) and lets the
  core re-dispatch its request.
* :class:`Worker` - runs a handler per request; reconnects on broker loss.
* :class:`Client` - Lazy Pirate requests, streaming, MMI ``service_exists``.
"""

from mdp_core import BrokerConfig, ClientConfig, Dialect, WorkerConfig

from ._broker import Broker
from ._client import Client, MdpZmqError, RequestTimeout
from ._worker import Handler, Reply, Worker
from .glue import ConnectionTracker, HandlerError, Security, TransportConfig

__all__ = [
    "Broker",
    "BrokerConfig",
    "Client",
    "ClientConfig",
    "ConnectionTracker",
    "Dialect",
    "Handler",
    "HandlerError",
    "MdpZmqError",
    "Reply",
    "RequestTimeout",
    "Security",
    "TransportConfig",
    "Worker",
    "WorkerConfig",
]

"""Sans-IO Majordomo Protocol core: codec and Broker, Worker, Client machines.

Nothing here reads a clock, sleeps, touches a socket or draws random
numbers: time comes in as ``now`` and bytes go out through ``outgoing()``.
"""

from ._codec import (
    ClientReply,
    ClientRequest,
    Command,
    Dialect,
    Disconnect,
    Heartbeat,
    Ready,
    WorkerReply,
    WorkerRequest,
    decode,
    encode,
)
from ._errors import LocalProtocolError, MalformedMessage, MdpError
from ._events import (
    BrokerLost,
    Disconnected,
    Event,
    FinalReply,
    PartialReply,
    ProtocolError,
    RequestAbandoned,
    RequestDelivered,
    RequestExpired,
    RequestFailed,
    RequestReceived,
    RequestRefused,
    RequestRequeued,
    ResetConnection,
    WorkerLost,
    WorkerReady,
)
from ._state import RequestState, WorkerState

__all__ = [
    "BrokerLost",
    "ClientReply",
    "ClientRequest",
    "Command",
    "Dialect",
    "Disconnect",
    "Disconnected",
    "Event",
    "FinalReply",
    "Heartbeat",
    "LocalProtocolError",
    "MalformedMessage",
    "MdpError",
    "PartialReply",
    "ProtocolError",
    "Ready",
    "RequestAbandoned",
    "RequestDelivered",
    "RequestExpired",
    "RequestFailed",
    "RequestReceived",
    "RequestRefused",
    "RequestRequeued",
    "RequestState",
    "ResetConnection",
    "WorkerLost",
    "WorkerReady",
    "WorkerReply",
    "WorkerRequest",
    "WorkerState",
    "decode",
    "encode",
]

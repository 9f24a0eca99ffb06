"""Sans-IO Majordomo Protocol core: codec and Broker, Worker, Client machines.

Nothing here reads a clock, sleeps, touches a socket or draws random
numbers: time comes in as ``now`` and bytes go out through ``outgoing()``.
"""

from ._broker import Broker, BrokerConfig
from ._client import Client, ClientConfig, RequestInProgress, mmi_service_found
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
from ._errors import EmptyBody, LocalProtocolError, MalformedMessage, MdpError
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
from ._worker import (
    AlreadyConnected,
    AlreadyReplied,
    NotCurrentRequest,
    PartialNotSupported,
    StaleRequest,
    Worker,
    WorkerConfig,
)

__all__ = [
    "AlreadyConnected",
    "AlreadyReplied",
    "Broker",
    "BrokerConfig",
    "BrokerLost",
    "Client",
    "ClientConfig",
    "ClientReply",
    "ClientRequest",
    "Command",
    "Dialect",
    "Disconnect",
    "Disconnected",
    "EmptyBody",
    "Event",
    "FinalReply",
    "Heartbeat",
    "LocalProtocolError",
    "MalformedMessage",
    "MdpError",
    "NotCurrentRequest",
    "PartialNotSupported",
    "PartialReply",
    "ProtocolError",
    "Ready",
    "RequestAbandoned",
    "RequestDelivered",
    "RequestExpired",
    "RequestFailed",
    "RequestInProgress",
    "RequestReceived",
    "RequestRefused",
    "RequestRequeued",
    "RequestState",
    "ResetConnection",
    "StaleRequest",
    "Worker",
    "WorkerConfig",
    "WorkerLost",
    "WorkerReady",
    "WorkerReply",
    "WorkerRequest",
    "WorkerState",
    "decode",
    "encode",
    "mmi_service_found",
]

"""A broker on one ROUTER socket: MDP/0.1, MDP/0.2 and majortomo peers alike."""

import logging
import os

from mdp_zmq import Broker, BrokerConfig, TransportConfig

ENDPOINT = os.environ.get("MDP_ENDPOINT", "tcp://127.0.0.1:5555")
logging.basicConfig(level=logging.INFO)  # worker ready/lost, re-dispatch: one line each

broker = Broker(
    ENDPOINT,
    BrokerConfig(
        heartbeat_interval=2.5,  # MDP heartbeats (idle workers)
        max_attempts=3,  # a request whose worker dies is retried elsewhere
        request_timeout=30.0,  # a request nobody can take expires after this
    ),
    # ZMTP heartbeats drop a frozen or vanished host after heartbeat_timeout;
    # a worker busy in Python is not dropped (libzmq's I/O thread answers pings).
    # Their cost grows with the square of the connections: these (the
    # defaults) carry 10,000 workers; 1.0/3.0 is fine for a few hundred.
    transport=TransportConfig(heartbeat_ivl=5.0, heartbeat_timeout=15.0),
)
print("listening on", *broker.endpoints, flush=True)
broker.run()  # until Ctrl-C/SIGTERM or broker.close(); workers get DISCONNECT

"""Requests, a streamed reply, an MMI query, a timeout, and an MDP/0.1 client."""

import os

from mdp_zmq import Client, ClientConfig, Dialect, RequestTimeout

ENDPOINT = os.environ.get("MDP_ENDPOINT", "tcp://127.0.0.1:5555")

# timeout per attempt; retries = resends (Lazy Pirate: a new socket each time)
with Client(ENDPOINT, ClientConfig(timeout=2.5, retries=3)) as client:
    print(client.request("upper", b"hello", b"world"))  # [b'HELLO', b'WORLD']

    for body in client.stream("progress", b"job"):  # PARTIALs, then the FINAL
        print(body)  # [b'25%'] [b'50%'] [b'75%'] [b'done: job']

    print(client.service_exists("upper"))  # MMI mmi.service -> True

    try:
        client.request("nobody", b"x", timeout=0.5, retries=0)
    except RequestTimeout as exc:
        # the client asked the broker why: "no reply after 1 attempt: no worker registered
        # for 'nobody'"
        print("no reply:", exc.reason)

# MDP/0.1 clients and workers share the same broker
with Client(ENDPOINT, version=Dialect.MDP01) as old:
    print(old.request("upper", b"abc"))  # [b'ABC']

"""The protocol core with no sockets: you move the bytes and the time.

A broker, two workers and a client talk through plain lists. The first
worker dies in the middle of the job; the broker hears it from the
transport (connection_lost) and the second worker answers.
"""

from mdp_core import Broker, Client, FinalReply, RequestReceived, RequestRequeued, Worker

broker, client = Broker(), Client()
workers = {b"w1": Worker(b"echo"), b"w2": Worker(b"echo")}
now = 0.0


def pump() -> None:
    """Deliver every queued message until nobody has anything to say."""
    moved = True
    while moved:
        moved = False
        for peer, w in workers.items():
            for frames in w.outgoing():
                broker.receive(peer, frames, now)
                moved = True
        for frames in client.outgoing():
            broker.receive(b"c1", frames, now)
            moved = True
        for peer, frames in broker.outgoing():
            (client if peer == b"c1" else workers[peer]).receive(frames, now)
            moved = True


for w in workers.values():
    w.connect(now)  # READY
client.request(b"echo", b"hello", now)
pump()

busy = next(p for p, w in workers.items() if w.current is not None)
print("busy worker:", busy.decode())
del workers[busy]  # the process is killed ...
broker.connection_lost(busy, now)  # ... and the transport says so
print([type(e).__name__ for e in broker.events() if isinstance(e, RequestRequeued)])
pump()

for w in workers.values():
    for event in w.events():
        if isinstance(event, RequestReceived):
            w.reply(event, [b"echo: ", *event.body], now)
pump()
print([e.body for e in client.events() if isinstance(e, FinalReply)])
print("broker wakes me next at", broker.next_deadline())  # heartbeats: drivers call tick()

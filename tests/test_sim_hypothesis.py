"""Random schedules through the simulator (Hypothesis): outcomes stay exact.

Each example builds a small system (two services, a few workers, three
clients), then runs a random schedule of requests, clock advances, worker
deaths and births, broker restarts, network partitions and refused sends
(a full queue, reported to the core with ``send_failed``). At the end the
network heals and the clock runs long enough for every client to give up.
Invariants:

* every client request ends in exactly one FinalReply or RequestFailed
  (the broker's answer to a client's own mmi.service question after a
  failure is never taken for a reply);
* a FinalReply carries the reply to *that* request (handlers echo);
* no worker handles a request it was not sent, and no worker handles a
  request for a service it did not register.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sim import Handler, Job, Sim

from mdp_core import (
    BrokerConfig,
    ClientConfig,
    Dialect,
    FinalReply,
    RequestFailed,
    RequestReceived,
    WorkerConfig,
)

SERVICES = [b"a", b"b"]
WCFG = WorkerConfig(heartbeat_interval=1.0, heartbeat_liveness=3, reconnect_delay=0.25,
                    reconnect_delay_max=2.0)
BCFG = BrokerConfig(heartbeat_interval=1.0, heartbeat_liveness=3, request_timeout=8.0,
                    max_attempts=3, processing_timeout=4.0)
DIAGNOSE = 1.0  # after the last attempt the client asks the broker why (mmi.service)
CCFG = ClientConfig(timeout=1.5, retries=2, diagnose_timeout=DIAGNOSE)
GIVE_UP = CCFG.timeout * (1 + CCFG.retries) + DIAGNOSE + 1.0


def handler(duration: float, flaky: bool) -> Handler:
    calls = [0]

    def handle(request: RequestReceived) -> Job:
        calls[0] += 1
        return Job(duration=duration, fail=flaky and calls[0] % 2 == 1)

    return handle


durations = st.sampled_from([0.0, 0.1, 0.5, 2.0, 6.0])
OP_ARGS = {
    "request": st.tuples(st.just("request"), st.integers(0, 2), st.integers(0, 1)),
    "advance": st.tuples(st.just("advance"), st.sampled_from([0.05, 0.3, 1.0, 2.5, 5.0])),
    "kill": st.tuples(st.just("kill"), st.integers(0, 5)),
    "spawn": st.tuples(st.just("spawn"), st.integers(0, 1), durations, st.booleans(),
                       st.booleans()),
    "restart": st.tuples(st.just("restart"), st.sampled_from([0.0, 0.5, 3.0])),
    "partition": st.tuples(st.just("partition"), st.integers(0, 7)),
    "heal": st.tuples(st.just("heal"), st.integers(0, 7)),
    "jam": st.tuples(st.just("jam"), st.integers(0, 7), st.integers(1, 3)),
}
# requests and clock steps weigh more than faults
KINDS = ["request"] * 4 + ["advance"] * 4 + ["kill", "spawn", "restart", "partition", "heal",
                                              "jam"]
ops = st.sampled_from(KINDS).flatmap(OP_ARGS.__getitem__)


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.tuples(st.integers(0, 1), durations), min_size=1, max_size=3),
    st.sampled_from(list(Dialect)),
    st.lists(ops, min_size=8, max_size=30),
)
def test_random_schedules_end_every_request_exactly_once(
    initial: list[tuple[int, float]], version: Dialect, schedule: list[tuple[object, ...]]
) -> None:
    run_schedule(initial, version, schedule)


def run_schedule(
    initial: list[tuple[int, float]], version: Dialect, schedule: list[tuple[object, ...]]
) -> Sim:
    """Run one schedule and assert the invariants; returns the finished simulation."""
    sim = Sim(BCFG, transport_timeout=3.0)
    for service, duration in initial:
        sim.add_worker(SERVICES[service], handler(duration, False), config=WCFG)
    clients = [sim.add_client(CCFG, version=version), sim.add_client(CCFG),
               sim.add_client(CCFG, version=Dialect.MDP01)]
    sent: dict[bytes, bytes] = {}  # request body -> service
    for op in schedule:
        kind = op[0]
        if kind == "request":
            c = clients[int(op[1])]  # type: ignore[call-overload]
            if c.core.outstanding is None:
                service = SERVICES[int(op[2])]  # type: ignore[call-overload]
                body = f"{c.name}/{len(c.requests) + 1}/{service.decode()}".encode()
                sent[body] = service
                sim.request(c, service, body)
        elif kind == "advance":
            sim.advance(float(op[1]))  # type: ignore[arg-type]
        elif kind == "kill":
            live = [w for w in sim.workers if w.alive]
            if live:
                sim.kill_worker(live[int(op[1]) % len(live)])  # type: ignore[call-overload]
        elif kind == "spawn":
            _, service_i, duration, flaky, concurrent = op
            sim.add_worker(SERVICES[int(service_i)], handler(float(duration), bool(flaky)),  # type: ignore[call-overload, arg-type]
                           config=WCFG, concurrent=bool(concurrent))
        elif kind == "restart":
            sim.restart_broker(float(op[1]))  # type: ignore[arg-type]
        else:
            nodes = [*sim.workers, *sim.clients]
            node = nodes[int(op[1]) % len(nodes)]  # type: ignore[call-overload]
            if kind == "jam":
                sim.refuse_sends(node, int(op[2]))  # type: ignore[call-overload]
            elif kind == "partition":
                sim.partition(node)
            else:
                sim.heal(node)
        sim.pump()

    for node in [*sim.workers, *sim.clients]:
        sim.heal(node)
    sim.advance(GIVE_UP)
    assert sim.all_done()
    sim.check()
    for c in sim.clients:
        for rid, (_, body) in c.requests.items():
            outcome = c.outcomes[rid]
            assert len(outcome) == 1, (c.name, rid, outcome)
            (event,) = outcome
            assert isinstance(event, (FinalReply, RequestFailed))
            if isinstance(event, FinalReply):
                assert event.body == body
    for w in sim.workers:
        for _, request in w.handled:
            assert sent[request.body[0]] == w.core.service, (w.name, request)
    return sim

"""End-to-end scenarios: Broker, Workers and Clients in the in-memory simulator."""

from __future__ import annotations

import pytest
from sim import Job, Sim, SimClient, SimWorker, takes

from mdp_core import (
    BrokerConfig,
    BrokerLost,
    ClientConfig,
    Dialect,
    FailureCause,
    FinalReply,
    PartialReply,
    ProtocolError,
    RequestFailed,
    RequestReceived,
    RequestRequeued,
    WorkerConfig,
    WorkerReady,
    mmi_service_found,
)

HB = 1.0
WCFG = WorkerConfig(heartbeat_interval=HB, heartbeat_liveness=3, reconnect_delay=0.5,
                    reconnect_delay_max=4.0)
BCFG = BrokerConfig(heartbeat_interval=HB, heartbeat_liveness=3, request_timeout=60.0)
SVC = b"echo"


def final_bodies(c: SimClient, rid: int) -> list[tuple[bytes, ...]]:
    return [e.body for e in c.outcomes[rid] if isinstance(e, FinalReply)]


def the_busy_one(*workers: SimWorker) -> SimWorker:
    (busy,) = [w for w in workers if w.busy]
    return busy


# ------------------------------------------------------------ happy paths


@pytest.mark.parametrize("worker_version", list(Dialect))
@pytest.mark.parametrize("client_version", list(Dialect))
def test_request_round_trip_in_every_dialect(worker_version: Dialect,
                                             client_version: Dialect) -> None:
    sim = Sim(BCFG)
    w = sim.add_worker(SVC, config=WCFG, version=worker_version)
    c = sim.add_client(version=client_version)
    sim.pump()
    rid = sim.request(c, SVC, [b"hello", b"world"])
    sim.pump()
    assert c.outcomes[rid] == [FinalReply(rid, SVC, (b"hello", b"world"))]
    assert [r.body for _, r in w.handled] == [(b"hello", b"world")]
    sim.check()


def test_partial_replies_stream_through_the_broker() -> None:
    sim = Sim(BCFG)
    sim.add_worker(SVC, lambda r: Job(partials=[[b"1"], [b"2"]], reply=[b"end"]), config=WCFG)
    c = sim.add_client()
    sim.pump()
    rid = sim.request(c, SVC, b"go")
    sim.pump()
    assert [p.body for p in c.partials[rid]] == [(b"1",), (b"2",)]
    assert c.outcomes[rid] == [FinalReply(rid, SVC, (b"end",))]
    assert all(isinstance(e, (PartialReply, FinalReply)) for e in c.events)


def test_service_exists_answers_through_the_broker() -> None:
    sim = Sim(BCFG)
    sim.add_worker(SVC, config=WCFG)
    c = sim.add_client()
    sim.pump()
    found = c.core.service_exists(SVC, sim.now)
    sim.pump()
    missing = c.core.service_exists(b"nobody", sim.now)
    sim.pump()
    answers = [e for e in c.events if isinstance(e, FinalReply)]
    assert [(a.request_id, mmi_service_found(a)) for a in answers] == [(found, True),
                                                                       (missing, False)]


def test_idle_workers_and_broker_keep_each_other_alive() -> None:
    sim = Sim(BCFG)
    w = sim.add_worker(SVC, config=WCFG)
    sim.advance(60.0)
    assert w.lost == []
    assert w.sockets == 1
    assert [e for e in sim.broker_events if not isinstance(e, WorkerReady)] == []


def test_single_threaded_worker_survives_a_job_longer_than_liveness() -> None:
    sim = Sim(BCFG)
    w = sim.add_worker(SVC, takes(20.0), config=WCFG)
    c = sim.add_client(ClientConfig(timeout=30.0, retries=0))
    sim.pump()
    rid = sim.request(c, SVC, b"long")
    sim.advance(20.0)
    assert final_bodies(c, rid) == [(b"long",)]
    assert w.lost == []  # the worker did not judge the broker while busy
    sim.advance(10.0)  # and the liveness window restarted when the job ended
    assert w.lost == []
    sim.check()


def test_concurrent_worker_heartbeats_while_busy() -> None:
    sim = Sim(BCFG)
    w = sim.add_worker(SVC, takes(20.0), config=WCFG, concurrent=True)
    c = sim.add_client(ClientConfig(timeout=30.0, retries=0))
    sim.pump()
    rid = sim.request(c, SVC, b"long")
    sim.advance(21.0)
    assert final_bodies(c, rid) == [(b"long",)]
    assert w.lost == []


# ------------------------------------------------------------ the scenarios of issue 3


def test_busy_worker_dies_mid_job_and_the_client_still_gets_its_reply() -> None:
    sim = Sim(BCFG)
    w1 = sim.add_worker(SVC, takes(5.0), config=WCFG)
    w2 = sim.add_worker(SVC, takes(5.0), config=WCFG)
    c = sim.add_client(ClientConfig(timeout=30.0, retries=0))
    sim.pump()
    rid = sim.request(c, SVC, b"job")
    sim.advance(1.0)
    dead = the_busy_one(w1, w2)
    survivor = w2 if dead is w1 else w1
    sim.kill_worker(dead)
    assert survivor.busy  # re-dispatched at once, no heartbeat wait
    assert any(isinstance(e, RequestRequeued) for e in sim.broker_events)
    sim.advance(5.0)
    assert final_bodies(c, rid) == [(b"job",)]
    assert c.resets == 0  # the broker recovered it; the client never had to retry
    sim.check()


def test_broker_restart_workers_reregister_after_backoff_and_clients_retry() -> None:
    sim = Sim(BCFG)
    workers = [sim.add_worker(SVC, config=WCFG) for _ in range(2)]
    c = sim.add_client(ClientConfig(timeout=2.0, retries=5))
    sim.advance(5.0)  # a successful conversation: backoff is at its minimum
    rid = sim.request(c, SVC, b"during the outage")
    sim.restart_broker(down_for=3.0)
    sim.run_until(lambda: c.core.outstanding is None, limit=30.0)
    assert final_bodies(c, rid) == [(b"during the outage",)]
    assert c.resets >= 2
    for w in workers:
        # connection lost at once, then the READY sent while the broker was
        # down went unanswered: the delay doubled before the re-registration.
        assert [(e.reason, e.reconnect_delay) for e in w.lost] == [
            ("connection lost", 0.5), ("heartbeat expired", 1.0)]
    ready = [e.worker for e in sim.broker_events if isinstance(e, WorkerReady)]
    assert {w.routing_id for w in workers} <= set(ready)
    # a new broker restart after a successful conversation starts the backoff afresh
    sim.advance(5.0)
    sim.restart_broker()
    for w in workers:
        assert w.lost[-1] == BrokerLost("connection lost", 0.5)
    sim.advance(2.0)
    rid2 = sim.request(c, SVC, b"after")
    sim.advance(1.0)
    assert final_bodies(c, rid2) == [(b"after",)]
    sim.check()


def test_broker_restart_during_a_job_ends_in_exactly_one_reply() -> None:
    sim = Sim(BCFG)
    w = sim.add_worker(SVC, takes(3.0), config=WCFG)
    c = sim.add_client(ClientConfig(timeout=8.0, retries=2))  # job + re-registration
    sim.pump()
    rid = sim.request(c, SVC, b"job")
    sim.advance(1.0)
    assert w.busy
    sim.restart_broker()
    # the client's connection dropped: it resent at once, to the new broker,
    # which queues it until a worker registers there
    sim.run_until(lambda: c.core.outstanding is None, limit=30.0)
    assert final_bodies(c, rid) == [(b"job",)]
    # the worker finished the old job (its FINAL went nowhere useful), then
    # learnt of the restart and re-registered
    assert [e.reason for e in w.lost] == ["connection lost"]
    assert [r.body for _, r in w.handled] == [(b"job",), (b"job",)]
    assert c.resets == 1  # the connection loss; no timeout was needed
    sim.check()


def test_slow_worker_exceeds_processing_timeout_and_another_worker_answers() -> None:
    sim = Sim(BrokerConfig(heartbeat_interval=HB, heartbeat_liveness=3, processing_timeout=2.0))
    slow = sim.add_worker(SVC, takes(10.0), config=WCFG)
    c = sim.add_client(ClientConfig(timeout=30.0, retries=0))
    sim.pump()
    rid = sim.request(c, SVC, b"job")
    sim.pump()
    assert slow.busy
    fast = sim.add_worker(SVC, config=WCFG)
    sim.advance(2.5)
    assert final_bodies(c, rid) == [(b"job",)]
    assert [r.body for _, r in fast.handled] == [(b"job",)]
    sim.advance(10.0)
    # the slow worker's late FINAL never reaches the client
    assert c.outcomes[rid] == [FinalReply(rid, SVC, (b"job",))]
    assert not any(isinstance(e, ProtocolError) for e in c.events)
    # it read the broker's DISCONNECT after its job and re-registered
    assert [e.reason for e in slow.lost] == ["DISCONNECT from broker"]
    assert slow.sockets == 2 and not slow.busy
    sim.check()


def test_worker_partition_heals_and_the_queued_request_is_served() -> None:
    sim = Sim(BCFG)
    w = sim.add_worker(SVC, config=WCFG)
    c = sim.add_client(ClientConfig(timeout=2.0, retries=10))
    sim.advance(2.0)
    sim.partition(w)
    sim.advance(1.0)
    rid = sim.request(c, SVC, b"while partitioned")
    sim.advance(9.0)
    assert c.outcomes[rid] == []
    assert w.lost and all(e.reason == "heartbeat expired" for e in w.lost)
    delays = [e.reconnect_delay for e in w.lost]
    assert delays == sorted(delays) and len(set(delays)) > 1  # backing off
    sim.heal(w)
    sim.run_until(lambda: c.core.outstanding is None, limit=15.0)
    assert final_bodies(c, rid) == [(b"while partitioned",)]
    sim.check()


def test_client_partition_heals_and_a_retry_succeeds() -> None:
    sim = Sim(BCFG)
    sim.add_worker(SVC, config=WCFG)
    c = sim.add_client(ClientConfig(timeout=1.0, retries=5))
    sim.pump()
    sim.partition(c)
    rid = sim.request(c, SVC, b"x")
    sim.advance(2.5)
    assert c.outcomes[rid] == []
    sim.heal(c)
    sim.advance(1.0)
    assert final_bodies(c, rid) == [(b"x",)]
    assert c.resets == 3


def test_partitioned_busy_worker_is_dropped_by_the_transport_timeout() -> None:
    sim = Sim(BCFG, transport_timeout=3.0)
    w1 = sim.add_worker(SVC, takes(2.0), config=WCFG)
    w2 = sim.add_worker(SVC, takes(2.0), config=WCFG)
    c = sim.add_client(ClientConfig(timeout=60.0, retries=0))
    sim.pump()
    rid = sim.request(c, SVC, b"job")
    sim.pump()
    busy = the_busy_one(w1, w2)
    sim.partition(busy)
    sim.advance(2.9)
    assert c.outcomes[rid] == []  # its FINAL was lost in the partition
    sim.advance(0.1)  # ZMTP heartbeats give up: both ends see the connection drop
    assert busy.lost == [BrokerLost("connection lost", 0.5)]
    assert any(isinstance(e, RequestRequeued) for e in sim.broker_events)
    sim.advance(2.0)
    assert final_bodies(c, rid) == [(b"job",)]
    sim.check()


# ------------------------------------------------------------ failures the client sees


def test_request_to_a_service_with_no_workers_fails_after_retries() -> None:
    sim = Sim(BCFG)
    c = sim.add_client(ClientConfig(timeout=1.0, retries=2))
    rid = sim.request(c, b"nobody", b"x")
    sim.advance(2.9)
    assert c.outcomes[rid] == []
    sim.advance(0.1)
    # the client asks the broker (mmi.service) and learns why
    assert c.outcomes[rid] == [RequestFailed(
        rid, b"nobody", "no reply after 3 attempts: no worker registered for 'nobody'",
        FailureCause.NO_WORKER)]
    assert c.resets == 3


def test_request_while_the_broker_is_down_fails_as_unreachable_without_asking() -> None:
    sim = Sim(BCFG)
    c = sim.add_client(ClientConfig(timeout=1.0, retries=1))
    sim.restart_broker(down_for=10.0)
    rid = sim.request(c, SVC, b"x")
    sim.advance(2.0)
    assert c.outcomes[rid] == [RequestFailed(
        rid, SVC, "no reply after 2 attempts: no broker reachable", FailureCause.UNREACHABLE)]
    assert c.core.outstanding is None


@pytest.mark.parametrize("version", list(Dialect))
def test_a_worker_that_never_answers_fails_as_no_reply_after_the_broker_says_200(
        version: Dialect) -> None:
    sim = Sim(BCFG)
    sim.add_worker(SVC, lambda r: Job(hang=True), config=WCFG, concurrent=True)
    c = sim.add_client(ClientConfig(timeout=1.0, retries=1, diagnose_timeout=0.5),
                       version=version)
    sim.pump()
    rid = sim.request(c, SVC, b"x")
    sim.advance(2.0)  # the broker answers mmi.service at once: the worker is registered
    assert c.outcomes[rid] == [RequestFailed(rid, SVC, "no reply after 2 attempts",
                                             FailureCause.NO_REPLY)]
    assert [e for e in c.events if isinstance(e, ProtocolError)] == []


def test_a_link_cut_after_the_request_leaves_the_diagnosis_unanswered_no_reply() -> None:
    sim = Sim(BCFG)
    c = sim.add_client(ClientConfig(timeout=1.0, retries=0))
    rid = sim.request(c, b"nobody", b"x")
    sim.pump()
    sim.partition(c)  # the request went out; from now on nothing gets through
    sim.advance(1.0)  # the attempt fails; the mmi.service question is lost
    assert c.outcomes[rid] == [] and c.core.outstanding == rid
    sim.advance(1.0)
    assert c.outcomes[rid] == [RequestFailed(rid, b"nobody", "no reply after 1 attempt",
                                             FailureCause.NO_REPLY)]
    assert c.resets == 2


def test_a_refused_reply_ends_the_conversation_and_another_worker_answers() -> None:
    sim = Sim(BCFG)
    w1 = sim.add_worker(SVC, takes(1.0), config=WCFG)
    w2 = sim.add_worker(SVC, takes(1.0), config=WCFG)
    c = sim.add_client(ClientConfig(timeout=30.0, retries=0))
    sim.pump()
    rid = sim.request(c, SVC, b"job")
    sim.pump()
    busy = the_busy_one(w1, w2)
    sim.refuse_sends(busy)  # its queue is full when the FINAL is sent
    sim.advance(1.0)
    assert [e.reason for e in busy.lost] == ["send failed: the queue to the broker is full"]
    assert any(isinstance(e, RequestRequeued) for e in sim.broker_events)
    sim.advance(1.5)
    assert final_bodies(c, rid) == [(b"job",)]
    assert len(w1.finished) + len(w2.finished) == 2  # one FINAL never left the busy worker
    sim.check()


def test_a_refused_request_is_sent_again_on_a_new_socket_at_once() -> None:
    sim = Sim(BCFG)
    sim.add_worker(SVC, config=WCFG)
    c = sim.add_client(ClientConfig(timeout=30.0, retries=1))
    sim.pump()
    sim.refuse_sends(c)
    rid = sim.request(c, SVC, b"x")
    sim.pump()  # no time passes
    assert final_bodies(c, rid) == [(b"x",)]
    assert c.resets == 1
    sim.check()


def test_failing_handler_abandons_and_another_worker_answers() -> None:
    failed: list[RequestReceived] = []

    def fail_once(r: RequestReceived) -> Job:
        if not failed:
            failed.append(r)
            return Job(fail=True)
        return Job()

    sim = Sim(BCFG)
    w1 = sim.add_worker(SVC, fail_once, config=WCFG)
    w2 = sim.add_worker(SVC, fail_once, config=WCFG)
    c = sim.add_client(ClientConfig(timeout=30.0, retries=0))
    sim.pump()
    rid = sim.request(c, SVC, b"job")
    sim.advance(0.1)
    assert final_bodies(c, rid) == [(b"job",)]
    assert len(failed) == 1
    assert len(w1.handled) + len(w2.handled) == 2
    assert w1.lost == [] and w2.lost == []  # abandon starts afresh without a BrokerLost
    sim.check()


def test_late_reply_to_a_failed_request_never_answers_the_next_one() -> None:
    sim = Sim(BCFG)
    sim.add_worker(SVC, takes(3.0), config=WCFG)
    c = sim.add_client(ClientConfig(timeout=1.0, retries=0))
    sim.pump()
    first = sim.request(c, SVC, b"first")
    sim.advance(1.0)
    assert c.outcomes[first] == [RequestFailed(first, SVC, "no reply after 1 attempt",
                                               FailureCause.NO_REPLY)]
    second = sim.request(c, SVC, b"second", timeout=10.0)
    sim.advance(2.5)  # the worker answers "first" meanwhile, to the socket the client dropped
    sim.advance(3.0)
    assert c.outcomes[second] == [FinalReply(second, SVC, (b"second",))]
    sim.check()

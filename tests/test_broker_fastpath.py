"""The broker's fast path for MDP/0.2 data messages behaves exactly like decode().

``Broker.receive`` parses well-formed MDP/0.2 client REQUESTs and worker
PARTIAL/FINALs inline for speed, and sends everything else (and any frame
that is not ``bytes``) through ``decode()``. Feeding the same messages as
``bytes`` (fast path) and as ``bytearray`` (always ``decode()``) to two
brokers must give identical output and events, whatever the frames are.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from mdp_core import Broker, Dialect, Ready, encode

PEERS = [b"client", b"w1", b"w2"]

TEMPLATES = [
    [b"MDPC02", b"\x01", b"echo", b"body"],  # REQUEST
    [b"MDPW02", b"\x03", b"client", b"", b"part"],  # PARTIAL
    [b"MDPW02", b"\x04", b"client", b"", b"last"],  # FINAL
]
ODD = [b"", b"MDPC02", b"MDPW02", b"\x01", b"\x02", b"\x03", b"\x04", b"echo", b"client", b"x"]


@st.composite
def near_valid(draw: st.DrawFn) -> list[bytes]:
    """A data-path message with a few frames replaced, dropped or added."""
    frames = list(draw(st.sampled_from(TEMPLATES)))
    for _ in range(draw(st.integers(0, 2))):
        i = draw(st.integers(0, len(frames)))
        how = draw(st.sampled_from(["replace", "drop", "insert"]))
        if how == "insert" or i == len(frames):
            frames.insert(i, draw(st.sampled_from(ODD)))
        elif how == "drop":
            del frames[i]
        else:
            frames[i] = draw(st.sampled_from(ODD))
    return frames


message = st.tuples(
    st.sampled_from(PEERS), near_valid() | st.lists(st.sampled_from(ODD), max_size=6)
)


def _fresh() -> Broker:
    broker = Broker()
    for w in (b"w1", b"w2"):
        broker.receive(w, encode(Ready(b"echo"), Dialect.MDP02), 0.0)
    return broker


@settings(max_examples=300, deadline=None)
@given(st.lists(message, max_size=12))
def test_fast_path_and_decode_path_agree(messages: list[tuple[bytes, list[bytes]]]) -> None:
    fast, slow = _fresh(), _fresh()
    for i, (peer, frames) in enumerate(messages):
        now = float(i)
        fast.receive(peer, frames, now)
        slow.receive(peer, [bytearray(f) for f in frames], now)
        assert fast.outgoing() == slow.outgoing()
        assert fast.events() == slow.events()


def test_well_formed_data_messages_take_the_fast_path() -> None:
    """Guard the premise of the test above: bytes frames do skip decode()."""
    import mdp_core._broker as broker_module

    calls = []
    real = broker_module.decode

    def spy(*args: object, **kwargs: object) -> object:
        calls.append(args)
        return real(*args, **kwargs)  # type: ignore[arg-type]

    broker = _fresh()
    broker_module.decode = spy  # type: ignore[assignment]
    try:
        broker.receive(b"client", [b"MDPC02", b"\x01", b"echo", b"hi"], 1.0)
        ((worker, _),) = broker.outgoing()
        broker.receive(worker, [b"MDPW02", b"\x04", b"client", b"", b"ho"], 2.0)
        assert broker.outgoing() == [(b"client", [b"MDPC02", b"\x03", b"echo", b"ho"])]
        assert calls == []
        broker.receive(b"client", [b"MDPC02", b"\x01", b"echo", bytearray(b"hi")], 3.0)
        assert len(calls) == 1
    finally:
        broker_module.decode = real


def _single_mutations(frames: list[bytes]) -> list[list[bytes]]:
    out = [list(frames)]
    for i in range(len(frames) + 1):
        for odd in ODD:
            out.append([*frames[:i], odd, *frames[i:]])
    for i in range(len(frames)):
        out.append(frames[:i] + frames[i + 1:])
        for odd in ODD:
            out.append([*frames[:i], odd, *frames[i + 1:]])
    return out


def test_every_single_frame_mutation_of_a_data_message_agrees() -> None:
    """Exhaustive where the random test above is a sample: each template with
    one frame replaced, dropped or inserted, from a worker or a client."""
    cases = 0
    for template in TEMPLATES:
        for frames in _single_mutations(template):
            for peer in PEERS:
                fast, slow = _fresh(), _fresh()
                # w1 holds the client's request, so replies from it are expected.
                for b in (fast, slow):
                    b.receive(b"client", [b"MDPC02", b"\x01", b"echo", b"job"], 0.5)
                    b.outgoing()
                    b.events()
                fast.receive(peer, frames, 1.0)
                slow.receive(peer, [bytearray(f) for f in frames], 1.0)
                assert fast.outgoing() == slow.outgoing(), (peer, frames)
                assert fast.events() == slow.events(), (peer, frames)
                cases += 1
    assert cases == len(PEERS) * sum(len(_single_mutations(t)) for t in TEMPLATES)

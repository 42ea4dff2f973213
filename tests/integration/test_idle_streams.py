"""Idle and slow clients do not lock others out: an upload takes a place
among max_streams only with its first message, and a client that sends
nothing for idle_timeout is ended with DEADLINE_EXCEEDED."""
import threading

import grpc
import pytest

from embedflow.v1 import embedding_pb2
from helpers import SERVICE, chunk, row, send

DIM = 8


class IdleClients:
    """Calls that open and then send nothing until released, spread over
    separate connections from one address."""

    def __init__(self, target):
        self.target = target
        self.release = threading.Event()
        self.channels = []
        self.calls = []

    def open(self, count, per_connection=16, first=()):
        for i in range(0, count, per_connection):
            channel = grpc.insecure_channel(
                self.target, options=[("grpc.use_local_subchannel_pool", 1)])
            self.channels.append(channel)
            call = channel.stream_unary(
                SERVICE,
                request_serializer=embedding_pb2.EmbeddingChunk.SerializeToString,
                response_deserializer=embedding_pb2.UploadResult.FromString)
            for _ in range(min(per_connection, count - i)):
                self.calls.append(call.future(self._held(first), timeout=120))
        return self.calls[-count:]

    def _held(self, first):
        yield from first
        self.release.wait()

    def close(self):
        self.release.set()
        for c in self.calls:
            c.cancel()
        for ch in self.channels:
            ch.close()


@pytest.fixture
def idle_clients():
    made = []

    def make(target):
        made.append(IdleClients(target))
        return made[-1]

    yield make
    for m in made:
        m.close()


def test_idle_streams_do_not_take_upload_places(embedflow, db, schema,
                                                idle_clients):
    # 1 MB messages: max_inflight_bytes (256 MB) lets 256 calls read at
    # once, so 200 idle ones cannot take every read either
    ef = embedflow(dim=DIM, extra=["--actors.grpc-receiver.max_streams", "4",
                                   "--actors.grpc-receiver.max_message_bytes",
                                   "1M", "--verbose"])
    idle = idle_clients(ef.target)
    idle.open(200)
    # every idle call has reached the server before the real upload
    waiting = r"call \d+ from .*: waiting for its first message"
    ef.wait_for_line(waiting, nth=200, timeout=60)
    for _ in range(2):
        result = send(ef.target, [chunk([row("real", 0, DIM)], 1)])
        assert result.written == 1
    assert db.count(schema, "chunk") == 1
    # the idle ones are still open: nothing ended them
    assert not any(c.done() for c in idle.calls)


def test_silent_client_is_ended_after_idle_timeout(embedflow, db, schema,
                                                   idle_clients):
    ef = embedflow(dim=DIM,
                   extra=["--actors.grpc-receiver.idle_timeout", "1s"])
    idle = idle_clients(ef.target)
    # one sends ten rows and then nothing; one never sends anything
    sent_some, = idle.open(1, first=[chunk(
        [row(f"doc-{i}", 0, DIM) for i in range(10)], 1)])
    sent_none, = idle.open(1)
    for call in (sent_some, sent_none):
        err = call.exception(timeout=60)
        assert err is not None, "the idle upload was not ended"
        assert err.code() == grpc.StatusCode.DEADLINE_EXCEEDED, \
            f"{err.code()}: {err.details()}"
        assert "idle_timeout" in err.details()
    assert "10 rows were received" in sent_some.exception().details()
    # the rows it did send are still written (it got no UploadResult, so a
    # re-send is what it will do, and that is idempotent)
    ef.wait_for_line(r"no message for 1000 ms")
    assert send(ef.target, [chunk([row("later", 0, DIM)], 1)]).written == 1
    assert db.count(schema, "chunk") == 11


def test_idle_calls_give_reads_up_when_memory_is_short(embedflow, db, schema,
                                                      idle_clients):
    """With room for only two reads (2 x 64 MB of a 128 MB budget), idle
    calls holding them are ended after first_message_timeout while a real
    upload waits, and the real upload goes through."""
    ef = embedflow(dim=DIM, extra=[
        "--max_inflight_bytes", "128M",
        "--actors.grpc-receiver.max_message_bytes", "64M",
        "--actors.grpc-receiver.first_message_timeout", "500ms",
        "--verbose"])
    idle = idle_clients(ef.target)
    calls = idle.open(10)
    ef.wait_for_line(r"call \d+ from .*: waiting for its first message",
                     nth=10, timeout=60)
    result = send(ef.target, [chunk([row("real", 0, DIM)], 1)])
    assert result.written == 1
    busy = [c.exception(timeout=30) for c in calls if c.done()]
    assert busy, "no idle call gave its read up"
    for err in busy:
        assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "first_message_timeout" in err.details()

"""Bad input gets a clear error, and the server keeps serving."""
import re

import grpc
import pytest

from helpers import chunk, raw_call, row, send, stream

DIM = 8


def test_bad_rows_are_dead_lettered_with_reason(embedflow, db, schema):
    ef = embedflow(dim=DIM)
    nan = row("bad-nan", 0, DIM)
    nan.vector[3] = float("nan")
    inf = row("bad-inf", 0, DIM)
    inf.vector[0] = float("-inf")
    # document_id as stored in dead_letter ('' when missing) -> the row and
    # what its reason must mention.
    bad = {
        "bad-dim": (row("bad-dim", 0, DIM + 3), r"dim"),
        "bad-nan": (nan, r"nan|finite"),
        "bad-inf": (inf, r"inf|finite"),
        "": (row("", 0, DIM), r"document_id|document id"),
        "bad-uuid": (row("bad-uuid", 0, DIM, id="not-a-uuid"),
                     r"uuid|\bid\b"),
    }
    bad_rows = [r for r, _ in bad.values()]
    good = [row(f"good-{i}", i % 3, DIM) for i in range(30)]
    # Bad rows between good ones, in two chunks.
    chunks = [chunk(good[:10] + bad_rows[:3] + good[10:20], 1),
              chunk(bad_rows[3:] + good[20:], 2)]

    result = send(ef.target, chunks)

    assert (result.received, result.written, result.dead_lettered) == \
        (35, 30, 5)
    assert db.count(schema, "chunk") == 30
    assert db.count(schema, "embedding") == 30
    dead = db.rows(
        f'SELECT coalesce(document_id, \'\'), stage, reason_code, reason, '
        f'original IS NOT NULL FROM "{schema}".dead_letter')
    assert len(dead) == 5, dead
    by_doc = {d: (stage, code, reason, has_original)
              for d, stage, code, reason, has_original in dead}
    for doc, (_, pattern) in bad.items():
        assert doc in by_doc, f"no dead letter for {doc!r}: {dead}"
        stage, code, reason, has_original = by_doc[doc]
        assert re.search(pattern, f"{code} {reason}", re.I), \
            f"reason for {doc!r} does not say why: {code}: {reason}"
        assert has_original, f"original row bytes missing for {doc!r}"


@pytest.mark.parametrize("payload", [b"\xff\xff\xff\xff", b"\x0a\x10\x01"],
                         ids=["bad-varint", "truncated"])
def test_undecodable_message_is_invalid_argument(embedflow, db, schema,
                                                 payload):
    ef = embedflow(dim=DIM)
    outcome = raw_call(ef.target, [payload])
    assert isinstance(outcome, grpc.RpcError), outcome
    assert outcome.code() == grpc.StatusCode.INVALID_ARGUMENT, \
        f"{outcome.code()}: {outcome.details()}"
    assert ef.alive()
    result = send(ef.target, stream(100, DIM, 50))
    assert result.written == 100
    assert db.count(schema, "chunk") == 100


def test_oversized_message_is_resource_exhausted(embedflow, db, schema):
    ef = embedflow(dim=DIM, extra=[
        "--actors.grpc-receiver.max_message_bytes", "1M"])
    big = chunk([row("big", 0, DIM, content="x" * (2 * 1024 * 1024))], 1)
    with pytest.raises(grpc.RpcError) as e:
        send(ef.target, [big])
    assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, \
        f"{e.value.code()}: {e.value.details()}"
    assert ef.alive()
    # Just under the limit still goes through.
    fits = chunk([row("fits", 0, DIM, content="y" * 100_000)], 1)
    assert send(ef.target, [fits]).written == 1
    assert db.count(schema, "chunk") == 1


def test_unknown_method_is_unimplemented(embedflow):
    ef = embedflow(dim=DIM)
    with grpc.insecure_channel(ef.target) as channel:
        call = channel.unary_unary("/embedflow.v1.EmbeddingService/NoSuch",
                                   request_serializer=lambda b: b,
                                   response_deserializer=lambda b: b)
        with pytest.raises(grpc.RpcError) as e:
            call(b"", timeout=10)
    assert e.value.code() == grpc.StatusCode.UNIMPLEMENTED

"""Hostile input: text is checked to its full length (a NUL byte never
shortens a document id into another document's), and a message's decoded
size is bounded before anything is decoded."""
import grpc

from embedflow.v1 import embedding_pb2
from helpers import chunk, proc_status_kb, raw_call, row, send, wait_until

DIM = 8


def dead_letters(db, schema):
    """{document_id as stored: (reason_code, reason, original bytes)}"""
    return {doc: (code, reason, bytes(original))
            for doc, code, reason, original in db.rows(
                f'SELECT document_id, reason_code, reason, original '
                f'FROM "{schema}".dead_letter')}


def decoded(original):
    return embedding_pb2.Embedding.FromString(original)


def contents(db, schema):
    return dict(db.rows(f'SELECT document_id, content FROM "{schema}".chunk'))


def test_nul_in_document_id_never_merges_documents(embedflow, db, schema):
    ef = embedflow(dim=DIM)
    result = send(ef.target, [chunk([row("d\0A", 0, DIM), row("d\0B", 0, DIM),
                                     row("plain", 0, DIM)], 1)])
    assert (result.received, result.written, result.dead_lettered) == \
        (3, 1, 2)
    assert contents(db, schema) == {"plain": "plain/0"}
    dead = dead_letters(db, schema)
    assert set(dead) == {"d\\x00A", "d\\x00B"}, dead
    for name, raw in (("d\\x00A", "d\0A"), ("d\\x00B", "d\0B")):
        code, reason, original = dead[name]
        assert code == "bad_text"
        assert "document_id has a NUL byte at byte 1" in reason
        # the original bytes survive whole, for inspection and replay
        assert decoded(original).document_id == raw


def test_nul_cannot_overwrite_another_document(embedflow, db, schema):
    ef = embedflow(dim=DIM)
    assert send(ef.target, [chunk([row("victim", 0, DIM,
                                       content="original")], 1)]).written == 1
    result = send(ef.target, [chunk([row("victim\0attacker", 0, DIM,
                                         content="forged")], 1)])
    assert (result.written, result.dead_lettered) == (0, 1)
    assert contents(db, schema) == {"victim": "original"}
    code, _, original = dead_letters(db, schema)["victim\\x00attacker"]
    assert code == "bad_text" and decoded(original).content == "forged"


def test_nul_or_bad_utf8_in_any_text_field(embedflow, db, schema):
    ef = embedflow(dim=DIM)
    in_content = row("in-content", 0, DIM, content="before\0after")
    in_metadata = row("in-metadata", 0, DIM)
    in_metadata.metadata["lang"] = "e\0n"
    in_model = row("in-model", 0, DIM)
    in_model.model = "model\0x"
    good = [row(f"good-{i}", 0, DIM) for i in range(5)]
    items = [good[0], in_content, good[1], in_metadata, good[2], in_model,
             good[3], good[4]]
    # invalid UTF-8 cannot be built with a Python str: patch the bytes
    bad_utf8 = row("in-utf8", 0, DIM, content="@@@@")
    payload = chunk(items, 1).SerializeToString() + \
        chunk([bad_utf8], 2).SerializeToString().replace(b"@@@@", b"\xc3(ab")
    outcome = raw_call(ef.target, [payload])
    assert not isinstance(outcome, grpc.RpcError), outcome
    assert (outcome.received, outcome.written, outcome.dead_lettered) == \
        (9, 5, 4)
    assert sorted(contents(db, schema)) == sorted(r.document_id for r in good)
    dead = dead_letters(db, schema)
    assert {d: dead[d][0] for d in dead} == {
        "in-content": "bad_text", "in-metadata": "bad_text",
        "in-model": "bad_text", "in-utf8": "bad_text"}
    assert "content has a NUL byte at byte 6" in dead["in-content"][1]
    assert "metadata value" in dead["in-metadata"][1]
    assert "model" in dead["in-model"][1]
    assert "content is not valid UTF-8 at byte 0" in dead["in-utf8"][1]
    assert decoded(dead["in-metadata"][2]).metadata["lang"] == "e\0n"
    assert b"\xc3(ab" in dead["in-utf8"][2]


def test_message_of_millions_of_empty_items_is_refused(embedflow, db, schema):
    """8 MB of `0a 00`: 4,000,000 empty items that would decode to about
    half a gigabyte. Refused from its bytes, before decoding."""
    ef = embedflow(dim=DIM)
    before = proc_status_kb(ef.proc.pid, "VmHWM")
    outcome = raw_call(ef.target, [b"\x0a\x00" * 4_000_000], timeout=120)
    assert isinstance(outcome, grpc.RpcError), outcome
    assert outcome.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, \
        f"{outcome.code()}: {outcome.details()}"
    assert "4000000 items" in outcome.details()
    assert "max_decoded_bytes" in outcome.details()
    peak = proc_status_kb(ef.proc.pid, "VmHWM")
    # the 8 MB message is held a few times over (gRPC's buffer, one
    # frame); decoding it would take 500 MB
    assert peak - before < 100 * 1024, f"peak RSS grew {peak - before} kB"
    assert db.count(schema, "dead_letter") == 0
    assert send(ef.target, [chunk([row("after", 0, DIM)], 1)]).written == 1


def test_bad_rows_cannot_be_amplified_into_dead_letters(embedflow, db, schema):
    """1 MB of 500,000 empty items (each lacks a document_id): the upload
    is ended once more than max_bad_rows (1,000) of its rows were bad,
    instead of storing 500,000 dead letters. (Its decoded size, 52 MB,
    passes max_decoded_bytes only with 64 MB messages allowed.)"""
    ef = embedflow(dim=DIM, extra=[
        "--actors.grpc-receiver.max_message_bytes", "64M"])
    good = chunk([row(f"good-{i}", 0, DIM) for i in range(20)], 1)
    outcome = raw_call(ef.target, [good.SerializeToString(),
                                   b"\x0a\x00" * 500_000], timeout=120)
    assert isinstance(outcome, grpc.RpcError), outcome
    assert outcome.code() == grpc.StatusCode.INVALID_ARGUMENT, \
        f"{outcome.code()}: {outcome.details()}"
    assert "1001 of 1021 rows were bad" in outcome.details()
    assert "missing_document_id 1001" in outcome.details()
    # what came before the limit is settled as usual
    wait_until("the 20 good rows", lambda: db.count(schema, "chunk") == 20)
    counts = dict(db.rows(
        f'SELECT reason_code, count(*) FROM "{schema}".dead_letter '
        f'GROUP BY reason_code'))
    assert counts.get("missing_document_id") == 1001, counts
    # one letter stands for the rows that were not looked at
    assert db.rows(
        f'SELECT covers FROM "{schema}".dead_letter '
        f"WHERE reason_code = 'too_many_bad_rows'") == [(500_000 - 1001,)]
    # a later upload from the same client is judged on its own
    assert send(ef.target, [chunk([row("after", 0, DIM)], 1)]).written == 1

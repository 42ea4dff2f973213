#!/usr/bin/env python3
"""An AI server that embedflow pulls from: GetEmbeddings over grpcio.

    python3 ai_server.py --port 50061 --rows 100000 --dim 768
    embedflow pull --target 127.0.0.1:50061 --source demo --dim 768

It serves a deterministic synthetic data set, so two calls with the same
request stream the same rows. The part to copy is `get_embeddings`: it
honours RequestParams (chunk_size, filter, resume_token) and gives every
chunk an increasing `seq` and an opaque `resume_token` meaning "resume
after this chunk". embedflow stores the token of the last chunk it has
fully committed and sends it back on the next call after a crash, a
restart or a network cut; the server continues right after that chunk.

Every call and its outcome are printed on stdout as one JSON object per
line (the tests read them). The --fault-* options make it misbehave on
purpose, for tests.

Needs the generated stubs on PYTHONPATH (see README.md).
"""
import argparse
import json
import os
import sys
import threading
import time
from concurrent import futures

import grpc

from embedflow.v1 import embedding_pb2

SERVICE = "embedflow.v1.EmbeddingService"
TOKEN_PREFIX = "row:"


def event(**fields):
    """Prints one JSON line about what the server did."""
    print(json.dumps(fields), flush=True)


def make_row(n, dim, bad=False):
    """Row n of the data set: a pure function of n (and dim).

    A `bad` row has a vector one float too long, so embedflow dead-letters
    it (wrong dimension) and writes the rest of its chunk.
    """
    vector = [((n * 7919 + i * 104729) % 2000) / 1000.0 - 1.0
              for i in range(dim + (1 if bad else 0))]
    return embedding_pb2.Embedding(
        document_id=f"doc-{n // 8:07d}",
        chunk_index=n % 8,
        content=f"synthetic row {n}",
        metadata={"row": str(n)},
        vector=vector,
        model="synthetic",
    )


def parse_token(token):
    """The first row to serve after `token` ("" = the beginning)."""
    if not token:
        return 0
    if not token.startswith(TOKEN_PREFIX):
        raise ValueError(f"resume_token {token!r} was not made by this server")
    return int(token[len(TOKEN_PREFIX):])


def parse_filter(filt):
    """A row predicate from RequestParams.filter.

    Supported: {"shard": "I/N"} serves the rows with n % N == I.
    """
    unknown = set(filt) - {"shard"}
    if unknown:
        raise ValueError(f"unknown filter keys: {sorted(unknown)}")
    if "shard" in filt:
        i, n = (int(x) for x in filt["shard"].split("/"))
        return lambda row: row % n == i
    return lambda row: True


class Server:
    """The data set, the fault switches, and the GetEmbeddings handler."""

    def __init__(self, args):
        self.args = args
        self.calls = 0
        self.lock = threading.Lock()
        self.prebuilt = {}      # (first row, chunk_size) -> chunk bytes
        if args.prebuild:
            # Python builds ~15k rows/s of 768 floats: for a benchmark,
            # serialize the unfiltered chunks once, before serving.
            for row in range(0, args.rows, args.prebuild):
                end = min(row + args.prebuild, args.rows)
                self.prebuilt[(row, args.prebuild)] = self.chunk(
                    row, end, args.prebuild, lambda n: True)

    def chunk(self, row, end, chunk_size, keep):
        """Rows [row, end) as one serialized EmbeddingChunk; its token
        means "resume after row end - 1"."""
        a = self.args
        number = row // chunk_size      # the chunk's place in the data set
        rows = [make_row(n, a.dim, bad=(number == a.fault_bad_rows_at and
                                        n % 5 == 0))
                for n in range(row, end) if keep(n)]
        chunk = embedding_pb2.EmbeddingChunk(
            items=rows, seq=number + 1, resume_token=f"{TOKEN_PREFIX}{end}")
        return chunk.SerializeToString(), len(rows)

    def get_embeddings(self, request, context):
        """Streams the rows after request.resume_token, chunk by chunk.

        Yields serialized EmbeddingChunk bytes (the generic handler sends
        them as they are, which is also how a fault test sends a message
        that is not an EmbeddingChunk at all).
        """
        a = self.args
        with self.lock:
            self.calls += 1
            call = self.calls
        if a.auth_token:
            sent = dict(context.invocation_metadata()).get("authorization")
            if sent != f"Bearer {a.auth_token}":
                event(event="call", call=call, error="unauthenticated")
                context.abort(grpc.StatusCode.UNAUTHENTICATED,
                              "missing or wrong bearer token")
        try:
            start = parse_token(request.resume_token)
            keep = parse_filter(dict(request.filter))
        except ValueError as e:
            event(event="call", call=call, error=str(e))
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
        chunk_size = request.chunk_size or 256
        event(event="call", call=call, source=request.source,
              resume_token=request.resume_token, start_row=start,
              chunk_size=chunk_size, filter=dict(request.filter))
        served = sent = 0
        status = "cancelled"
        try:
            row = start
            while row < a.rows:
                end = min(row + chunk_size, a.rows)
                number = row // chunk_size      # the chunk's place in the set
                if a.fault_die_after and sent == a.fault_die_after:
                    event(event="dying", call=call, served_rows=served)
                    os._exit(3)
                if number == a.fault_undecodable_at:
                    # Field 1, length-delimited, claiming more bytes than
                    # follow: no protobuf parser accepts this.
                    data = b"\x0a\xff\xff\xff\x0f" + b"\x00" * 16
                    items = 0
                elif (row, chunk_size) in self.prebuilt and not request.filter:
                    data, items = self.prebuilt[(row, chunk_size)]
                else:
                    data, items = self.chunk(row, end, chunk_size, keep)
                yield data
                served += items
                sent += 1
                row = end
                if a.announce_every and sent % a.announce_every == 0:
                    event(event="progress", call=call, served_rows=served)
                if a.delay_ms:
                    time.sleep(a.delay_ms / 1000.0)
            status = "ok"
        finally:
            event(event="end", call=call, served_rows=served, status=status)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0 picks a free port")
    p.add_argument("--rows", type=int, default=10000)
    p.add_argument("--dim", type=int, default=768)
    p.add_argument("--delay-ms", type=float, default=0,
                   help="pause after each chunk")
    p.add_argument("--announce-every", type=int, default=0,
                   help="print a progress line every N chunks")
    p.add_argument("--tls-cert", help="PEM certificate: serve TLS")
    p.add_argument("--tls-key", help="PEM private key of --tls-cert")
    p.add_argument("--auth-token",
                   help="calls must send 'authorization: Bearer TOKEN'")
    p.add_argument("--prebuild", type=int, default=0, metavar="CHUNK_SIZE",
                   help="serialize the data set in chunks of this size "
                        "before serving (for benchmarks)")
    p.add_argument("--fault-bad-rows-at", type=int, default=-1,
                   help="chunk number whose every 5th row has a wrong dim")
    p.add_argument("--fault-undecodable-at", type=int, default=-1,
                   help="chunk number sent as bytes that do not parse")
    p.add_argument("--fault-die-after", type=int, default=0,
                   help="exit the process after sending N chunks of a call")
    args = p.parse_args()

    impl = Server(args)
    handler = grpc.method_handlers_generic_handler(SERVICE, {
        "GetEmbeddings": grpc.unary_stream_rpc_method_handler(
            impl.get_embeddings,
            request_deserializer=embedding_pb2.RequestParams.FromString,
            response_serializer=lambda data: data),
    })
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8),
                         handlers=[handler])
    address = f"{args.host}:{args.port}"
    if args.tls_cert:
        with open(args.tls_key, "rb") as k, open(args.tls_cert, "rb") as c:
            creds = grpc.ssl_server_credentials([(k.read(), c.read())])
        port = server.add_secure_port(address, creds)
    else:
        port = server.add_insecure_port(address)
    if port == 0:
        sys.exit(f"cannot listen on {args.host}:{args.port}")
    server.start()
    event(event="listening", port=port, rows=args.rows, dim=args.dim)
    try:
        server.wait_for_termination()
    except KeyboardInterrupt:
        server.stop(grace=1)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Stream synthetic embeddings to embedflow and print the UploadResult.

    python3 upload.py --target 127.0.0.1:50051 --rows 10000 --dim 768

Needs the generated stubs on PYTHONPATH (see README.md). The functions
here are small on purpose: copy them into your own sender.
"""
import argparse
import random
import sys

import grpc

from embedflow.v1 import embedding_pb2, embedding_pb2_grpc

SERVICE = "/embedflow.v1.EmbeddingService/UploadEmbeddings"


def synthetic_rows(rows, dim, doc_prefix="doc", chunks_per_doc=10, seed=0,
                   model="demo-model"):
    """Yields `rows` Embedding messages, `chunks_per_doc` per document.

    Vectors are a pure function of (seed, document, chunk), so sending the
    same arguments twice sends identical rows; change `seed` to change
    every vector. `id` is left empty: embedflow mints a UUIDv7.
    """
    for n in range(rows):
        doc, index = f"{doc_prefix}-{n // chunks_per_doc}", n % chunks_per_doc
        rng = random.Random(f"{seed}:{doc}:{index}")
        yield embedding_pb2.Embedding(
            document_id=doc,
            chunk_index=index,
            content=f"{doc} part {index}: synthetic text for row {n}",
            metadata={"lang": "en", "generator": "upload.py"},
            vector=[rng.uniform(-1.0, 1.0) for _ in range(dim)],
            model=model,
        )


def chunked(rows, chunk_rows):
    """Groups Embedding messages into EmbeddingChunks with increasing seq."""
    items, seq = [], 0
    for row in rows:
        items.append(row)
        if len(items) == chunk_rows:
            seq += 1
            yield embedding_pb2.EmbeddingChunk(items=items, seq=seq)
            items = []
    if items:
        yield embedding_pb2.EmbeddingChunk(items=items, seq=seq + 1)


def upload(target, chunks, source=None, timeout=None, channel=None):
    """Streams chunks in one UploadEmbeddings call; returns the UploadResult.

    The result arrives once every row is committed or dead-lettered.
    Raises grpc.RpcError (with .code() and .details()) when the call fails.
    """
    metadata = [("embedflow-source", source)] if source else None
    own = channel is None
    channel = channel or grpc.insecure_channel(target)
    try:
        stub = embedding_pb2_grpc.EmbeddingServiceStub(channel)
        return stub.UploadEmbeddings(chunks, timeout=timeout,
                                     metadata=metadata)
    finally:
        if own:
            channel.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", default="127.0.0.1:50051",
                        help="embedflow's gRPC address (HOST:PORT)")
    parser.add_argument("--rows", type=int, default=10000)
    parser.add_argument("--dim", type=int, default=768,
                        help="vector dimension; must match embedflow --dim")
    parser.add_argument("--chunk-rows", type=int, default=256,
                        help="rows per streamed message")
    parser.add_argument("--source", default=None,
                        help="source name stored with the rows")
    parser.add_argument("--seed", type=int, default=0,
                        help="change it to send new vectors for the same rows")
    args = parser.parse_args()

    rows = synthetic_rows(args.rows, args.dim, seed=args.seed)
    try:
        result = upload(args.target, chunked(rows, args.chunk_rows),
                        source=args.source)
    except grpc.RpcError as e:
        print(f"upload failed: {e.code().name}: {e.details()}", file=sys.stderr)
        return 1
    print(f"received={result.received} written={result.written} "
          f"dead_lettered={result.dead_lettered} job_id={result.job_id}")
    if result.message:
        print(result.message)
    return 0 if result.dead_lettered == 0 else 3


if __name__ == "__main__":
    sys.exit(main())

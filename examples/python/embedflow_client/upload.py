"""Stream embeddings to embedflow and print the UploadResult.

    embedflow-upload --target 127.0.0.1:50051 --rows 10000 --dim 768
    python3 -m embedflow_client.upload ...           (the same)

The result arrives once every row is committed or dead-lettered. When the
call ends with UNAVAILABLE (nothing listens yet, the connection broke,
embedflow restarted) the whole upload is sent again, with backoff, up to
--attempts times: rows are keyed by (document_id, chunk_index), so what
was already stored is not stored twice. Exit status: 0 every row written,
3 some rows dead-lettered, 1 the call failed, 2 bad usage.
"""
import argparse
import os
import random
import sys
import time

import grpc

from embedflow.v1 import embedding_pb2

SERVICE = "/embedflow.v1.EmbeddingService/UploadEmbeddings"

# The one status that means "send it again": the upload did not reach an
# embedflow that answered it (README, "When things fail").
RETRYABLE = (grpc.StatusCode.UNAVAILABLE,)


class UploadFailed(Exception):
    """The upload failed for good: .error is the last grpc.RpcError and
    .attempts the number of calls made."""

    def __init__(self, error, attempts):
        super().__init__(f"{error.code().name}: {error.details()} "
                         f"(after {attempts} attempt"
                         f"{'s' if attempts != 1 else ''})")
        self.error = error
        self.attempts = attempts


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


def channel_for(target, root_certs=None, tls=False, options=None):
    """A channel to embedflow: plaintext, or TLS when `tls` is true or
    `root_certs` (PEM bytes of the roots that sign embedflow's tls_cert;
    None: the system's roots) is given."""
    if tls or root_certs is not None:
        creds = grpc.ssl_channel_credentials(root_certificates=root_certs)
        return grpc.secure_channel(target, creds, options=options)
    return grpc.insecure_channel(target, options=options)


def _serialize(chunk):
    # bytes are an EmbeddingChunk already encoded (embedflow_client.fast)
    if isinstance(chunk, (bytes, bytearray, memoryview)):
        return bytes(chunk)
    return chunk.SerializeToString()


def _metadata(source, token):
    md = []
    if source:
        md.append(("embedflow-source", source))
    if token:
        md.append(("authorization", f"Bearer {token}"))
    return md or None


def upload(target, chunks, source=None, timeout=None, channel=None,
           token=None, root_certs=None, tls=False):
    """Streams chunks (EmbeddingChunk messages or their encoded bytes) in
    one UploadEmbeddings call; returns the UploadResult. No retry.

    Raises grpc.RpcError (with .code() and .details()) when the call fails.
    """
    own = channel is None
    if own:
        channel = channel_for(target, root_certs, tls)
    try:
        call = channel.stream_unary(
            SERVICE, request_serializer=_serialize,
            response_deserializer=embedding_pb2.UploadResult.FromString)
        return call(iter(chunks), timeout=timeout,
                    metadata=_metadata(source, token))
    finally:
        if own:
            channel.close()


def upload_with_retry(target, chunks, source=None, timeout=None, token=None,
                      root_certs=None, tls=False, attempts=5, backoff=0.5,
                      max_backoff=10.0, on_retry=None, sleep=time.sleep):
    """Uploads and re-sends the whole upload when a call ends UNAVAILABLE.

    `chunks` must be re-iterable: a list or tuple, or a function returning
    a fresh iterable each time (a generator would be empty the second
    time, so one is refused with TypeError). At most `attempts` calls are
    made; before call n+1 it waits min(max_backoff, backoff * 2**(n-1))
    seconds, less up to half of that at random so that many clients do not
    come back at once. `on_retry(attempt, error, delay)` is called before
    each wait. Returns the UploadResult; raises UploadFailed on any other
    status, or when the attempts are used up.
    """
    if callable(chunks):
        make = chunks
    elif isinstance(chunks, (list, tuple)):
        def make():
            return chunks
    else:
        raise TypeError("chunks must be a list, a tuple or a function "
                        "returning the chunks: a re-sent upload starts "
                        "from its first chunk")
    if attempts < 1:
        raise ValueError("attempts must be at least 1")
    for attempt in range(1, attempts + 1):
        # A channel of its own each time: a channel that failed to connect
        # answers UNAVAILABLE at once, without connecting, until its own
        # reconnect backoff (1 s, growing to 2 min) has passed, and a
        # shared subchannel would carry that over to the next channel.
        channel = channel_for(target, root_certs, tls,
                              options=[("grpc.use_local_subchannel_pool", 1)])
        try:
            return upload(target, make(), source=source, timeout=timeout,
                          channel=channel, token=token)
        except grpc.RpcError as e:
            if e.code() not in RETRYABLE or attempt == attempts:
                raise UploadFailed(e, attempt) from e
            error = e
            delay = min(max_backoff, backoff * 2 ** (attempt - 1))
            delay *= random.uniform(0.5, 1.0)
        finally:
            channel.close()
        if on_retry:
            on_retry(attempt, error, delay)
        sleep(delay)


def _positive(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _seconds(text):
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be >= 0 seconds, not {text}")
    return value


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="embedflow-upload", description=__doc__.splitlines()[0],
        epilog="Exit status: 0 every row written, 3 some rows dead-lettered, "
               "1 the upload failed, 2 bad usage.")
    parser.add_argument("--target", default="127.0.0.1:50051",
                        help="embedflow's gRPC address (HOST:PORT)")
    parser.add_argument("--rows", type=_positive, default=10000)
    parser.add_argument("--dim", type=_positive, default=768,
                        help="vector dimension; must match embedflow --dim")
    parser.add_argument("--chunk-rows", type=_positive, default=256,
                        help="rows per streamed message")
    parser.add_argument("--source", default=None,
                        help="source name stored with the rows")
    parser.add_argument("--seed", type=int, default=0,
                        help="change it to send new vectors for the same rows")
    parser.add_argument("--doc-prefix", default="doc",
                        help="document ids are PREFIX-N")
    parser.add_argument("--attempts", type=_positive, default=5,
                        help="calls at most, the first included; a call "
                             "ending UNAVAILABLE is re-sent whole")
    parser.add_argument("--backoff", type=_seconds, default=0.5,
                        help="seconds before the first re-send, doubled "
                             "after each (at most --max-backoff)")
    parser.add_argument("--max-backoff", type=_seconds, default=10.0)
    parser.add_argument("--timeout", type=_seconds, default=None,
                        help="seconds one call may take (default: no limit)")
    parser.add_argument("--tls", action="store_true",
                        help="TLS with the system's root certificates")
    parser.add_argument("--root-certs", metavar="PEM",
                        help="TLS, trusting the certificates in this file "
                             "(e.g. embedflow's tls_cert when self-signed)")
    parser.add_argument("--token-file", metavar="FILE",
                        help="send 'authorization: Bearer TOKEN' with the "
                             "token in FILE (embedflow's auth_token); the "
                             "environment variable EMBEDFLOW_TOKEN does the "
                             "same")
    args = parser.parse_args(argv)

    root_certs = None
    if args.root_certs:
        try:
            with open(args.root_certs, "rb") as f:
                root_certs = f.read()
        except OSError as e:
            parser.error(f"--root-certs: {e.strerror}: {args.root_certs}")
    token = os.environ.get("EMBEDFLOW_TOKEN") or None
    if args.token_file:
        try:
            with open(args.token_file, encoding="utf-8") as f:
                token = f.read().strip()
        except OSError as e:
            parser.error(f"--token-file: {e.strerror}: {args.token_file}")
        if not token:
            parser.error(f"--token-file: {args.token_file} is empty")

    def chunks():
        rows = synthetic_rows(args.rows, args.dim, doc_prefix=args.doc_prefix,
                              seed=args.seed)
        return chunked(rows, args.chunk_rows)

    def report(attempt, error, delay):
        print(f"attempt {attempt} failed: {error.code().name}: "
              f"{error.details()}; sending again in {delay:.2f} s",
              file=sys.stderr, flush=True)

    try:
        result = upload_with_retry(
            args.target, chunks, source=args.source, timeout=args.timeout,
            token=token, root_certs=root_certs, tls=args.tls,
            attempts=args.attempts, backoff=args.backoff,
            max_backoff=args.max_backoff, on_retry=report)
    except UploadFailed as e:
        print(f"upload failed: {e}", file=sys.stderr)
        return 1
    print(f"received={result.received} written={result.written} "
          f"dead_lettered={result.dead_lettered} job_id={result.job_id}")
    if result.message:
        print(result.message)
    return 0 if result.dead_lettered == 0 else 3


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""A CacheService for the API side: embedflow calls
embedflow.v1.CacheService/Invalidate with the ids of documents whose rows
changed, after they are committed. A real API server drops those
documents from its cache; this one records what it was told.

It is also the test double of embedflow's integration tests, so it can be
told to fail or to be slow:

    cache_server.py --listen 127.0.0.1:0 --record calls.jsonl
    cache_server.py --listen 127.0.0.1:50052 --fail UNAVAILABLE
    cache_server.py --listen 127.0.0.1:50052 --delay 2.5

It prints "listening on HOST:PORT" once it serves, and one JSON line per
call ({"source": ..., "document_ids": [...]}) to stdout and, with
--record, appended to that file (flushed per call).

Delivery is at-least-once: the same id may arrive twice (after a retry or
a restart of embedflow), so invalidating must be idempotent — dropping a
cache entry twice is harmless.
"""
import argparse
import json
import signal
import sys
import threading
import time
from concurrent import futures

import grpc

from embedflow.v1 import cache_pb2, cache_pb2_grpc


class Cache(cache_pb2_grpc.CacheServiceServicer):
    def __init__(self, record=None, fail=None, delay=0.0):
        self.record = record
        self.fail = fail
        self.delay = delay
        self.lock = threading.Lock()

    def Invalidate(self, request, context):
        if self.delay:
            time.sleep(self.delay)
        if self.fail:
            context.abort(getattr(grpc.StatusCode, self.fail),
                          "told to fail")
        ids = list(request.document_ids)
        # Here a real API server would evict these documents.
        line = json.dumps({"source": request.source, "document_ids": ids})
        with self.lock:
            print(line, flush=True)
            if self.record:
                with open(self.record, "a") as f:
                    f.write(line + "\n")
        return cache_pb2.InvalidateResponse(invalidated=len(ids))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--listen", default="127.0.0.1:50052",
                   help="HOST:PORT (port 0 = any free port)")
    p.add_argument("--record", help="append one JSON line per call here")
    p.add_argument("--fail", metavar="CODE",
                   help="answer every call with this status, e.g. UNAVAILABLE")
    p.add_argument("--delay", type=float, default=0.0,
                   help="seconds to wait before answering")
    args = p.parse_args()

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    cache_pb2_grpc.add_CacheServiceServicer_to_server(
        Cache(args.record, args.fail, args.delay), server)
    port = server.add_insecure_port(args.listen)
    if port == 0:
        sys.exit(f"cannot listen on {args.listen}")
    server.start()
    host = args.listen.rsplit(":", 1)[0]
    print(f"listening on {host}:{port}", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    server.stop(1).wait()


if __name__ == "__main__":
    main()

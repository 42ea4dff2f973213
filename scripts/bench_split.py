#!/usr/bin/python3
"""bench_split.py — throughput of embedflow split over two hosts against
the same pipeline in one process, on the same rows, in one sitting.

Hosts are network namespaces made here (root only): "solo" runs the whole
pipeline in one process; "ingest" runs the gRPC receiver and the
splitter, "writer" the writers and the DLQ, joined by tcp links. Both
write into one throwaway PostgreSQL (its unix socket), a fresh schema
every run. The load generator (`embedflow bench --target`) uploads from
outside the namespaces; a run ends when every row is acknowledged as
committed. Prints each run and the medians; the ratio is split / solo.

usage: scripts/bench_split.py [--rows N] [--dim N] [--runs N] [--writers N]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
import netns  # noqa: E402

BIN = os.path.join(ROOT, "build", "embedflow")


def config(path, dim, writers, schema, database, run, links):
    lines = [f"dim: {dim}", f"schema: {schema}", f'database: "{database}"',
             "actors:", '  grpc-receiver: { listen: "0.0.0.0:50051" }',
             f"  db-writer: {{ instances: {writers} }}"]
    if run:
        lines.append(f"run: [{', '.join(run)}]")
    if links:
        lines.append("links:")
        for name, ep in links.items():
            port = ep.rsplit(":", 1)[1]
            lines.append(f'  {name}: {{ endpoint: "{ep}", '
                         f'bind: "tcp://*:{port}", insecure: true }}')
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


def start(net, host, cfg):
    proc = subprocess.Popen(host.command([BIN, "run", "--config", cfg]),
                            stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    net.processes.append(proc)
    for line in proc.stderr:
        if "embedflow: ready" in line:
            return proc
    raise RuntimeError(f"embedflow did not start in {host.name}")


def stop(proc):
    proc.terminate()
    proc.wait(120)


def upload(target, args):
    out = subprocess.run([BIN, "bench", "--target", target, "--rows",
                          str(args.rows), "--dim", str(args.dim)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=100000)
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--writers", type=int, default=2)
    args = ap.parse_args()
    reason = netns.skip_reason()
    if reason:
        sys.exit(f"bench_split: {reason}")
    tmp = tempfile.mkdtemp(prefix="ef-bench-split-")
    pgdir = os.path.join(tmp, "pg")
    subprocess.run(["bash", os.path.join(ROOT, "tests", "pg.sh"), "start",
                    pgdir], check=True, stdout=subprocess.DEVNULL)
    database = f"host={pgdir}/sock port=5432 user=postgres dbname=postgres"
    figures = {"solo": [], "split": []}
    try:
        with netns.Network() as net:
            solo = net.host("solo", 1)
            ingest = net.host("ingest", 2)
            writer = net.host("writer", 20)
            for r in range(args.runs):
                schema = f"bench_split_{os.getpid()}_{r}"
                # one process
                cfg = config(os.path.join(tmp, "solo.yaml"), args.dim,
                             args.writers, schema + "_solo", database, None,
                             None)
                p = start(net, solo, cfg)
                res = upload(f"{solo.addr}:50051", args)
                stop(p)
                figures["solo"].append(res["rows_s"])
                # two hosts
                links = {"batches": f"tcp://{writer.addr}:7100",
                         "dead": f"tcp://{writer.addr}:7090",
                         "acks": f"tcp://{ingest.addr}:7080",
                         "pull-acks": f"tcp://{ingest.addr}:7081"}
                wcfg = config(os.path.join(tmp, "writer.yaml"), args.dim,
                              args.writers, schema + "_split", database,
                              ["db-writer", "dlq", "cache-invalidator"], links)
                icfg = config(os.path.join(tmp, "ingest.yaml"), args.dim,
                              args.writers, schema + "_split", database,
                              ["grpc-receiver", "scheduler", "grpc-puller",
                               "splitter"], links)
                w = start(net, writer, wcfg)
                i = start(net, ingest, icfg)
                res = upload(f"{ingest.addr}:50051", args)
                stop(i)
                stop(w)
                figures["split"].append(res["rows_s"])
                print(f"run {r + 1}: one process {figures['solo'][-1]:,.0f} "
                      f"rows/s, split {figures['split'][-1]:,.0f} rows/s",
                      flush=True)
    finally:
        subprocess.run(["bash", os.path.join(ROOT, "tests", "pg.sh"), "stop",
                        pgdir], stdout=subprocess.DEVNULL)
    solo = statistics.median(figures["solo"])
    split = statistics.median(figures["split"])
    print(f"median of {args.runs}: one process {solo:,.0f} rows/s, "
          f"split over two hosts {split:,.0f} rows/s, "
          f"split / one process = {split / solo:.2f}")


if __name__ == "__main__":
    main()

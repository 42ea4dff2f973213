"""Authenticated, bounded tcp links on one machine: `embedflow keygen`,
the rules that refuse a tcp link off loopback without CURVE keys, the
`insecure` escape, bad key files, and the largest message a link
accepts (a 1 GiB frame announced to a writer's port)."""
import os
import re
import socket
import stat
import struct
import subprocess

import pytest

from conftest import DATABASE, EMBEDFLOW_BIN, Embedflow, clean_env
from helpers import send, stream


def run_cli(*args, timeout=60):
    p = subprocess.run([EMBEDFLOW_BIN, *args], stdin=subprocess.DEVNULL,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       env=clean_env(), timeout=timeout)
    return p.returncode, p.stdout.decode("utf-8", "replace")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def public_key(path):
    return re.search(r'public-key = "(.{40})"', path.read_text()).group(1)


# --- keygen -------------------------------------------------------------

def test_keygen_writes_a_pair_with_a_private_secret(tmp_path):
    path = tmp_path / "host.key"
    rc, out = run_cli("keygen", str(path))
    assert rc == 0, out
    secret = tmp_path / "host.key_secret"
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.stat().st_mode) & 0o077 != 0o077
    key = public_key(path)
    assert key == public_key(secret) and key in out
    assert "secret-key" in secret.read_text()
    assert "secret-key" not in path.read_text()


def test_keygen_refuses_to_overwrite_without_force(tmp_path):
    path = tmp_path / "host.key"
    assert run_cli("keygen", str(path))[0] == 0
    before = (path.read_text(), (tmp_path / "host.key_secret").read_text())
    rc, out = run_cli("keygen", str(path))
    assert rc != 0 and "--force" in out, out
    assert before == (path.read_text(),
                      (tmp_path / "host.key_secret").read_text())
    os.chmod(tmp_path / "host.key_secret", 0o644)
    rc, out = run_cli("keygen", "--force", str(path))
    assert rc == 0, out
    assert public_key(path) != public_key_of(before[0])
    assert stat.S_IMODE((tmp_path / "host.key_secret").stat().st_mode) == 0o600


def public_key_of(text):
    return re.search(r'public-key = "(.{40})"', text).group(1)


def test_keygen_usage():
    rc, out = run_cli("keygen", "--help")
    assert rc == 0 and "PATH_secret" in out and "--force" in out
    assert run_cli("keygen")[0] == 2
    rc, out = run_cli("help")
    assert "keygen" in out


# --- the rules ------------------------------------------------------------

WRITER_HOST = ["--run", "db-writer,dlq,cache-invalidator", "--writers", "1"]


def writer_links(port, **extra):
    """Flags of a writer-only process whose batches link binds
    tcp://127.0.0.1:port; acks go to a loopback port nobody binds."""
    flags = ["--links.batches.endpoint", f"tcp://127.0.0.1:{port}",
             "--links.acks.endpoint", f"tcp://127.0.0.1:{free_port()}",
             "--links.pull-acks.endpoint", f"tcp://127.0.0.1:{free_port()}",
             "--links.dead.endpoint", f"tcp://127.0.0.1:{free_port()}"]
    for k, v in extra.items():
        flags += [f"--links.batches.{k}", v]
    return flags


@pytest.mark.parametrize("extra,words", [
    ({"bind": "tcp://*:7100"}, ["links.batches", "tcp://*:7100", "insecure"]),
    ({"bind": "tcp://10.99.1.1:7100"}, ["links.batches", "not loopback"]),
], ids=["any-interface", "address"])
def test_bind_off_loopback_without_keys_exits_2(extra, words):
    rc, out = run_cli("run", "--database", DATABASE, *WRITER_HOST,
                      *writer_links(7100, **extra))
    assert rc == 2, out
    for w in words:
        assert w in out, out


def test_connect_off_loopback_without_keys_exits_2():
    rc, out = run_cli("run", "--database", DATABASE, "--run",
                      "grpc-receiver,splitter,scheduler,grpc-puller",
                      "--links.batches.endpoint", "tcp://192.0.2.7:7100",
                      "--links.dead.endpoint", "tcp://192.0.2.7:7090")
    assert rc == 2, out
    assert "links.batches" in out and "server_key" in out, out


def test_keys_that_need_each_other_exit_2(tmp_path):
    rc, out = run_cli("keygen", str(tmp_path / "k.key"))
    assert rc == 0, out
    # a server key without a key pair of our own
    rc, out = run_cli("run", "--database", DATABASE, "--run",
                      "grpc-receiver,splitter,scheduler,grpc-puller",
                      "--links.batches.endpoint", "tcp://192.0.2.7:7100",
                      "--links.batches.server_key", str(tmp_path / "k.key"),
                      "--links.dead.endpoint", "tcp://127.0.0.1:7090")
    assert rc == 2 and "curve.key" in out, out
    # binding with a key pair but no allow-list
    rc, out = run_cli("run", "--database", DATABASE, *WRITER_HOST,
                      "--curve.key", str(tmp_path / "k.key_secret"),
                      *writer_links(free_port()))
    assert rc == 2 and "curve.clients" in out, out


def test_bad_key_files_exit_2(tmp_path):
    assert run_cli("keygen", str(tmp_path / "k.key"))[0] == 0
    clients = tmp_path / "clients"
    clients.mkdir()
    (clients / "peer.key").write_text((tmp_path / "k.key").read_text())
    junk = tmp_path / "junk"
    junk.write_text("this is not a key\n")
    empty = tmp_path / "empty"
    empty.mkdir()
    good = {"--curve.key": str(tmp_path / "k.key_secret"),
            "--curve.clients": str(clients)}
    cases = [
        ({"--curve.key": str(junk)}, ["curve.key", "not a key file"]),
        ({"--curve.key": str(tmp_path / "nope")},
         ["curve.key", "No such file"]),
        ({"--curve.key": str(tmp_path / "k.key")},
         ["curve.key", "only a public key"]),
        ({"--curve.clients": str(empty)}, ["curve.clients", "no public key"]),
        ({"--curve.clients": str(tmp_path / "nodir")}, ["curve.clients"]),
        ({"--links.acks.server_key": str(junk)},
         ["links.acks.server_key", "not a key file"]),
        ({"--links.acks.server_key": "short"},
         ["links.acks.server_key", "short"]),
    ]
    for change, words in cases:
        flags = dict(good, **change)
        args = [a for kv in flags.items() for a in kv]
        rc, out = run_cli("run", "--database", DATABASE, *WRITER_HOST,
                          *writer_links(free_port()), *args)
        assert rc == 2, f"{change}: exit {rc}\n{out}"
        for w in words:
            assert w in out, f"{change}: {out}"
    (clients / "notes.txt").write_text("not a key\n")
    rc, out = run_cli("run", "--database", DATABASE, *WRITER_HOST,
                      *writer_links(free_port()),
                      *[a for kv in good.items() for a in kv])
    assert rc == 2 and "notes.txt" in out, out


def test_graph_does_not_read_key_files():
    rc, out = run_cli("graph", "--curve.key", "/nonexistent/k.key_secret",
                      "--curve.clients", "/nonexistent/clients")
    assert rc == 0, out


def test_insecure_link_starts_and_warns(embedflow):
    port = free_port()
    ef = embedflow(extra=["--links.acks.bind", f"tcp://*:{port}",
                          "--links.acks.endpoint", f"tcp://127.0.0.1:{port}",
                          "--links.acks.insecure", "true"])
    ef.wait_for_line(r"WARN .*links\.acks: insecure: binding tcp://\*:%d"
                     % port)
    ef.wait_for_line(r"WARN .*links\.acks: insecure: connecting to "
                     r"tcp://127\.0\.0\.1:%d" % port)
    result = send(ef.target, stream(500, 16, 100))
    assert (result.received, result.written) == (500, 500)


def test_loopback_tcp_without_keys_is_allowed_quietly(embedflow):
    port = free_port()
    ef = embedflow(extra=["--links.acks.endpoint", f"tcp://127.0.0.1:{port}"])
    result = send(ef.target, stream(300, 16, 100))
    assert (result.received, result.written) == (300, 300)
    assert "insecure" not in ef.log


# --- the largest message ------------------------------------------------

def rss_bytes(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def zmtp_push(port):
    """A raw ZMTP 3.0 PUSH peer (NULL mechanism) connected to port."""
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    greeting = (b"\xff" + b"\0" * 8 + b"\x7f" + b"\x03\x00"
                + b"NULL".ljust(20, b"\0") + b"\0" + b"\0" * 31)
    s.sendall(greeting)
    body = b"\x05READY" + b"\x0bSocket-Type" + struct.pack(">I", 4) + b"PUSH"
    s.sendall(b"\x04" + bytes([len(body)]) + body)
    return s


def test_a_frame_over_the_links_limit_is_refused_without_allocating(
        schema, tmp_path):
    port = free_port()
    ef = Embedflow(["run", "--database", DATABASE, "--schema", schema,
                    "--dim", "16", *WRITER_HOST, *writer_links(port)])
    try:
        ef.wait_for_line(r"embedflow: ready", timeout=60)
        before = rss_bytes(ef.proc.pid)
        s = zmtp_push(port)
        # one message frame announcing 1 GiB; then up to 256 MiB of it
        s.sendall(b"\x02" + struct.pack(">Q", 1 << 30))
        block = b"\0" * (1 << 20)
        sent, refused = 0, False
        try:
            while sent < 256 << 20:
                s.sendall(block)
                sent += len(block)
        except (BrokenPipeError, ConnectionResetError, socket.timeout):
            refused = True
        s.close()
        grown = rss_bytes(ef.proc.pid) - before
        assert refused, f"the writer took {sent >> 20} MiB of the frame"
        assert grown < 32 << 20, f"writer RSS grew by {grown >> 20} MiB"
        assert sent < 64 << 20
        # the writer still serves
        assert ef.alive()
    finally:
        assert ef.stop() == 0, ef.log


def test_max_message_is_a_link_option():
    rc, out = run_cli("run", "--database", DATABASE,
                      "--links.batches.max_message", "lots")
    assert rc == 2 and "links.batches.max_message" in out, out
    rc, out = run_cli("run", "--help")
    assert "max_message" in out and "curve.key" in out and "insecure" in out

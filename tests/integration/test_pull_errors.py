"""Pull mode: filters and empty chunks, timeouts, refusals and bad
settings — each ends with a clear error and a checkpoint that loses
nothing."""
import shutil
import subprocess

import pytest

from conftest import DATABASE, EMBEDFLOW_BIN, clean_env
from pullhelp import AiServer, finish, pull, runs

DIM = 16


def test_filter_and_empty_chunks(db, schema):
    """shard=0/300 leaves most chunks of 256 rows empty: empty chunks are
    checkpointed too, so the run completes at the end of the data set."""
    server = AiServer(3000, DIM)
    try:
        ef = pull(schema, server.target, extra=["--filter", "shard=0/300"])
        assert finish(ef) == 0, ef.log
        (call,) = server.calls()
        assert call["filter"] == {"shard": "0/300"}
        assert db.count(schema, "chunk") == 10
        (run,) = runs(db, schema)
        assert run["status"] == "completed"
        assert run["last_resume_token"] == "row:3000"
    finally:
        server.stop()


def test_server_refusal_is_not_retried(db, schema):
    server = AiServer(1000, DIM)
    try:
        ef = pull(schema, server.target, extra=["--filter", "colour=red"])
        assert finish(ef) == 1, ef.log
        assert len(server.calls()) == 1
        (run,) = runs(db, schema)
        assert run["status"] == "failed"
        assert "INVALID_ARGUMENT" in run["error"]
        assert "unknown filter keys" in run["error"]
    finally:
        server.stop()


def test_idle_timeout(db, schema):
    server = AiServer(1000, DIM, extra=["--delay-ms", "3000"])
    try:
        ef = pull(schema, server.target,
                  extra=["--jobs.src.idle_timeout", "300ms",
                         "--jobs.src.retries", "0"])
        assert finish(ef) == 1, ef.log
        (run,) = runs(db, schema)
        assert run["status"] == "failed"
        assert "idle_timeout" in run["error"]
        # the one chunk that came is committed and is the position
        assert run["last_resume_token"] == "row:256"
    finally:
        server.stop()


def test_deadline(db, schema):
    server = AiServer(1000, DIM, extra=["--delay-ms", "400"])
    try:
        ef = pull(schema, server.target,
                  extra=["--jobs.src.deadline", "200ms",
                         "--jobs.src.retries", "0",
                         "--jobs.src.idle_timeout", "0"])
        assert finish(ef) == 1, ef.log
        (run,) = runs(db, schema)
        assert "DEADLINE_EXCEEDED" in run["error"]
    finally:
        server.stop()


def test_bad_settings_fail_at_start(schema):
    cases = [
        (["--filter", "novalue"],
         "jobs.src.filter: 'novalue' is not KEY=VALUE"),
        (["--jobs.src.tls_ca", "/nonexistent/ca.pem"],
         "jobs.src.tls_ca: cannot read /nonexistent/ca.pem"),
        (["--jobs.src.chunk_size", "0"], "jobs.src.chunk_size"),
        (["--job", "other", "--target", ""], "--target is needed"),
    ]
    for extra, want in cases:
        out = subprocess.run(
            [EMBEDFLOW_BIN, "pull", "--database", DATABASE, "--schema",
             schema, "--dim", str(DIM), "--target", "127.0.0.1:1",
             "--source", "src", *extra],
            capture_output=True, env=clean_env(), timeout=60)
        assert out.returncode == 2, (extra, out.stdout, out.stderr)
        assert want in (out.stdout + out.stderr).decode(), extra


def test_tls_and_bearer_token(db, schema, tmp_path):
    openssl = shutil.which("openssl")
    if not openssl:
        pytest.skip("openssl is not installed")
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes",
                    "-keyout", str(key), "-out", str(cert), "-days", "1",
                    "-subj", "/CN=localhost", "-addext",
                    "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                   check=True, capture_output=True, timeout=60)
    server = AiServer(600, DIM, extra=["--tls-cert", str(cert), "--tls-key",
                                       str(key), "--auth-token", "s3cret"])
    once = ["--jobs.src.retries", "0"]
    try:
        # plaintext against a TLS server: the stream never starts
        ef = pull(schema, server.target, extra=once)
        assert finish(ef) == 1, ef.log
        assert "UNAVAILABLE" in runs(db, schema)[-1]["error"]
        # TLS with the wrong token: refused, not retried
        tls = ["--jobs.src.tls_ca", str(cert)]
        ef = pull(schema, server.target,
                  extra=tls + ["--jobs.src.auth_token",
                               "not-it-4711"])
        assert finish(ef) == 1, ef.log
        assert "UNAUTHENTICATED" in runs(db, schema)[-1]["error"]
        assert "not-it-4711" not in ef.log   # a secret never reaches the log
        # TLS with the right token
        ef = pull(schema, server.target,
                  extra=tls + ["--jobs.src.auth_token", "s3cret"])
        assert finish(ef) == 0, ef.log
        assert db.count(schema, "chunk") == 600
    finally:
        server.stop()

"""The Python client package (examples/python, `embedflow-client`):
installed offline into a venv, its CLI and API against the real embedflow,
re-sending on UNAVAILABLE, TLS and bearer tokens, the numpy fast path, and
the stubs it ships against proto/."""
import filecmp
import os
import shutil
import socket
import subprocess
import sys
import threading
from concurrent import futures

import grpc
import pytest

from conftest import DATABASE, Embedflow, clean_env
from embedflow.v1 import embedding_pb2
from embedflow_client.upload import (SERVICE, UploadFailed, chunked,
                                     synthetic_rows, upload_with_retry)
from helpers import CALL_TIMEOUT, same_vector, stored

HERE = os.path.dirname(os.path.abspath(__file__))
PACKAGE = os.path.normpath(os.path.join(HERE, "..", "..", "examples",
                                        "python"))
DIM = 16


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def identities(db, schema):
    return {(d, i) for d, i in db.rows(
        f'SELECT document_id, chunk_index FROM "{schema}".chunk')}


def expected_identities(rows, prefix="doc"):
    return {(f"{prefix}-{n // 10}", n % 10) for n in range(rows)}


@pytest.fixture(scope="module")
def venv(tmp_path_factory):
    """examples/python installed with pip into a venv that sees Debian's
    grpcio and protobuf, with no package index and no build isolation (no
    network). A copy of the tree is installed so the build leaves nothing
    in the source tree."""
    root = tmp_path_factory.mktemp("pyclient")
    src = root / "src"
    shutil.copytree(PACKAGE, src, ignore=shutil.ignore_patterns(
        "build", "*.egg-info", "__pycache__", "stubs"))
    env_dir = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages",
                    str(env_dir)], check=True, capture_output=True, timeout=120)
    pip = subprocess.run(
        [str(env_dir / "bin" / "pip"), "install", "--no-index",
         "--no-build-isolation", "--no-cache-dir", str(src)],
        capture_output=True, text=True, timeout=300, env=_bare_env())
    assert pip.returncode == 0, pip.stdout + pip.stderr
    return env_dir


def _bare_env(**extra):
    # no PYTHONPATH: only what is installed in the venv can be imported
    env = {k: v for k, v in clean_env().items() if k != "PYTHONPATH"}
    env.update(extra)
    return env


def run_cli(venv, *args, env=None, timeout=CALL_TIMEOUT):
    return subprocess.run([str(venv / "bin" / "embedflow-upload"), *args],
                          capture_output=True, text=True, timeout=timeout,
                          env=env or _bare_env(), cwd="/")


def test_installed_package_is_used_from_the_venv(venv):
    out = subprocess.run(
        [str(venv / "bin" / "python"), "-c",
         "import embedflow_client, embedflow_client.fast, "
         "embedflow.v1.embedding_pb2 as m, embedflow.v1.embedding_pb2_grpc;"
         "print(embedflow_client.__file__); print(m.__file__)"],
        capture_output=True, text=True, timeout=60, env=_bare_env(), cwd="/")
    assert out.returncode == 0, out.stderr
    for path in out.stdout.split():
        assert path.startswith(str(venv)), out.stdout
    help_ = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "embedflow_client.upload",
         "--help"], capture_output=True, text=True, timeout=60,
        env=_bare_env(), cwd="/")
    assert help_.returncode == 0 and "--root-certs" in help_.stdout


def test_installed_cli_uploads_rows_that_land(venv, embedflow, db, schema):
    ef = embedflow(dim=DIM)
    out = run_cli(venv, "--target", ef.target, "--rows", "1234", "--dim",
                  str(DIM), "--chunk-rows", "100", "--source", "pyclient")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "received=1234 written=1234 dead_lettered=0" in out.stdout
    assert identities(db, schema) == expected_identities(1234)
    assert db.count(schema, "embedding") == 1234


def test_cli_bad_usage_exits_2_with_the_reason(venv, tmp_path):
    out = run_cli(venv, "--rows", "0")
    assert out.returncode == 2 and "--rows: must be at least 1" in out.stderr
    missing = tmp_path / "nope.pem"
    out = run_cli(venv, "--root-certs", str(missing))
    assert out.returncode == 2
    assert f"--root-certs: No such file or directory: {missing}" in out.stderr
    empty = tmp_path / "token"
    empty.write_text("\n")
    out = run_cli(venv, "--token-file", str(empty))
    assert out.returncode == 2 and "is empty" in out.stderr


def test_cli_against_nothing_fails_after_its_attempts(venv):
    port = free_port()
    out = run_cli(venv, "--target", f"127.0.0.1:{port}", "--rows", "10",
                  "--attempts", "3", "--backoff", "0.01")
    assert out.returncode == 1, out.stdout + out.stderr
    assert out.stderr.count("; sending again in") == 2, out.stderr
    assert "upload failed: UNAVAILABLE" in out.stderr
    assert "(after 3 attempts)" in out.stderr


def test_resend_when_nothing_listens_yet(db, schema):
    """The first call is refused (nothing listens: UNAVAILABLE); embedflow
    starts on that port before the re-send, which delivers every row."""
    port = free_port()
    chunks = list(chunked(synthetic_rows(2000, DIM), 100))
    retries, started = [], []

    def on_retry(attempt, error, delay):
        retries.append((attempt, error.code()))
        if not started:
            started.append(Embedflow([
                "run", "--database", DATABASE, "--schema", schema,
                "--listen", f"127.0.0.1:{port}", "--writers", "2",
                "--dim", str(DIM)]).wait_ready())

    try:
        result = upload_with_retry(f"127.0.0.1:{port}", chunks,
                                   timeout=CALL_TIMEOUT, attempts=5,
                                   backoff=0.01, on_retry=on_retry)
    finally:
        rcs = [ef.stop() for ef in started]
    assert retries == [(1, grpc.StatusCode.UNAVAILABLE)]
    assert (result.received, result.written, result.dead_lettered) == \
        (2000, 2000, 0)
    assert rcs == [0]
    assert identities(db, schema) == expected_identities(2000)


class Flaky:
    """A grpcio server in front of embedflow: the first `fail` calls read
    `read` chunks and end with `code`; later calls are forwarded whole to
    embedflow (raw bytes both ways). .calls lists the seqs each call
    received."""

    def __init__(self, upstream, fail=1, read=3,
                 code=grpc.StatusCode.UNAVAILABLE):
        self.upstream = grpc.insecure_channel(upstream) if upstream else None
        self.fail, self.read, self.code = fail, read, code
        self.calls = []
        self.lock = threading.Lock()
        handler = grpc.method_handlers_generic_handler(
            "embedflow.v1.EmbeddingService",
            {"UploadEmbeddings": grpc.stream_unary_rpc_method_handler(
                self._upload, request_deserializer=lambda b: b,
                response_serializer=lambda b: b)})
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4),
                                  handlers=[handler])
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()
        self.target = f"127.0.0.1:{self.port}"

    def _upload(self, requests, context):
        with self.lock:
            seqs = []
            self.calls.append(seqs)
            failing = len(self.calls) <= self.fail
        if failing:
            for raw in requests:
                seqs.append(embedding_pb2.EmbeddingChunk.FromString(raw).seq)
                if len(seqs) == self.read:
                    break
            context.abort(self.code, "test: go away")

        def forward():
            for raw in requests:
                seqs.append(embedding_pb2.EmbeddingChunk.FromString(raw).seq)
                yield raw
        call = self.upstream.stream_unary(SERVICE,
                                          request_serializer=lambda b: b,
                                          response_deserializer=lambda b: b)
        return call(forward(), timeout=CALL_TIMEOUT)

    def stop(self):
        self.server.stop(0).wait()
        if self.upstream:
            self.upstream.close()


def test_unavailable_mid_stream_resends_the_whole_upload(embedflow, db,
                                                         schema):
    ef = embedflow(dim=DIM)
    proxy = Flaky(ef.target, fail=2, read=3)
    chunks = list(chunked(synthetic_rows(1500, DIM), 100))
    retries = []
    try:
        result = upload_with_retry(
            proxy.target, chunks, timeout=CALL_TIMEOUT, attempts=4,
            backoff=0.01, on_retry=lambda a, e, d: retries.append(e.code()))
    finally:
        proxy.stop()
    assert retries == [grpc.StatusCode.UNAVAILABLE] * 2
    assert proxy.calls[0] == [1, 2, 3] and proxy.calls[1] == [1, 2, 3]
    assert proxy.calls[2] == list(range(1, 16)), "the re-send is whole"
    assert len(proxy.calls) == 3
    assert (result.received, result.written, result.dead_lettered) == \
        (1500, 1500, 0)
    assert identities(db, schema) == expected_identities(1500)


def test_other_statuses_are_not_retried_and_attempts_are_bounded():
    refusing = Flaky(None, fail=99, read=1,
                     code=grpc.StatusCode.INVALID_ARGUMENT)
    flaky = Flaky(None, fail=99, read=1)
    chunks = list(chunked(synthetic_rows(20, DIM), 10))
    try:
        with pytest.raises(UploadFailed) as refused:
            upload_with_retry(refusing.target, chunks, attempts=5,
                              backoff=0.01)
        with pytest.raises(UploadFailed) as exhausted:
            upload_with_retry(flaky.target, chunks, attempts=3,
                              backoff=0.01)
    finally:
        refusing.stop()
        flaky.stop()
    assert refused.value.attempts == 1 and len(refusing.calls) == 1
    assert refused.value.error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert exhausted.value.attempts == 3 and len(flaky.calls) == 3
    assert exhausted.value.error.code() == grpc.StatusCode.UNAVAILABLE
    # a generator cannot be sent twice: refused before any call
    with pytest.raises(TypeError, match="re-sent upload"):
        upload_with_retry(flaky.target, iter(chunks))


@pytest.fixture
def certificate(tmp_path):
    openssl = shutil.which("openssl")
    if not openssl:
        pytest.skip("openssl is not installed")
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes",
                    "-keyout", str(key), "-out", str(cert), "-days", "1",
                    "-subj", "/CN=localhost", "-addext",
                    "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                   check=True, capture_output=True, timeout=60)
    return cert, key


def test_tls_and_token_options(venv, embedflow, db, schema, certificate,
                               tmp_path):
    cert, key = certificate
    ef = embedflow(dim=DIM, extra=[
        "--actors.grpc-receiver.tls_cert", str(cert),
        "--actors.grpc-receiver.tls_key", str(key),
        "--actors.grpc-receiver.auth_token", "s3cret-4711"])
    base = ["--target", ef.target, "--rows", "300", "--dim", str(DIM),
            "--attempts", "1"]
    token = tmp_path / "token"
    token.write_text("s3cret-4711\n")

    # TLS without the token: refused, nothing stored
    out = run_cli(venv, *base, "--root-certs", str(cert))
    assert out.returncode == 1 and "UNAUTHENTICATED" in out.stderr, \
        out.stdout + out.stderr
    # the wrong token, from the environment
    out = run_cli(venv, *base, "--root-certs", str(cert),
                  env=_bare_env(EMBEDFLOW_TOKEN="not-it"))
    assert out.returncode == 1 and "UNAUTHENTICATED" in out.stderr
    assert db.count(schema, "chunk") == 0
    # the token but plaintext: the TLS server never answers the call
    out = run_cli(venv, *base, "--token-file", str(token))
    assert out.returncode == 1 and "UNAVAILABLE" in out.stderr
    # TLS and the token (file, then environment): stored
    out = run_cli(venv, *base, "--root-certs", str(cert), "--token-file",
                  str(token))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "written=300" in out.stdout
    out = run_cli(venv, *base, "--root-certs", str(cert), "--seed", "1",
                  env=_bare_env(EMBEDFLOW_TOKEN="s3cret-4711"))
    assert out.returncode == 0, out.stdout + out.stderr
    assert identities(db, schema) == expected_identities(300)
    assert "s3cret-4711" not in ef.log


def test_stubs_shipped_match_proto(tmp_path):
    """The package's embedflow/v1 stubs are what gen_stubs.sh makes from
    proto/ now: a change to proto/ without regenerating them fails here."""
    if not shutil.which("protoc") or not shutil.which("grpc_python_plugin"):
        pytest.skip("protoc or grpc_python_plugin is not installed "
                    "(protobuf-compiler, protobuf-compiler-grpc)")
    subprocess.run(["bash", os.path.join(PACKAGE, "gen_stubs.sh"),
                    str(tmp_path)], check=True, capture_output=True,
                   timeout=120)
    fresh, shipped = tmp_path / "embedflow" / "v1", \
        os.path.join(PACKAGE, "embedflow", "v1")
    names = sorted(p.name for p in fresh.glob("*.py"))
    assert names == sorted(n for n in os.listdir(shipped)
                           if n.endswith(".py"))
    _, mismatch, errors = filecmp.cmpfiles(fresh, shipped, names,
                                           shallow=False)
    assert not mismatch and not errors, \
        f"stale stubs {mismatch + errors}: run examples/python/gen_stubs.sh"


# --- the numpy fast path ----------------------------------------------------

try:
    import numpy as np
    from embedflow_client import fast
except ImportError:
    np = fast = None
needs_numpy = pytest.mark.skipif(
    np is None, reason="numpy is not installed (Debian: python3-numpy)")


@needs_numpy
def test_numpy_path_is_byte_identical_to_the_list_path():
    rng = np.random.default_rng(7)
    cases = [
        # float64 values: both paths round to float32 the same way
        dict(vector=rng.uniform(-1, 1, DIM), metadata={"a": "1", "b": "2"},
             content="x", model="m", id="0190a6a0-0000-7000-8000-000000000001"),
        dict(vector=rng.standard_normal(768).astype(np.float32), model=""),
        dict(vector=np.array([0.0, -0.0, 1e-45, 3.4e38, np.inf, np.nan])),
        dict(vector=np.arange(5, dtype=np.int32), content="ints"),
        dict(vector=np.zeros(0, dtype=np.float32), model="empty"),
        # a non-contiguous row view
        dict(vector=rng.uniform(-1, 1, (4, DIM)).T[3]),
    ]
    items, messages = [], []
    for n, case in enumerate(cases):
        vector = case.pop("vector")
        slow = embedding_pb2.Embedding(document_id=f"d{n}", chunk_index=n,
                                       vector=vector.tolist(), **case)
        packed = fast.pack_embedding(f"d{n}", n, vector, **case)
        assert packed == slow.SerializeToString(deterministic=True), case
        parsed = embedding_pb2.Embedding.FromString(packed)
        assert parsed.SerializeToString(deterministic=True) == packed
        assert parsed.document_id == f"d{n}"
        items.append(packed)
        messages.append(slow)
    chunks = list(fast.pack_chunks(items, 4))
    expected = [c.SerializeToString(deterministic=True)
                for c in chunked(messages, 4)]
    assert chunks == expected and len(chunks) == 2
    with pytest.raises(ValueError, match="1-D"):
        fast.pack_embedding("d", 0, np.zeros((2, 2)))
    with pytest.raises(ValueError, match="3 rows but 2 document ids"):
        list(fast.pack_matrix(["a", "b"], [0, 1, 2], np.zeros((3, 4))))


@needs_numpy
def test_numpy_path_uploads(embedflow, db, schema):
    ef = embedflow(dim=DIM)
    rng = np.random.default_rng(11)
    matrix = rng.standard_normal((3000, DIM)).astype(np.float32)
    docs = [f"np-{n // 10}" for n in range(3000)]
    idx = np.arange(3000) % 10
    items = fast.pack_matrix(docs, idx, matrix, model="np-model",
                             metadata={"lang": "en"})
    result = upload_with_retry(ef.target, list(fast.pack_chunks(items, 250)),
                               timeout=CALL_TIMEOUT, attempts=1)
    assert (result.received, result.written, result.dead_lettered) == \
        (3000, 3000, 0)
    assert identities(db, schema) == expected_identities(3000, "np")
    for n in (0, 1234, 2999):
        got = stored(db, schema, docs[n], int(idx[n]))
        assert got is not None and same_vector(got[2], matrix[n].tolist())


@needs_numpy
def test_numpy_and_list_uploads_store_the_same_rows(embedflow, db, schema):
    """The list path after the numpy path changes nothing: same rows."""
    ef = embedflow(dim=DIM)
    rows = list(synthetic_rows(500, DIM))
    items = [fast.pack_embedding(r.document_id, r.chunk_index,
                                 np.array(r.vector, dtype=np.float32),
                                 content=r.content, metadata=dict(r.metadata),
                                 model=r.model) for r in rows]
    first = upload_with_retry(ef.target, list(fast.pack_chunks(items, 100)),
                              timeout=CALL_TIMEOUT)
    assert first.written == 500
    before = db.rows(f'SELECT c.id, c.updated_at, e.updated_at FROM '
                     f'"{schema}".chunk c JOIN "{schema}".embedding e '
                     f'USING (id) ORDER BY c.id')
    again = upload_with_retry(ef.target, list(chunked(rows, 100)),
                              timeout=CALL_TIMEOUT)
    assert (again.received, again.dead_lettered) == (500, 0)
    after = db.rows(f'SELECT c.id, c.updated_at, e.updated_at FROM '
                    f'"{schema}".chunk c JOIN "{schema}".embedding e '
                    f'USING (id) ORDER BY c.id')
    assert len(before) == 500 and after == before


if __name__ == "__main__":
    sys.exit(pytest.main([__file__]))

"""Topology in configuration: a transform inserted by configuration alone
(the out-of-tree l2norm actor, loaded from its shared object), the errors
a wrong topology gets, and `graph` drawing what is configured."""
import ctypes.util
import math
import re
import os
import subprocess

import pytest

import conftest
from conftest import DATABASE, EMBEDFLOW_BIN, clean_env
from helpers import send, stream

DIM = 16
PLUGIN = os.environ.get("EF_L2NORM_PLUGIN", "")
REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))


def run_cli(*args, timeout=60):
    """Runs embedflow to completion; returns (exit code, stdout+stderr)."""
    p = subprocess.run([EMBEDFLOW_BIN, *args], stdin=subprocess.DEVNULL,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       env=clean_env(), timeout=timeout)
    return p.returncode, p.stdout.decode("utf-8", "replace")


def write_transform_config(path, plugin):
    """A config that puts l2norm (loaded from plugin) between the splitter
    and the writers."""
    path.write_text(
        f"plugins: [{plugin}]\n"
        "actors:\n"
        "  l2norm: { instances: 2 }\n"
        "links:\n"
        "  batches: { to: l2norm.in }\n"
        "  normalized: { from: l2norm.out, to: db-writer.batches }\n")
    return str(path)


@pytest.fixture
def transform_config(tmp_path):
    if not PLUGIN:
        pytest.fail("EF_L2NORM_PLUGIN is not set: run through ctest")
    return write_transform_config(tmp_path / "l2norm.yaml", PLUGIN)


def check_transform_normalises(embedflow, db, schema, config):
    """2 transform instances in front of 3 writers, each re-routing its
    rows to the writer the splitter would have chosen: every stored vector
    has norm 1 and the direction sent, and both instances worked."""
    ef = embedflow(dim=DIM, writers=3, extra=["--config", config])
    chunks = stream(3000, DIM, 100)
    sent = {(e.document_id, e.chunk_index): list(e.vector)
            for c in chunks for e in c.items}
    assert any(abs(math.sqrt(sum(x * x for x in v)) - 1) > 0.1
               for v in sent.values()), "the test vectors must not be unit"

    result = send(ef.target, chunks)

    assert (result.received, result.written, result.dead_lettered) == \
        (3000, 3000, 0)
    assert db.count(schema, "embedding") == 3000
    off = db.scalar(
        f'SELECT count(*) FROM "{schema}".embedding e WHERE abs(sqrt(('
        f'SELECT sum(x * x) FROM unnest(e.vector::real[]) x)) - 1) > 1e-4')
    assert off == 0, f"{off} stored vectors do not have norm 1"
    # the direction is the one sent
    for doc, index, vec in db.rows(
            f'SELECT c.document_id, c.chunk_index, e.vector::real[] '
            f'FROM "{schema}".chunk c JOIN "{schema}".embedding e '
            f'USING (id) ORDER BY c.document_id, c.chunk_index LIMIT 20'):
        v = sent[(doc, index)]
        norm = math.sqrt(sum(x * x for x in v))
        assert all(abs(a - b / norm) < 1e-5 for a, b in zip(vec, v))
    # both instances worked, and every row went through one of them
    assert ef.stop() == 0
    ef.expect_exit = 0
    counts = [int(m) for m in re.findall(
        r"l2norm\[\d\]: (\d+) rows normalised", ef.log)]
    assert len(counts) == 2 and sum(counts) == 3000, ef.log
    assert all(counts), ef.log


def test_transform_inserted_by_configuration_normalises_every_vector(
        embedflow, db, schema, transform_config):
    check_transform_normalises(embedflow, db, schema, transform_config)


def run_ok(args, what):
    p = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       env=clean_env(), timeout=600)
    assert p.returncode == 0, f"{what}:\n{p.stdout.decode(errors='replace')}"


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """This build installed into a throwaway prefix, and examples/l2norm
    built out of the tree against it (find_package(embedflow),
    embedflow::plugin): (the installed binary, the plugin)."""
    build = os.path.dirname(EMBEDFLOW_BIN)
    prefix = tmp_path_factory.mktemp("prefix")
    run_ok(["cmake", "--install", build, "--prefix", str(prefix)],
           "cmake --install")
    out = tmp_path_factory.mktemp("build-l2norm")
    run_ok(["cmake", "-S", os.path.join(REPO, "examples", "l2norm"),
            "-B", str(out), f"-DCMAKE_PREFIX_PATH={prefix}"],
           "configuring examples/l2norm against the installed copy")
    run_ok(["cmake", "--build", str(out)], "building examples/l2norm")
    plugin = out / "libl2norm.so"
    assert plugin.exists()
    # a plugin links no copy of the runtime: the binary that loads it is it
    needed = subprocess.run(["objdump", "-p", str(plugin)],
                            stdout=subprocess.PIPE, check=True).stdout
    assert b"libembedflow" not in needed, needed.decode()
    return str(prefix / "bin" / "embedflow"), str(plugin)


def test_installed_out_of_tree_transform_normalises_every_vector(
        installed, embedflow, db, schema, tmp_path, monkeypatch):
    binary, plugin = installed
    monkeypatch.setattr(conftest, "EMBEDFLOW_BIN", binary)
    config = write_transform_config(tmp_path / "l2norm.yaml", plugin)
    check_transform_normalises(embedflow, db, schema, config)


def test_graph_follows_the_configured_topology(transform_config):
    rc, out = run_cli("graph", "--config", transform_config)
    assert rc == 0, out
    assert '"splitter" -> "l2norm" [label="batches' in out, out
    assert '"l2norm" -> "db-writer" [label="normalized' in out, out
    assert '"splitter" -> "db-writer"' not in out, out
    rc, out = run_cli("graph")
    assert rc == 0, out
    assert '"splitter" -> "db-writer" [label="batches' in out, out
    assert "l2norm" not in out


@pytest.mark.parametrize("flags, named", [
    # a port joined to a port of another message type
    (["--links.batches.from", "splitter.dead"],
     ["links.batches.from", "embedflow.v1.DeadLetter"]),
    # names that are not there
    (["--links.batches.to", "l2norm.in"], ["links.batches.to", "l2norm"]),
    (["--links.dead.from", "splitter.dead, db-writer.deadd"],
     ["links.dead.from", "deadd"]),
    # a new link without a consumer
    (["--links.extra.from", "splitter.dead"], ["links.extra.to"]),
    # an IN port no link feeds
    (["--links.committed.to", "dlq.dead"], ["links.committed.to"]),
])
def test_topology_errors_exit_2_naming_the_key(flags, named):
    rc, out = run_cli("run", "--database", DATABASE, *flags)
    assert rc == 2, out
    for word in named:
        assert word in out, f"the message does not name {word}: {out}"


def test_in_port_without_producer_exits_2(tmp_path):
    # the transform is loaded and fed, but nothing feeds the writers
    config = tmp_path / "half.yaml"
    config.write_text(f"plugins: [{PLUGIN}]\n"
                      "links:\n  batches: { to: l2norm.in }\n")
    rc, out = run_cli("run", "--database", DATABASE, "--config", str(config))
    assert rc == 2, out
    assert "db-writer.batches has no producer" in out, out
    assert "l2norm.out joins no link" not in out  # the first error wins


def test_bad_plugins_exit_2_naming_the_file(tmp_path):
    missing = str(tmp_path / "libnothing.so")
    rc, out = run_cli("run", "--database", DATABASE, "--plugins", missing)
    assert rc == 2, out
    assert "plugins" in out and missing in out, out
    assert "No such file" in out, out  # dlerror()'s words

    # a shared object that is not an embedflow plugin
    libm = ctypes.util.find_library("m")
    config = tmp_path / "libm.yaml"
    config.write_text(f"plugins: [{libm}]\n")
    rc, out = run_cli("run", "--database", DATABASE, "--config", str(config))
    assert rc == 2, out
    assert f"{config}:1: plugins" in out and libm in out, out
    assert "ef_plugin_register" in out, out

    # a file that is not a shared object at all
    junk = tmp_path / "junk.so"
    junk.write_text("not ELF\n")
    rc, out = run_cli("graph", "--plugins", str(junk))
    assert rc == 2, out
    assert str(junk) in out, out

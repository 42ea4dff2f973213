"""The example configurations under deploy/ load and validate: a key
renamed or a link added without updating them fails here. A host's file
in deploy/split/ is read together with the cluster.yaml beside it, as
the host starts it."""
import pathlib
import re
import subprocess

import pytest

from conftest import EMBEDFLOW_BIN, clean_env

DEPLOY = pathlib.Path(__file__).resolve().parents[2] / "deploy"
CLUSTER = DEPLOY / "split" / "cluster.yaml"
CONFIGS = sorted(p for p in DEPLOY.rglob("*.yaml") if p != CLUSTER)


def graph(*configs):
    args = [EMBEDFLOW_BIN, "graph"]
    for c in configs:
        args += ["--config", str(c)]
    return subprocess.run(args, capture_output=True, text=True,
                          env=clean_env(), timeout=30)


def test_there_are_examples():
    assert len(CONFIGS) >= 4 and CLUSTER.exists()


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_example_config_validates(path):
    split = path.parent == CLUSTER.parent
    out = graph(CLUSTER, path) if split else graph(path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("digraph")
    for actor in ("grpc-receiver", "splitter", "db-writer", "dlq"):
        assert re.search(rf'"{actor}(@[a-z-]+)?"', out.stdout), actor


def test_split_example_places_every_writer_once():
    """Three hosts, each with its own cluster in the graph; the writers'
    batches go to the host each one runs on; every host that keeps state
    names the database (none would start a private one)."""
    text = CLUSTER.read_text()
    assert re.search(r"^database: ", text, re.M)
    for path in CONFIGS:
        if path.parent != CLUSTER.parent:
            continue
        out = graph(CLUSTER, path)
        assert out.returncode == 0, out.stderr
        host = re.search(r"^host: (\S+)", path.read_text(), re.M).group(1)
        assert f"host {host} (" in out.stdout
        assert re.search(rf'label="host {host} \([0-9.]+\): this process"',
                         out.stdout), out.stdout
        assert '"db-writer@writer-a" [label="db-writer [0-1] of 4"]' \
            in out.stdout
        assert '"db-writer@writer-b" [label="db-writer [2-3] of 4"]' \
            in out.stdout
        assert "batches\\ntcp://10.0.0.2:7100" in out.stdout
        assert "batches\\ntcp://10.0.0.3:7102" in out.stdout

"""The example configurations under deploy/ load and validate: a key
renamed or a link added without updating them fails here."""
import pathlib
import subprocess

import pytest

from conftest import EMBEDFLOW_BIN, clean_env

DEPLOY = pathlib.Path(__file__).resolve().parents[2] / "deploy"
CONFIGS = sorted(DEPLOY.rglob("*.yaml"))


def test_there_are_examples():
    assert len(CONFIGS) >= 3


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_example_config_validates(path):
    out = subprocess.run([EMBEDFLOW_BIN, "graph", "--config", str(path)],
                         capture_output=True, text=True, env=clean_env(),
                         timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("digraph")
    for actor in ("grpc-receiver", "splitter", "db-writer", "dlq"):
        assert f'"{actor}"' in out.stdout

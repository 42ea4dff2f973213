"""`embedflow graph`: the topology as DOT that Graphviz accepts, naming
every actor the binary knows; --png draws it."""
import html
import re
import shutil
import subprocess

import pytest

from conftest import EMBEDFLOW_BIN, clean_env

DOT = shutil.which("dot")


def embedflow(*args, env=None):
    return subprocess.run([EMBEDFLOW_BIN, *args], stdin=subprocess.DEVNULL,
                          capture_output=True, timeout=60,
                          env=env or clean_env())


def actors():
    """Every actor of the configuration, from the help text's sections."""
    p = embedflow("graph", "--help")
    assert p.returncode == 0
    names = re.findall(r"^([a-z][a-z0-9-]*) — ", p.stdout.decode(), re.M)
    assert "grpc-receiver" in names and "db-writer" in names
    return names


def test_dot_names_every_actor():
    p = embedflow("graph", "--writers", "3")
    assert p.returncode == 0, p.stderr
    text = p.stdout.decode()
    assert text.lstrip().startswith("digraph")
    for name in actors():
        assert name in text, name


@pytest.mark.skipif(not DOT, reason="Graphviz dot is not installed")
def test_dot_parses_and_png_is_drawn(tmp_path):
    p = embedflow("graph")
    svg = subprocess.run([DOT, "-Tsvg"], input=p.stdout, capture_output=True,
                         timeout=60)
    assert svg.returncode == 0, svg.stderr
    drawn = html.unescape(svg.stdout.decode())    # '-' is &#45; in SVG
    for name in actors():
        assert name in drawn, name

    png = tmp_path / "it's a graph.png"     # a quote in the name, too
    p = embedflow("graph", "--png", str(png))
    assert p.returncode == 0, p.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_png_without_dot_says_so(tmp_path):
    p = embedflow("graph", "--png", str(tmp_path / "x.png"),
                  env=clean_env(PATH="/nonexistent"))
    assert p.returncode == 1
    assert b"dot" in p.stderr and b"graphviz" in p.stderr
    assert not (tmp_path / "x.png").exists()

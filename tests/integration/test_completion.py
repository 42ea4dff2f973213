"""Bash completion: `embedflow completion bash` loaded into a real bash,
its completion function called as bash calls it on TAB."""
import subprocess

import pytest

from conftest import EMBEDFLOW_BIN, clean_env


def complete(words):
    """The candidates bash offers for the last of words (the word being
    completed, maybe empty)."""
    script = subprocess.run([EMBEDFLOW_BIN, "completion", "bash"],
                            stdout=subprocess.PIPE, check=True,
                            env=clean_env()).stdout.decode()
    words = [EMBEDFLOW_BIN, *words]
    quoted = " ".join("'" + w.replace("'", "'\\''") + "'" for w in words)
    driver = (script + f"\nCOMP_WORDS=({quoted})\n"
              f"COMP_CWORD={len(words) - 1}\n_embedflow\n"
              'printf "%s\\n" "${COMPREPLY[@]}"\n')
    out = subprocess.run(["bash", "--norc", "--noprofile", "-c", driver],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         env=clean_env(), timeout=60)
    assert out.returncode == 0, out.stderr.decode()
    return set(out.stdout.decode().split())


@pytest.mark.parametrize("words,expected", [
    (["de"], {"demo"}),
    (["c"], {"check", "config", "completion", "ctl"}),
    (["ctl", "p"], {"pause"}),
    (["run", "--wri"], {"--writers"}),
    (["run", "--actors.db-writer.adaptive-t"],
     {"--actors.db-writer.adaptive-target"}),
    (["run", "--actors.splitter.ins"], {"--actors.splitter.instances"}),
    (["run", "--actors.db-writer.max_r"], {"--actors.db-writer.max_restarts"}),
    (["run", "--actors.db-writer.adaptive", ""], {"true", "false"}),
    (["run", "--jobs.nightly.tls", ""], {"true", "false"}),
    (["run", "--log-format", ""], {"text", "json"}),
    (["dlq", "re"], {"replay"}),
    (["dlq", "ls", "--st"], {"--stage"}),
    (["bench", "--row"], {"--rows", "--row-rows"}),
])
def test_completes(words, expected):
    assert complete(words) == expected


def test_every_command_is_offered():
    got = complete([""])
    for cmd in ["run", "demo", "graph", "pull", "jobs", "bench", "top", "ctl",
                "dlq", "keygen", "check", "config", "completion", "version",
                "help"]:
        assert cmd in got


def test_unknown_shell_exits_2():
    p = subprocess.run([EMBEDFLOW_BIN, "completion", "fish"],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       env=clean_env())
    assert p.returncode == 2
    assert b"bash" in p.stdout

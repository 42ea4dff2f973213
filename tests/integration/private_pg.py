"""A PostgreSQL of one test's own (tests/pg.sh on a private directory),
which the test may stop and start again without disturbing the tests that
share the suite's server."""
import glob
import os
import shutil
import subprocess
import tempfile

import pytest

PG_SH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..",
                     "pg.sh")


def pg_bindir():
    for d in os.environ.get("PATH", "").split(":"):
        if os.access(os.path.join(d, "pg_ctl"), os.X_OK) and \
                os.access(os.path.join(d, "postgres"), os.X_OK):
            return d
    dirs = sorted(glob.glob("/usr/lib/postgresql/*/bin"),
                  key=lambda d: int(d.split("/")[4]), reverse=True)
    return dirs[0]


class PrivatePostgres:
    """A PostgreSQL of this test only (tests/pg.sh layout), which the test
    may stop and start again."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="efpg", dir="/tmp")
        subprocess.run([PG_SH, "start", self.dir], check=True,
                       stdout=subprocess.DEVNULL)
        real = self.dir
        if os.path.exists(os.path.join(self.dir, "realdir")):
            with open(os.path.join(self.dir, "realdir")) as f:
                real = f.read().strip()
        self.real = real
        self.pg_ctl = os.path.join(pg_bindir(), "pg_ctl")
        self.conninfo = (f"host={self.dir}/sock port=5432 user=postgres "
                         f"dbname=postgres")

    def _ctl(self, *args):
        cmd = [self.pg_ctl, "-D", os.path.join(self.real, "pgdata"), *args]
        if os.geteuid() == 0:
            cmd = ["runuser", "-u", "postgres", "--"] + cmd
        subprocess.run(cmd, check=True, cwd="/", stdout=subprocess.DEVNULL)

    def stop_fast(self):
        self._ctl("-w", "-t", "60", "stop", "-m", "fast")

    def start_again(self):
        self._ctl("-w", "-t", "60", "-l",
                  os.path.join(self.real, "postgres.log"), "start")

    def close(self):
        subprocess.run([PG_SH, "stop", self.dir], stdout=subprocess.DEVNULL)
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def private_pg():
    pg = PrivatePostgres()
    yield pg
    pg.close()

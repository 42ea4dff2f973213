"""systemd: READY=1 once the pipeline is up, WATCHDOG=1 while it runs,
STOPPING=1 on SIGTERM, sent to $NOTIFY_SOCKET as systemd would set it for
a Type=notify unit, here a datagram socket the test binds. The shipped
unit, sysusers and tmpfiles snippets are checked with systemd's tools."""
import os
import pathlib
import re
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import time

import pytest

from conftest import DATABASE, EMBEDFLOW_BIN, STOP_TIMEOUT, clean_env
from helpers import private_data_dir

DEPLOY = pathlib.Path(__file__).resolve().parents[2] / "deploy"
START_TIMEOUT = 60


class Notify:
    """The NOTIFY_SOCKET end: every datagram with the sender's pid (from
    SO_PASSCRED) and the time it arrived."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="ef-notify-")
        self.path = os.path.join(self.dir, "notify")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.bind(self.path)
        # Reachable by every user, as systemd's own socket is: as root the
        # private PostgreSQL runs as user postgres.
        os.chmod(self.dir, 0o755)
        os.chmod(self.path, 0o777)
        self.messages = []          # (monotonic time, pid, {key: value})

    def recv(self, timeout):
        """The next message, None after timeout seconds without one."""
        self.sock.settimeout(timeout)
        try:
            data, anc, _, _ = self.sock.recvmsg(
                4096, socket.CMSG_SPACE(struct.calcsize("iII")))
        except socket.timeout:
            return None
        pid = None
        for level, kind, payload in anc:
            if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                pid = struct.unpack("iII", payload[:12])[0]
        fields = dict(line.split("=", 1)
                      for line in data.decode().splitlines() if "=" in line)
        msg = (time.monotonic(), pid, fields)
        self.messages.append(msg)
        return msg

    def wait_for(self, key, timeout, proc=None):
        """Reads until a message with key arrives; returns it. Fails after
        timeout seconds, or as soon as proc has exited without it."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            msg = self.recv(min(max(left, 0.01), 1.0)) if left > 0 else None
            if msg is None and (left <= 0 or (proc and proc.poll() is not
                                              None)):
                pytest.fail(f"no {key} within {timeout} s; got "
                            f"{[m[2] for m in self.messages]}"
                            + (f"\nlog:\n{log_text(proc)}" if proc else ""))
            if msg and key in msg[2]:
                return msg

    def close(self):
        self.sock.close()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def notify():
    n = Notify()
    yield n
    n.close()


def _start(args, notify, log_path, **env):
    """Starts embedflow with stderr into a file: a write to a file is there
    the moment it returns, so what the file holds when a message arrives
    was logged before the message was sent."""
    log = open(log_path, "wb")
    proc = subprocess.Popen(
        [EMBEDFLOW_BIN, *args], stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL, stderr=log,
        env=clean_env(NOTIFY_SOCKET=notify.path, **env))
    log.close()
    proc.log_path = log_path
    return proc


def log_text(proc):
    return pathlib.Path(proc.log_path).read_text()


def _exit_code(proc):
    """Waits for the exit that a SIGTERM sent before started."""
    try:
        return proc.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        pytest.fail("embedflow did not exit after SIGTERM\n" + log_text(proc))


def _kill(proc):
    """Ends a process the test started and did not stop."""
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def test_ready_watchdog_stopping(notify, schema, tmp_path):
    log = tmp_path / "stderr.log"
    watchdog_usec = 600_000
    proc = _start(["run", "--database", DATABASE, "--schema", schema,
                   "--listen", "127.0.0.1:0", "--dim", "8"],
                  notify, log, WATCHDOG_USEC=str(watchdog_usec))
    try:
        t_ready, pid, ready = notify.wait_for("READY", START_TIMEOUT, proc)
        assert ready["READY"] == "1" and pid == proc.pid
        # Every actor said ready before: the port is listening, the
        # writers are connected.
        before = log.read_text()
        assert re.search(r"listening on 127\.0\.0\.1:\d+", before), before
        assert before.count("writing to database") == 2, before

        # The watchdog: pinged at half the interval, never a gap of a
        # whole interval (systemd would kill the unit then).
        pings = [t_ready]
        while len(pings) < 7:
            t, pid, msg = notify.wait_for("WATCHDOG", 5)
            assert msg["WATCHDOG"] == "1" and pid == proc.pid
            pings.append(t)
        gaps = [b - a for a, b in zip(pings, pings[1:])]
        assert max(gaps) < watchdog_usec / 1e6, gaps
        assert "STOPPING" not in str(notify.messages)

        proc.send_signal(signal.SIGTERM)
        t_stop, pid, stopping = notify.wait_for("STOPPING", 30, proc)
        assert stopping["STOPPING"] == "1" and pid == proc.pid
        assert _exit_code(proc) == 0, log_text(proc)
    finally:
        _kill(proc)
    text = log.read_text()
    assert "draining" in text and "stopped" in text
    states = [k for _, _, m in notify.messages for k in m
              if k in ("READY", "STOPPING")]
    assert states == ["READY", "STOPPING"], notify.messages


def test_no_watchdog_unless_the_unit_sets_one(notify, schema, tmp_path):
    # WATCHDOG_PID names another process: the watchdog is not ours.
    proc = _start(["run", "--database", DATABASE, "--schema", schema,
                   "--listen", "127.0.0.1:0", "--dim", "8"],
                  notify, tmp_path / "stderr.log",
                  WATCHDOG_USEC="200000", WATCHDOG_PID="1")
    try:
        notify.wait_for("READY", START_TIMEOUT, proc)
        # Ten would-be watchdog intervals, and no ping in them.
        assert notify.recv(2.0) is None, notify.messages
        proc.send_signal(signal.SIGTERM)
        notify.wait_for("STOPPING", 30, proc)
        assert _exit_code(proc) == 0, log_text(proc)
    finally:
        _kill(proc)
    assert not [m for m in notify.messages if "WATCHDOG" in m[2]]


@pytest.fixture
def data_dir():
    yield from private_data_dir()


def test_private_postgres_does_not_speak_for_the_unit(notify, data_dir,
                                                      tmp_path):
    # PostgreSQL is built with sd_notify: given the socket, it would say
    # READY=1 and STOPPING=1 of its own, under another pid.
    proc = _start(["run", "--data-dir", data_dir, "--listen",
                   "127.0.0.1:0", "--dim", "8"],
                  notify, tmp_path / "stderr.log")
    try:
        _, pid, _ = notify.wait_for("READY", 120, proc)
        assert pid == proc.pid
        proc.send_signal(signal.SIGTERM)
        notify.wait_for("STOPPING", 30, proc)
        assert _exit_code(proc) == 0, log_text(proc)
    finally:
        _kill(proc)
    # The private server has stopped too: anything it sent is queued.
    while notify.recv(0.2):
        pass
    assert {m[1] for m in notify.messages} == {proc.pid}, notify.messages


def test_unit_verifies(tmp_path):
    # The unit as cmake --install makes it (cmake/install-system.cmake)
    text = (DEPLOY / "embedflow.service.in").read_text() \
        .replace("@EF_UNIT_BINDIR@", "/usr/bin") \
        .replace("@EF_UNIT_SYSCONFDIR@", "/etc")
    assert "@" not in text
    assert re.search(r"^Type=notify$", text, re.M)
    assert re.search(r"^WatchdogSec=\d+", text, re.M)
    assert re.search(r"^StateDirectory=embedflow$", text, re.M)
    # relative paths (data_dir: embedflow-data) land in the state
    # directory, not under /
    assert re.search(r"^WorkingDirectory=/var/lib/embedflow$", text, re.M)
    if not shutil.which("systemd-analyze"):
        pytest.skip("systemd-analyze is not installed")
    # verify wants the ExecStart binary to exist: the one under test
    unit = tmp_path / "embedflow.service"
    unit.write_text(text.replace("/usr/bin/embedflow", EMBEDFLOW_BIN))
    out = subprocess.run(["systemd-analyze", "verify", str(unit)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "embedflow.service" not in out.stderr, out.stderr


def test_sysusers_and_tmpfiles_make_the_user_and_state_dir(tmp_path):
    for tool in ("systemd-sysusers", "systemd-tmpfiles"):
        if not shutil.which(tool):
            pytest.skip(f"{tool} is not installed")
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    out = subprocess.run(["systemd-sysusers", f"--root={root}",
                          str(DEPLOY / "embedflow.sysusers.conf")],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    users = {l.split(":")[0]: l.split(":")
             for l in (root / "etc/passwd").read_text().splitlines()}
    assert "embedflow" in users
    uid, home = int(users["embedflow"][2]), users["embedflow"][5]
    assert home == "/var/lib/embedflow"
    out = subprocess.run(["systemd-tmpfiles", "--create", f"--root={root}",
                          str(DEPLOY / "embedflow.tmpfiles.conf")],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    st = (root / "var/lib/embedflow").stat()
    assert st.st_uid == uid and (st.st_mode & 0o777) == 0o750

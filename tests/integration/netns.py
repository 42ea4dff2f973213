"""Hosts made of Linux network namespaces, for tests of embedflow split
across machines.

    with Network() as net:                 # a bridge on 10.99.X.0/24
        ingest = net.host("ingest", 1)     # namespace + veth, 10.99.X.1
        writer = net.host("writer", 20)
        proc = writer.popen(["embedflow", "run", ...])
        writer.run(["ip", "addr"])

The test process itself stays in the root namespace and reaches every
host through the bridge, whose address is 10.99.X.254 (`net.gateway`):
it is the client, and it can play a foreign machine on the same network.
Unix sockets are files, so a PostgreSQL on a unix socket is reachable
from every host.

Names carry a random tag and the subnet is chosen among the 10.99.X.0/24
not in use on this machine, so tests running at once do not clash.
close() (or leaving the `with`) ends the processes started with popen
(by pid), then removes the namespaces, veth pairs and bridge it made,
whether the test passed or not; an atexit hook does the same if the
interpreter exits first.

`skip_reason()` says why namespaces cannot be used here (not root, no
`ip netns`), or None when they can.
"""
import atexit
import ipaddress
import os
import random
import shutil
import signal
import subprocess

IP = shutil.which("ip") or "/usr/sbin/ip"


def _ip(*args, check=True):
    return subprocess.run([IP, *args], capture_output=True, text=True,
                          check=check, timeout=30)


def skip_reason():
    """Why network namespaces cannot be used here, or None."""
    if os.geteuid() != 0:
        return "network namespace tests need root (CI runs them as root)"
    if not os.path.exists(IP):
        return "`ip` (iproute2) is not installed"
    probe = f"efprobe{os.getpid()}"
    out = _ip("netns", "add", probe, check=False)
    if out.returncode != 0:
        return f"`ip netns add` does not work here: {out.stderr.strip()}"
    _ip("netns", "delete", probe, check=False)
    return None


def _used_subnets():
    """Third octets of the 10.99.X.0/24 networks already on this machine."""
    out = _ip("-o", "-4", "addr", "show", check=False).stdout
    used = set()
    for line in out.splitlines():
        for word in line.split():
            if word.startswith("10.99."):
                net = ipaddress.ip_interface(word).network
                for sub in range(256):
                    if net.overlaps(ipaddress.ip_network(f"10.99.{sub}.0/24")):
                        used.add(sub)
    return used


class Host:
    """One namespace with one address on the network."""

    def __init__(self, network, name, ns, addr):
        self.network = network
        self.name = name
        self.ns = ns          # namespace name
        self.addr = addr      # its address on the bridge

    def command(self, args):
        """args prefixed so that they run inside this namespace."""
        return [IP, "netns", "exec", self.ns, *args]

    def popen(self, args, **kw):
        """Starts args inside the namespace (`ip netns exec` execs, so the
        pid is the command's); close() ends it if it is still running."""
        proc = subprocess.Popen(self.command(args), **kw)
        self.network.processes.append(proc)
        return proc

    def run(self, args, **kw):
        kw.setdefault("capture_output", True)
        kw.setdefault("text", True)
        kw.setdefault("timeout", 60)
        return subprocess.run(self.command(args), **kw)


class Network:
    """A bridge and the hosts attached to it; see the module text."""

    def __init__(self):
        self.tag = "ef%05x" % random.randrange(16 ** 5)
        free = [s for s in range(256) if s not in _used_subnets()]
        if not free:
            raise RuntimeError("every 10.99.X.0/24 is in use")
        self.subnet = random.choice(free)
        self.prefix = f"10.99.{self.subnet}"
        self.gateway = f"{self.prefix}.254"
        self.bridge = f"{self.tag}br"
        self.hosts = []
        self.processes = []
        self._links = []        # root-side veth ends
        self._closed = False
        atexit.register(self.close)
        try:
            _ip("link", "add", self.bridge, "type", "bridge")
            _ip("addr", "add", f"{self.gateway}/24", "dev", self.bridge)
            _ip("link", "set", self.bridge, "up")
        except Exception:
            self.close()
            raise

    def host(self, name, octet):
        """A new namespace attached to the bridge as PREFIX.octet."""
        i = len(self.hosts)
        ns = f"{self.tag}-{name}"
        outer, inner = f"{self.tag}{i}o", f"{self.tag}{i}i"
        addr = f"{self.prefix}.{octet}"
        _ip("netns", "add", ns)
        host = Host(self, name, ns, addr)
        self.hosts.append(host)
        _ip("link", "add", outer, "type", "veth", "peer", "name", inner)
        self._links.append(outer)
        _ip("link", "set", outer, "master", self.bridge)
        _ip("link", "set", outer, "up")
        _ip("link", "set", inner, "netns", ns)
        _ip("-n", ns, "addr", "add", f"{addr}/24", "dev", inner)
        _ip("-n", ns, "link", "set", inner, "up")
        _ip("-n", ns, "link", "set", "lo", "up")
        return host

    def set_link(self, host, up):
        """Cuts (up=False) or restores the cable of host: its veth end on
        the bridge goes down or up; the connections stay open."""
        outer = self._links[self.hosts.index(host)]
        _ip("link", "set", outer, "up" if up else "down")

    def close(self):
        """Ends the processes started in the hosts (SIGKILL after 10 s of
        SIGTERM), removes every namespace, veth and the bridge. Safe to
        call twice."""
        if self._closed:
            return
        self._closed = True
        for proc in self.processes:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.processes:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for host in self.hosts:
            _ip("netns", "delete", host.ns, check=False)
        for link in self._links:
            _ip("link", "delete", link, check=False)
        _ip("link", "delete", self.bridge, check=False)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

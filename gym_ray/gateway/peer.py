"""Who is calling: the process at the other end of a gateway connection, and whether it is a session's program.

A session's URL is readable by every process of the same user (`/proc/<pid>/environ` of the program it
was given to), so the URL alone is not the capability. The gateway binds each session to the program
gym_ray started for it, a process tree (or, for a program called in-process, the gateway's own process),
and answers only connections from there. On the Unix socket (sandboxed programs, through their forwarder)
the kernel names the peer (SO_PEERCRED); on the loopback TCP port, the kernel names the peer's socket
(sock_diag) and it must be an open descriptor of a process of the tree. A connection is checked on its
first request to a session, then remembered.
"""

from __future__ import annotations

import os
import socket
import struct

PEER_KEY = "gym_ray_peer"  # where a connection's Peer sits in the ASGI scope's `state`
_CRED = struct.Struct("3i")  # struct ucred: pid, uid, gid
_NLMSG = struct.Struct("=IHHII")  # struct nlmsghdr: len, type, flags, seq, pid
_NETLINK_SOCK_DIAG, _SOCK_DIAG_BY_FAMILY, _NLM_F_REQUEST = 4, 20, 1
_NO_COOKIE = struct.pack("=III", 0, 0xFFFFFFFF, 0xFFFFFFFF)  # idiag_if, INET_DIAG_NOCOOKIE
_DIAG_INODE_AT = 4 + 48 + 16  # in struct inet_diag_msg: after family..retrans, the sockid, expires..uid


class Peer:
    """The other end of one connection, as the kernel knows it."""

    def __init__(self, sock) -> None:
        self.pid: int | None = None
        self.tcp: tuple[int, tuple, tuple] | None = None  # (address family, peer address, our address)
        self.allowed: set[str] = set()  # sessions this connection was found to belong to
        if sock is None:
            return
        if sock.family == socket.AF_UNIX:
            self.pid = _CRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _CRED.size))[0]
        elif sock.family in (socket.AF_INET, socket.AF_INET6):
            self.tcp = (sock.family, sock.getpeername(), sock.getsockname())

    def inode(self) -> int | None:
        """The inode of the peer's end of a loopback TCP connection: one exact sock_diag query (a read of
        /proc/net/tcp walks the kernel's whole socket table: milliseconds on a big machine), or that read
        where sock_diag is not offered."""
        if self.tcp is None:
            return None
        family, theirs, ours = self.tcp
        try:
            return _diag_inode(family, theirs, ours)
        except OSError:
            return _proc_inode(family, theirs[1], ours[1])


def _diag_inode(family: int, theirs: tuple, ours: tuple) -> int | None:
    """NETLINK_SOCK_DIAG, SOCK_DIAG_BY_FAMILY for the one TCP socket with these ends (linux/inet_diag.h)."""
    def addr(a: tuple) -> bytes:
        return socket.inet_pton(family, a[0]).ljust(16, b"\0")

    sockid = struct.pack("!HH", theirs[1], ours[1]) + addr(theirs) + addr(ours) + _NO_COOKIE
    req = struct.pack("=BBBBI", family, socket.IPPROTO_TCP, 0, 0, 0xFFFFFFFF) + sockid
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, _NETLINK_SOCK_DIAG) as nl:
        nl.send(_NLMSG.pack(_NLMSG.size + len(req), _SOCK_DIAG_BY_FAMILY, _NLM_F_REQUEST, 1, 0) + req)
        data = nl.recv(65536)
    if _NLMSG.unpack_from(data)[1] != _SOCK_DIAG_BY_FAMILY:  # NLMSG_ERROR: no such socket (it closed)
        return None
    return struct.unpack_from("=I", data, _NLMSG.size + _DIAG_INODE_AT)[0]


def _proc_inode(family: int, theirs: int, ours: int) -> int | None:
    local, remote = f":{theirs:04X}", f":{ours:04X}"
    with open("/proc/net/tcp6" if family == socket.AF_INET6 else "/proc/net/tcp") as f:
        next(f)
        for line in f:
            cols = line.split()
            if cols[1].endswith(local) and cols[2].endswith(remote):
                return int(cols[9])
    return None


def process_tree(root: int) -> set[int]:
    """`root` and every process descended from it (a process that left by re-parenting is not)."""
    tree, todo = set(), [root]
    while todo:
        pid = todo.pop()
        if pid in tree:
            continue
        tree.add(pid)
        try:
            for tid in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{tid}/children") as f:
                    todo += map(int, f.read().split())
        except (OSError, ValueError):
            continue
    return tree


def _holds(pid: int, target: str) -> bool:
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for fd in fds:
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") == target:
                return True
        except OSError:
            continue
    return False


def belongs(peer: Peer, owner: int | None) -> bool:
    """Whether the peer is the program of a session owned by the process tree of `owner` (None: this
    process alone, for programs that run in it)."""
    pids = {os.getpid()} if owner is None else process_tree(owner)
    if peer.pid is not None:
        return peer.pid in pids
    inode = peer.inode()
    return inode is not None and any(_holds(pid, f"socket:[{inode}]") for pid in pids)


def peer_protocol(base: type) -> type:
    """uvicorn's HTTP protocol class `base`, putting each connection's Peer in the requests' scope."""

    class PeerProtocol(base):
        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self.app_state = {**self.app_state, PEER_KEY: Peer(transport.get_extra_info("socket"))}

    return PeerProtocol

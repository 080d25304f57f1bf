"""Who is calling: the process at the other end of a gateway connection, and whether it is a session's program.

A session's URL is readable by every process of the same user (`/proc/<pid>/environ` of the program it
was given to), so the URL alone is not the capability. The gateway binds each session to the program
gym_ray started for it, a process tree (or, for a program called in-process, the gateway's own process),
and answers only connections from there. On the Unix socket (sandboxed programs, through their forwarder)
the kernel names the peer (SO_PEERCRED); on the loopback TCP port, the peer's socket is found in
`/proc/net/tcp` and must be an open descriptor of a process of the tree. A connection is checked on its
first request to a session, then remembered.
"""

from __future__ import annotations

import os
import socket
import struct

PEER_KEY = "gym_ray_peer"  # where a connection's Peer sits in the ASGI scope's `state`
_CRED = struct.Struct("3i")  # struct ucred: pid, uid, gid


class Peer:
    """The other end of one connection, as the kernel knows it."""

    def __init__(self, sock) -> None:
        self.pid: int | None = None
        self.tcp: tuple[int, int, int] | None = None  # (address family, peer port, our port)
        self.allowed: set[str] = set()  # sessions this connection was found to belong to
        if sock is None:
            return
        if sock.family == socket.AF_UNIX:
            self.pid = _CRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _CRED.size))[0]
        elif sock.family in (socket.AF_INET, socket.AF_INET6):
            self.tcp = (sock.family, sock.getpeername()[1], sock.getsockname()[1])

    def inode(self) -> str | None:
        """The inode of the peer's end of a loopback TCP connection (its row in /proc/net/tcp)."""
        if self.tcp is None:
            return None
        family, theirs, ours = self.tcp
        local, remote = f":{theirs:04X}", f":{ours:04X}"
        with open("/proc/net/tcp6" if family == socket.AF_INET6 else "/proc/net/tcp") as f:
            next(f)
            for line in f:
                cols = line.split()
                if cols[1].endswith(local) and cols[2].endswith(remote):
                    return cols[9]
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

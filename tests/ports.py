"""A free local port for a server a test starts (a module, not conftest: tests/report has its own conftest)."""

import socket


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]

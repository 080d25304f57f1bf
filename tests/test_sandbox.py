"""The sandbox contains hostile programs (network, escapes, bombs, floods) and reports what happened."""

from __future__ import annotations

import asyncio
import os
import socket
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from gym_ray.sandbox import Sandbox, SandboxLimits, SandboxResult, SandboxStatus, SandboxUnavailable
from gym_ray.sandbox.bwrap import _UID_BASE

LIMITS = SandboxLimits(
    wall_time_s=4, cpu_time_s=2, memory_mb=256, max_processes=16, max_output_bytes=1 << 16, max_file_mb=4
)


@pytest.fixture(scope="module")
def sandbox() -> Sandbox:
    return Sandbox(LIMITS, max_concurrency=2)


def run(sandbox: Sandbox, code: str, **kw) -> SandboxResult:
    return asyncio.run(sandbox.run_python(code, **kw))


def _sandbox_processes() -> list[int]:
    """Live (not zombie) processes of sandbox uids; killed bwraps may wait a moment for init to reap them."""
    pids = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                state = Path(entry.path, "stat").read_text().rsplit(")", 1)[1].split()[0]
                if entry.stat().st_uid >= _UID_BASE and state != "Z":
                    pids.append(int(entry.name))
            except (OSError, IndexError):
                continue
    return pids


def assert_machine_fine(sandbox: Sandbox) -> None:
    """Nothing of the run is left behind, and the sandbox still runs a normal program at once."""
    if os.geteuid() == 0:
        deadline = time.monotonic() + 5
        while _sandbox_processes() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _sandbox_processes() == []
    assert not list(Path(tempfile.gettempdir()).glob("gym_ray_sandbox_*"))
    t0 = time.monotonic()
    after = run(sandbox, "print(6 * 7)")
    assert after.ok and after.stdout == "42\n"
    assert time.monotonic() - t0 < 3


def test_ok_run_with_files_and_stdin(sandbox):
    res = run(
        sandbox,
        "import sys, helper\nprint(helper.double(int(sys.stdin.read())))",
        files={"helper.py": "def double(x):\n    return 2 * x\n"},
        stdin="21",
    )
    assert res.status == SandboxStatus.OK, res
    assert res.stdout == "42\n" and res.exit_code == 0 and not res.truncated


def test_nonzero_exit_is_reported_with_stderr(sandbox):
    res = run(sandbox, "import sys\nprint('boom', file=sys.stderr)\nsys.exit(3)")
    assert res.status == SandboxStatus.NONZERO_EXIT
    assert res.exit_code == 3 and res.stderr == "boom\n" and "code 3" in res.detail


def test_no_network(sandbox):
    with socket.socket() as server:  # a host service on loopback must be out of reach too
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        code = (
            "import socket\n"
            f"for addr in [('1.1.1.1', 53), ('127.0.0.1', {port})]:\n"
            "    try:\n"
            "        socket.create_connection(addr, timeout=1)\n"
            "        print('connected', addr)\n"
            "    except OSError as e:\n"
            "        print('blocked', addr[0], e.errno)\n"
        )
        res = run(sandbox, code)
    assert res.ok, res
    assert "connected" not in res.stdout
    assert res.stdout.count("blocked") == 2
    assert_machine_fine(sandbox)


def test_cannot_write_outside_work_dir(sandbox, tmp_path):
    marker = tmp_path / f"escape-{uuid.uuid4().hex}"
    code = (
        "import os\n"
        f"for path in ['/usr/escape', '/etc/escape', {str(marker)!r}, '/tmp/x']:\n"
        "    try:\n"
        "        open(path, 'w').write('x')\n"
        "        print('wrote', path)\n"
        "    except OSError as e:\n"
        "        print('denied', path, e.errno)\n"
        "open('inside.txt', 'w').write('fine')\n"
        "print('inside', open('inside.txt').read())\n"
    )
    res = run(sandbox, code)
    assert res.ok, res
    assert "denied /usr/escape" in res.stdout and "denied /etc/escape" in res.stdout
    assert f"denied {marker}" in res.stdout  # the host dir does not even exist in there
    assert "wrote /tmp/x" in res.stdout  # the private tmpfs is writable ...
    assert not Path("/tmp/x").exists() or Path("/tmp/x").read_text() != "x"  # ... and not the host's /tmp
    assert not marker.exists()
    assert "inside fine" in res.stdout
    assert_machine_fine(sandbox)


def test_cannot_read_outside_work_dir(sandbox, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("host secret")
    os.chmod(tmp_path, 0o755)
    os.chmod(secret, 0o644)  # readable by anyone on the host: only the mount namespace hides it
    paths = [str(secret), os.path.abspath(__file__), os.path.expanduser("~/.bashrc"), "/etc/shadow"]
    code = (
        f"for path in {paths!r}:\n"
        "    try:\n"
        "        print('read', path, len(open(path).read()))\n"
        "    except OSError as e:\n"
        "        print('denied', path, e.errno)\n"
    )
    res = run(sandbox, code)
    assert res.ok, res
    assert "read " not in res.stdout and res.stdout.count("denied") == len(paths)
    assert "host secret" not in res.stdout + res.stderr


def test_fork_bomb_is_contained(sandbox):
    t0 = time.monotonic()
    res = run(sandbox, "import os\nwhile True:\n    os.fork()")
    assert res.status == SandboxStatus.LIMIT and res.limit == "processes", res
    assert time.monotonic() - t0 < LIMITS.wall_time_s + 2
    assert_machine_fine(sandbox)


def test_persistent_fork_bomb_is_killed_at_the_wall_clock(sandbox):
    code = "import os, time\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        time.sleep(0.01)"
    res = run(sandbox, code, limits=LIMITS.model_copy(update={"wall_time_s": 2.0}))
    assert res.status == SandboxStatus.TIMEOUT and res.limit == "wall_time", res
    assert_machine_fine(sandbox)


def test_memory_bomb_is_contained(sandbox):
    res = run(sandbox, "chunks = []\nwhile True:\n    chunks.append(bytearray(10**7))",
              limits=LIMITS.model_copy(update={"wall_time_s": 30}))  # a loaded machine is slow to fault pages
    assert res.status == SandboxStatus.LIMIT and res.limit == "memory", res
    assert "256 MB" in res.detail
    assert_machine_fine(sandbox)


def test_infinite_loop_hits_the_cpu_limit(sandbox):
    # a generous wall clock: the machine is shared, so 1 s of CPU may take several seconds of real time
    res = run(
        sandbox,
        "while True:\n    pass",
        limits=LIMITS.model_copy(update={"cpu_time_s": 1, "wall_time_s": 30}),
    )
    assert res.status == SandboxStatus.LIMIT and res.limit == "cpu_time", res
    assert res.signal == "SIGXCPU"
    assert_machine_fine(sandbox)


def test_sleeping_program_hits_the_wall_clock(sandbox):
    res = run(sandbox, "import time\ntime.sleep(60)", limits=LIMITS.model_copy(update={"wall_time_s": 1.0}))
    assert res.status == SandboxStatus.TIMEOUT and res.limit == "wall_time", res
    assert res.duration_s < 3


def test_output_flood_is_cut_and_killed(sandbox):
    t0 = time.monotonic()
    res = run(sandbox, "import sys\nsys.stdout.write('x' * 100_000_000)\nsys.stdout.flush()")
    assert res.status == SandboxStatus.LIMIT and res.limit == "output", res.detail
    assert res.truncated and len(res.stdout) == LIMITS.max_output_bytes
    assert time.monotonic() - t0 < 3
    assert_machine_fine(sandbox)


def test_big_file_hits_the_file_size_limit(sandbox):
    res = run(sandbox, "open('big', 'wb').write(b'x' * (8 << 20))")
    assert res.status == SandboxStatus.LIMIT and res.limit == "file_size", res


def test_concurrency_is_bounded(sandbox):
    async def many():
        return await asyncio.gather(*(sandbox.run_python("import time\ntime.sleep(0.5)") for _ in range(4)))

    t0 = time.monotonic()
    results = asyncio.run(many())
    assert all(r.ok for r in results)
    assert time.monotonic() - t0 >= 1.0  # 4 runs, 2 at a time, 0.5 s each


def test_missing_bwrap_is_a_clear_startup_error():
    with pytest.raises(SandboxUnavailable, match="bubblewrap"):
        Sandbox(bwrap="bwrap-that-does-not-exist")


def test_empty_command_and_escaping_file_names_are_rejected(sandbox):
    with pytest.raises(ValueError, match="empty"):
        asyncio.run(sandbox.run([]))
    with pytest.raises(ValueError, match="outside the work dir"):
        asyncio.run(sandbox.run(["/bin/true"], files={"../evil": "x"}))


def test_cancelled_run_leaves_nothing_behind(sandbox):
    async def cancel_midway():
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(sandbox.run_python("import time\ntime.sleep(60)"), 0.5)

    asyncio.run(cancel_midway())
    assert_machine_fine(sandbox)


def test_works_under_uvloop(sandbox):
    """Ray Serve replicas run uvloop, whose subprocess support differs from asyncio's."""
    import uvloop

    async def both():
        return await asyncio.gather(
            sandbox.run_python("import sys\nprint(sys.stdin.read() * 2)", stdin="ab"),
            sandbox.run_python("import os\nwhile True:\n    os.fork()"),
        )

    ok, bomb = uvloop.run(both())
    assert ok.ok and ok.stdout == "abab\n", ok
    assert bomb.status == SandboxStatus.LIMIT and bomb.limit == "processes", bomb
    assert_machine_fine(sandbox)


def test_host_environment_does_not_leak_into_the_sandbox(sandbox, monkeypatch):
    """bwrap is PID 1 in there: its environ and argv must hold nothing of the process that started it."""
    secret = f"hunter2-{uuid.uuid4().hex}"
    monkeypatch.setenv("GYM_RAY_TEST_SECRET", secret)
    code = (
        "import os\n"
        "for pid in [p for p in os.listdir('/proc') if p.isdigit()] + ['self', 'thread-self']:\n"
        "    for name in ('environ', 'cmdline', 'mountinfo', 'cgroup', 'status'):\n"
        "        try:\n"
        "            print(pid, name, open(f'/proc/{pid}/{name}', 'rb').read())\n"
        "        except OSError as e:\n"
        "            print(pid, name, 'denied', e.errno)\n"
        "    for link in ('cwd', 'root', 'exe'):\n"
        "        try:\n"
        "            print(pid, link, os.readlink(f'/proc/{pid}/{link}'))\n"
        "        except OSError as e:\n"
        "            print(pid, link, 'denied', e.errno)\n"
    )
    res = asyncio.run(sandbox.run_python(code, files={"helper.py": "x = 1\n"}))
    assert res.ok, res
    assert "1 environ b'" in res.stdout and "1 cmdline b'" in res.stdout  # PID 1 was readable ...
    assert secret not in res.stdout + res.stderr  # ... and holds none of the host's environment
    pid1_env = next(line for line in res.stdout.splitlines() if line.startswith("1 environ "))
    assert pid1_env == r"1 environ b'PWD=/\x00'"  # sh's PWD only, never the host's working directory
    assert "--setenv" not in res.stdout and "--bind" not in res.stdout  # bwrap read its options from a memfd
    assert tempfile.gettempdir() + "/" not in res.stdout  # /work is a tmpfs, not a bind-mounted host dir
    assert "gym_ray_sandbox" not in res.stdout  # nor the host path of the run's cgroup

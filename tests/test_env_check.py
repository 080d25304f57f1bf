"""`gym-ray env check`: the shipped environments are clean, and each check fails a broken environment with
the row or tool named (exit 1); what cannot be found is exit 2. Every environment is checked in-process."""

from __future__ import annotations

import itertools
import json
import textwrap
from pathlib import Path

import pytest

from gym_ray.cli import main
from gym_ray.envcheck import check_env
from gym_ray.scaffold import init_env

_IDS = itertools.count()
SERVER = '''
from gym_ray import ResourceServer, VerifyResult, final_answer, tool


class Echo(ResourceServer):
    @tool
    def shout(self, text: str) -> str:
        """Repeat the text in capitals.

        Args:
            text: What to repeat.
        """
        return text.upper()

    def verify(self, task, messages):
        return VerifyResult(reward=float(task.verifier_metadata["word"] in (final_answer(messages) or "")))
'''


def row(i: int, name: str, **extra) -> dict:
    return {"task_id": f"t{i}", "env": name, "prompt": [{"role": "user", "content": "Say hello."}],
            "verifier_metadata": {"word": "hello"}, **extra}


def make_env(tmp_path: Path, server: str = SERVER, rows=None) -> tuple[Path, str]:
    """An uninstalled environment package folder (named afresh: each is imported under its own name)."""
    name = f"broken{next(_IDS)}"
    folder = tmp_path / name
    (folder / "data").mkdir(parents=True)
    (folder / "__init__.py").write_text('"""A test environment."""\n')
    (folder / "server.py").write_text(textwrap.dedent(server))
    (folder / "pyproject.toml").write_text(textwrap.dedent(f"""\
        [project]
        name = "gym-ray-env-{name}"
        [project.entry-points."gym_ray.environments"]
        {name} = "gym_ray_env_{name}.server:Echo"
        [tool.setuptools]
        package-dir = {{ gym_ray_env_{name} = "." }}
        """))
    (folder / "config.yaml").write_text(f"envs:\n  {name}:\n    server: {name}\n    data: [data/tasks.jsonl]\n")
    rows = [row(i, name) for i in range(2)] if rows is None else [r(name) if callable(r) else r for r in rows]
    (folder / "data" / "tasks.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder, name


def problems(report) -> list[tuple[str, str, str, str]]:
    return [(f.check, f.target, f.status, f.detail) for f in report.findings if f.status != "ok"]


@pytest.mark.parametrize("env", ["weather", "blackjack", "code"])
def test_shipped_environments_are_clean(env):
    report = check_env(env)
    assert problems(report) == []
    checks = {f.check for f in report.findings}
    assert {"import", "task", "round trip", "determinism", "timing"} <= checks


def test_a_reference_answer_scores_one():
    """math's rows carry `expected_answer`: the round trip verifies it, boxed, with math-verify."""
    report = check_env("math", limit=2)
    trips = [f for f in report.findings if f.check == "round trip"]
    assert [f.detail for f in trips] == ["seed + verify of the verifier_metadata.expected_answer answer: 1"] * 2


def test_a_well_formed_environment_is_clean_and_exit_0(tmp_path, capsys):
    folder, _ = make_env(tmp_path)
    assert main(["env", "check", str(folder)]) == 0
    assert capsys.readouterr().out.rstrip().endswith(f"{folder / 'config.yaml'}: clean")


def test_a_bad_import_names_the_server(tmp_path, capsys):
    folder, name = make_env(tmp_path, "import not_a_module_anywhere\n" + SERVER)
    assert main(["env", "check", str(folder)]) == 1
    out = capsys.readouterr().out
    assert f"gym_ray_env_{name}.server:Echo" in out and "No module named 'not_a_module_anywhere'" in out


def test_an_undocumented_tool_parameter_names_the_tool(tmp_path):
    folder, _ = make_env(tmp_path, SERVER.replace("        Args:\n            text: What to repeat.\n", ""))
    assert problems(check_env(str(folder))) == [
        ("tool", "shout", "error", "parameter 'text' has no description (an `Args:` entry of the docstring)")]


def test_an_untyped_tool_parameter_names_the_tool(tmp_path):
    server = "from typing import Any\n" + SERVER.replace("text: str)", "text: Any)")
    folder, _ = make_env(tmp_path, server)
    assert problems(check_env(str(folder))) == [
        ("tool", "shout", "error", "parameter 'text' has no JSON type (its hint is Any or unannotated)")]


def test_a_row_with_an_unknown_field_is_named(tmp_path):
    folder, _ = make_env(tmp_path, rows=[lambda n: row(0, n), lambda n: row(1, n, difficulty=3)])
    assert problems(check_env(str(folder))) == [("task", "tasks.jsonl:line 2", "error", "unknown field 'difficulty'")]


def test_a_row_naming_a_tool_the_server_lacks_is_named(tmp_path):
    tools = [{"name": "whisper", "description": "Say it quietly."}]
    folder, _ = make_env(tmp_path, rows=[lambda n: row(0, n, tools=tools)])
    assert problems(check_env(str(folder))) == [
        ("task", "tasks.jsonl:line 1 (t0)", "error", "tools ['whisper'] are not tools of the server (it has: ['shout'])")]


def test_a_row_without_the_key_verify_reads_is_named_and_its_round_trip_fails(tmp_path):
    folder, name = make_env(tmp_path, rows=[lambda n: {**row(0, n), "verifier_metadata": {"wrod": "hello"}}])
    found = problems(check_env(str(folder)))
    assert found[0] == ("task", "tasks.jsonl:line 1 (t0)", "warn",
                        "verifier_metadata lacks 'word' (server.py:16), which the server reads; "
                        "verifier_metadata ['wrod'] never read by the server")
    assert found[1][:3] == ("round trip", "t0", "error")
    assert f"{name}: verify failed: KeyError: 'word'" in found[1][3]


def test_a_nondeterministic_verify_is_named(tmp_path):
    server = SERVER.replace("    def verify(self, task, messages):\n",
                            "    def verify(self, task, messages):\n        self.calls = getattr(self, 'calls', 0) + 1\n"
                            "        return self.calls / 10\n")
    folder, _ = make_env(tmp_path, server, rows=[lambda n: row(0, n)])
    [(check, target, status, detail)] = problems(check_env(str(folder)))
    assert (check, target, status) == ("determinism", "t0", "error")
    assert detail.startswith("verify twice on the same input: different: first (0.")


def test_a_verify_that_raises_is_named(tmp_path):
    server = SERVER.replace("    def verify(self, task, messages):\n",
                            "    def verify(self, task, messages):\n        raise RuntimeError('scorer down')\n")
    folder, name = make_env(tmp_path, server, rows=[lambda n: row(0, n)])
    found = problems(check_env(str(folder)))
    assert found[0] == ("round trip", "t0", "error", "verify of the placeholder \"I don't know.\" answer: "
                        f"{name}: verify failed: RuntimeError: scorer down")


@pytest.mark.parametrize(("argv", "says"), [
    (["env", "check", "/no/such/folder"], "/no/such/folder: no such file or folder"),
    (["env", "check", "no_such_env"], "no_such_env: no installed environment of that name"),
    (["env", "check", "weather", "--limit", "0"], "--limit 0: give at least 1"),
])
def test_what_cannot_be_found_is_one_line_and_exit_2(capsys, argv, says):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert says in err and err.count("\n") == 1


def test_a_scripted_policy_that_cannot_load_is_named(tmp_path):
    folder = init_env("unplayable", "step", tmp_path)
    (folder / "policy.py").write_text('"""No reply function here."""\n')
    found = problems(check_env(str(folder)))
    assert found[0][:3] == ("import", "model.script", "error")
    assert "cannot load 'gym_ray_env_unplayable.policy:reply'" in found[0][3]

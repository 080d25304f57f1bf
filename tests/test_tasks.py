"""Task loading: our rows and NeMo Gym rows, JSONL and Parquet, and errors naming file and line/row."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from gym_ray.tasks import TaskLoadError, load_tasks

NEMO_ROW = {
    "responses_create_params": {
        "input": [
            {"role": "developer", "content": "You are a helpful assistant."},
            {"role": "user", "content": [{"type": "input_text", "text": "what's it like in sf?"}]},
        ],
        "tools": [
            {
                "type": "function",
                "name": "get_weather",
                "description": "Get weather",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
                "strict": True,
            }
        ],
    },
    "agent_ref": {"type": "responses_api_agents", "name": "weather"},
    "expected_answer": "B",
    "verifier_metadata": {"unit_tests": {"inputs": ["1"], "outputs": ["2"]}},
    "_ng_task_index": 7,
}


def write_jsonl(path, rows):
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    return path


def test_nemo_gym_row_imports(tmp_path):
    [task] = load_tasks([write_jsonl(tmp_path / "nemo.jsonl", [NEMO_ROW])])
    assert task.env == "weather" and task.task_id == "7"
    assert [m.role for m in task.prompt] == ["developer", "user"]
    assert task.prompt[1].content == "what's it like in sf?"
    assert task.tools[0].name == "get_weather"
    assert task.tools[0].parameters["properties"]["city"]["type"] == "string"
    assert task.verifier_metadata == {"expected_answer": "B", "unit_tests": {"inputs": ["1"], "outputs": ["2"]}}


def test_our_rows_jsonl_and_parquet(tmp_path):
    rows = [
        {"task_id": "a", "env": "math", "prompt": [{"role": "user", "content": "1+1?"}],
         "verifier_metadata": {"answer": "2"}},
        {"env": "math", "prompt": "2+2?", "verifier_metadata": {"answer": "4"}},
    ]
    j = load_tasks([write_jsonl(tmp_path / "t.jsonl", rows)])
    assert [t.task_id for t in j] == ["a", "t-1"]
    assert j[1].prompt[0].content == "2+2?"
    pq.write_table(pa.Table.from_pylist([{**rows[0], "verifier_metadata": json.dumps({})}]), tmp_path / "p.parquet")
    with pytest.raises(TaskLoadError, match=r"p\.parquet: row 0: verifier_metadata"):
        load_tasks([tmp_path / "p.parquet"])
    pq.write_table(pa.Table.from_pylist(rows[:1]), tmp_path / "q.parquet")
    [p] = load_tasks([tmp_path / "q.parquet"])
    assert p == j[0]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", r"line 2: Expecting property name"),
        (json.dumps({"task_id": "x", "env": "math"}), r"line 2: prompt: Field required"),
        (json.dumps({"task_id": "x", "env": "math", "prompt": [{"role": "robot", "content": "?"}]}),
         r"line 2: prompt\.0\.role"),
        (json.dumps({"responses_create_params": {"input": "hi"}}), r"line 2: no environment"),
        (json.dumps(["a", "list"]), r"line 2: expected a JSON object"),
    ],
)
def test_bad_rows_name_file_and_line(tmp_path, line, message):
    good = {"task_id": "ok", "env": "math", "prompt": "hi"}
    path = write_jsonl(tmp_path / "bad.jsonl", [good, line])
    with pytest.raises(TaskLoadError, match=r"bad\.jsonl: " + message):
        load_tasks([path])


def test_duplicate_ids_and_missing_file(tmp_path):
    row = {"task_id": "a", "env": "math", "prompt": "hi"}
    a = write_jsonl(tmp_path / "a.jsonl", [row])
    b = write_jsonl(tmp_path / "b.jsonl", [row])
    with pytest.raises(TaskLoadError, match=r"b\.jsonl: line 1: task_id 'a' of env 'math' already defined at "
                                            r".*a\.jsonl: line 1$"):
        load_tasks([a, b])
    seen: dict[str, str] = {}
    load_tasks([a], seen=seen)  # one `seen` across calls: ids stay unique over several envs' files
    with pytest.raises(TaskLoadError, match=r"b\.jsonl: line 1: .*already defined at .*a\.jsonl: line 1"):
        load_tasks([b], seen=seen)
    with pytest.raises(TaskLoadError, match="task file not found"):
        load_tasks([tmp_path / "none.jsonl"])
    assert len(load_tasks([a], limit=1)) == 1


def test_utf8_bom_is_accepted(tmp_path):
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps({"task_id": "a", "env": "math", "prompt": "hi"}).encode() + b"\n")
    [task] = load_tasks([path])
    assert task.task_id == "a"


def test_bytes_that_are_not_utf8_name_the_line(tmp_path):
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(b'{"task_id": "a", "env": "math", "prompt": "hi"}\n\n{"env": "math", "prompt": "caf\xe9"}\n')
    with pytest.raises(TaskLoadError, match=r"latin1\.jsonl: line 3: not UTF-8 text \(invalid continuation byte: "
                                            r"byte 0xe9\); save the file as UTF-8"):
        load_tasks([path])


def test_corrupt_parquet_and_empty_files_are_named(tmp_path):
    (tmp_path / "bad.parquet").write_bytes(b"PAR1 but not really")
    with pytest.raises(TaskLoadError, match=r"bad\.parquet: not a readable Parquet file: .*magic bytes"):
        load_tasks([tmp_path / "bad.parquet"])
    (tmp_path / "empty.jsonl").write_text("\n  \n")
    with pytest.raises(TaskLoadError, match=r"empty\.jsonl: no task rows"):
        load_tasks([tmp_path / "empty.jsonl"])
    pq.write_table(pa.table({"task_id": pa.array([], pa.string())}), tmp_path / "empty.parquet")
    with pytest.raises(TaskLoadError, match=r"empty\.parquet: no task rows"):
        load_tasks([tmp_path / "empty.parquet"])


def test_row_of_an_unknown_env_names_file_and_line_or_row(tmp_path):
    rows = [{"task_id": "a", "prompt": "hi"}, {"task_id": "b", "env": "nowhere", "prompt": "hi"}]
    path = write_jsonl(tmp_path / "t.jsonl", rows)
    with pytest.raises(TaskLoadError, match=r"t\.jsonl: line 2: env 'nowhere' is not defined in the config "
                                            r"\(envs: math, weather\)"):
        load_tasks([path], default_env="math", envs={"math": 1, "weather": 2})
    pq.write_table(pa.Table.from_pylist([{**r, "env": r.get("env", "math")} for r in rows]), tmp_path / "t.parquet")
    with pytest.raises(TaskLoadError, match=r"t\.parquet: row 1: env 'nowhere'"):
        load_tasks([tmp_path / "t.parquet"], envs=["math"])

"""Environments on a real Ray Serve app: NeMo Gym-style HTTP, the handle client, actors, and load."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import httpx
import pytest
import ray
from fault_helpers import replica_names
from gym_ray_env_weather.server import forecast
from ray import serve

from gym_ray import compat
from gym_ray.config import EnvConfig, load_config
from gym_ray.resources import EnvError
from gym_ray.resources.client import make_env_client
from gym_ray.resources.runtime import SeedError, cap_output
from gym_ray.resources.serve import (
    EnvDeployment,
    HandleEnvClient,
    deploy_env,
    deploy_envs,
    env_serve_options,
)
from gym_ray.serving.failures import DeploymentError
from gym_ray.types import Message, Task, ToolCall

ROOT = Path(__file__).parents[1]


def env_cfg(name: str) -> EnvConfig:
    return load_config(ROOT / "environments" / name / "config.yaml").envs[name]


@pytest.fixture(scope="module")
def apps(serve_http_port):
    names = ("weather", "counter", "blackjack")
    yield dict(zip(names, deploy_envs({name: env_cfg(name) for name in names}), strict=True))
    compat.delete_apps(list(names))


def http(port: int, name: str) -> httpx.Client:
    return httpx.Client(base_url=f"http://127.0.0.1:{port}/{name}", timeout=30)


def nemo_row(city: str) -> dict:
    """A task row the way NeMo Gym's example_single_tool_call stores it."""
    return {
        "responses_create_params": {
            "input": [{"role": "user", "content": f"what's it like in {city}?"}],
            "tools": [
                {"type": "function", "name": "get_weather", "parameters": {"type": "object"}, "strict": True}
            ],
        },
        "verifier_metadata": {"city": city},
    }


def nemo_response(city: str, tool_output: str, answer: str) -> dict:
    return {
        "id": "resp_1",
        "output": [
            {
                "type": "function_call",
                "call_id": "call_1",
                "name": "get_weather",
                "arguments": f'{{"city": "{city}"}}',
            },
            {"type": "function_call_output", "call_id": "call_1", "output": tool_output},
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": answer}]},
        ],
    }


def test_nemo_gym_style_client_drives_weather(apps, serve_http_port):
    """seed_session -> POST /get_weather -> POST /verify, forwarding the session cookie by hand."""
    condition, temp = forecast("Oslo")
    with http(serve_http_port, "weather") as c:
        tools = c.get("/tools").json()
        assert tools[0]["function"]["name"] == "get_weather"
        seeded = c.post("/seed_session", json=nemo_row("Oslo"))
        assert seeded.status_code == 200, seeded.text
        cookies = dict(seeded.cookies)
        c.cookies.clear()  # like NeMo Gym's DummyCookieJar: only what we pass explicitly is sent
        output = c.post("/get_weather", json={"city": "Oslo"}, cookies=cookies).text
        assert output == f"The weather in Oslo is {condition}, {temp} °C."
        right = {
            **nemo_row("Oslo"),
            "response": nemo_response("Oslo", output, f"{condition}, {temp} degrees"),
        }
        verified = c.post("/verify", json=right, cookies=cookies).json()
        assert verified["reward"] == 1.0
        assert verified["reward_components"] == {"called_tool": 1.0, "condition": 1.0, "temperature": 1.0}
        assert verified["responses_create_params"] == right["responses_create_params"]  # the body is echoed
        wrong = {**nemo_row("Oslo"), "response": nemo_response("Oslo", output, "No idea, sorry.")}
        assert c.post("/verify", json=wrong, cookies=cookies).json()["reward"] == 0.0
        # A verifier that raises (a row without the field it reads) is a 500 with the cause, never reward 0.
        no_city = {**wrong, "verifier_metadata": {}}
        failed = c.post("/verify", json=no_city, cookies=cookies)
        assert failed.status_code == 500 and "KeyError" in failed.json()["error"] and "reward" not in failed.json()
        assert c.post("/close_session", cookies=cookies).json()["closed"] is True
        after = c.post("/get_weather", json={"city": "Oslo"}, cookies=cookies)
        assert after.status_code == 404 and after.json()["error"].startswith("no session")


def test_http_counter_sessions_by_cookie_and_header_are_isolated(apps, serve_http_port):
    row = {
        "task_id": "c1",
        "env": "counter",
        "prompt": [{"role": "user", "content": "count"}],
        "verifier_metadata": {"initial_count": 10, "expected_count": 13},
    }
    with http(serve_http_port, "counter") as a, http(serve_http_port, "counter") as b:
        assert a.post("/seed_session", json=row).status_code == 200  # cookie kept by a's jar
        assert b.post("/seed_session", json={**row, "session_id": "bee"}).json() == {"session_id": "bee"}
        b.cookies.clear()
        hb = {"X-Session-Id": "bee"}
        for _ in range(3):
            a.post("/increment", json={})
            b.post("/increment", json={"count": 2}, headers=hb)
        assert a.post("/get_value").text == "13" and b.post("/get_value", headers=hb).text == "16"
        assert a.post("/verify", json={"task": row, "messages": []}).json()["reward"] == 1.0
        vb = b.post("/verify", json={"task": row, "messages": [], "session_id": "bee"}).json()
        assert vb["reward"] == 0.0 and vb["verify_info"]["reason"] == "final count 16, expected 13"


def test_nemo_gym_style_client_drives_counter(apps, serve_http_port):
    """NeMo Gym's session-state example: verifier fields at the top level, the cookie forwarded by hand."""
    row = {
        "responses_create_params": {"input": [{"role": "user", "content": "add 4 to the counter"}]},
        "initial_count": 1,
        "expected_count": 5,
    }
    with http(serve_http_port, "counter") as c:
        jars = []
        for _ in range(2):  # two episodes at once, told apart only by their cookies
            seeded = c.post("/seed_session", json=row)
            assert seeded.status_code == 200, seeded.text
            jars.append(dict(seeded.cookies))
            c.cookies.clear()
        assert jars[0] != jars[1]
        c.post("/increment", json={"count": 4}, cookies=jars[0])
        c.post("/increment", json={"count": 3}, cookies=jars[1])
        call = {"type": "function_call", "call_id": "c1", "name": "increment", "arguments": '{"count": 4}'}
        body = {**row, "response": {"output": [call]}}
        assert c.post("/verify", json=body, cookies=jars[0]).json()["reward"] == 1.0
        second = c.post("/verify", json=body, cookies=jars[1]).json()
        assert second["reward"] == 0.0 and second["verify_info"]["reason"] == "final count 4, expected 5"
        for jar in jars:
            c.post("/close_session", cookies=jar)


def test_http_errors_are_clear(apps, serve_http_port):
    with http(serve_http_port, "counter") as c:
        bad = c.post("/seed_session", json={"task_id": "x", "prompt": []})
        assert (
            bad.status_code == 400
            and "bad task row" in bad.json()["error"]
            and "prompt" in bad.json()["error"]
        )
        row = {"task_id": "x", "prompt": "hi", "verifier_metadata": {"expected_count": 1}}
        c.post("/seed_session", json=row)
        assert c.post("/increment", json={"count": "many"}).text.startswith(
            "Error: invalid arguments for increment"
        )
        assert c.post("/increment", content=b"{not json").text.startswith(
            "Error: invalid arguments for increment"
        )
        fly = c.post("/fly", json={})  # an unknown route is a 404, never a 200 text a client could read as a reply
        assert fly.status_code == 404 and fly.json()["error"] == "no route or tool 'fly' (tools: increment, get_value)"
        assert c.post("/get_value").text == "0"  # the server survived all of that
    with http(serve_http_port, "blackjack") as g:
        assert g.post("/step", json={"action": "<action>hit</action>"}).status_code == 400
        assert g.post("/step", content=b"{oops").status_code == 400
        assert (
            g.post("/reset", content=b"[1, 2]")
            .json()["error"]
            .startswith("reset: bad task row: request body")
        )
        missing = g.post("/step", json={"action": "<action>hit</action>", "session_id": "nope"})
        assert missing.status_code == 404 and "no session 'nope'" in missing.json()["error"]


def test_http_blackjack_reset_and_step(apps, serve_http_port):
    row = {"task_id": "b", "prompt": "play", "verifier_metadata": {"seed": 42}}
    with http(serve_http_port, "blackjack") as c:
        first = c.post("/reset", json=row).json()
        assert first["observation"].startswith("Your hand: ")
        step = c.post("/step", json={"action": "<action>stand</action>"}).json()
        assert step["done"] is True and step["reward"] in (0.0, 0.5, 1.0)
        verified = c.post("/verify", json={"task": row, "messages": []}).json()
        assert verified["reward"] == step["reward"] and verified["verify_info"]["steps"] == 1
        again = c.post("/reset", json=row).json()
        assert again["observation"] == first["observation"]  # seeded deal


def test_handle_client(apps):
    weather = make_env_client("weather", env_cfg("weather"), app_name=apps["weather"])
    blackjack = make_env_client("blackjack", env_cfg("blackjack"), app_name=apps["blackjack"])
    assert isinstance(weather, HandleEnvClient)
    task = Task(
        task_id="w",
        env="weather",
        prompt=[Message(role="user", content="?")],
        verifier_metadata={"city": "Lima"},
    )
    condition, temp = forecast("Lima")

    async def go():
        assert [s.name for s in await weather.tools()] == ["get_weather"]
        await weather.seed_session("h1", task)
        call = ToolCall(name="get_weather", arguments={"city": "Lima"})
        out = await weather.call_tool("h1", call)
        bad = await weather.call_tool("h1", ToolCall(name="get_weather", arguments={}))
        msgs = [
            Message(role="assistant", tool_calls=[call]),
            Message(role="tool", tool_call_id=call.id, content=out),
        ]
        right = await weather.verify(
            "h1", task, [*msgs, Message(role="assistant", content=f"{condition} {temp}")]
        )
        malformed = await weather.verify("h1", task, msgs)
        await weather.close_session("h1")
        with pytest.raises(EnvError, match="no session 'ghost'"):
            await blackjack.step("ghost", "<action>hit</action>")
        bj_task = Task(task_id="b", env="blackjack", prompt=task.prompt, verifier_metadata={"seed": 1})
        obs = await blackjack.reset("h2", bj_task)
        step = await blackjack.step("h2", "<action>stand</action>")
        return out, bad, right, malformed, obs, step

    out, bad, right, malformed, obs, step = asyncio.run(go())
    assert out == f"The weather in Lima is {condition}, {temp} °C."
    assert bad == "Error: invalid arguments for get_weather: city: Field required"
    assert right.reward == 1.0 and malformed.reward == 0.0 and malformed.info["reason"] == "no final answer"
    assert obs.startswith("Your hand:") and step.done


def test_verify_frees_the_session_so_close_needs_no_call_of_its_own(apps):
    client = make_env_client("counter", env_cfg("counter"), app_name=apps["counter"])
    deployment = serve.get_deployment_handle("counter", apps["counter"])
    task = Task(task_id="fold", env="counter", prompt=[Message(role="user", content="count")],
                verifier_metadata={"initial_count": 0, "expected_count": 2})
    sent: list[str] = []

    async def go():
        before = await deployment.num_sessions.remote()
        await client.seed_session("fold-1", task)
        await client.call_tool("fold-1", ToolCall(name="increment", arguments={"count": 2}))
        seeded = await deployment.num_sessions.remote()
        calls = client._calls
        real = calls.call
        calls.call = lambda method, *a, **kw: sent.append(method) or real(method, *a, **kw)
        result = await client.verify("fold-1", task, [])
        verified = await deployment.num_sessions.remote()
        await client.close_session("fold-1")
        with pytest.raises(EnvError, match="no session 'fold-2'"):  # not verified: close goes to the replica
            await client.verify("fold-2", task, [])
        await client.close_session("fold-2")
        return before, seeded, verified, result

    before, seeded, verified, result = asyncio.run(go())
    assert result.reward == 1.0
    assert (seeded, verified) == (before + 1, before)  # verify freed the session on the replica
    assert sent == ["verify", "verify", "close_session"]  # fold-1's close made no call


def test_deploy_env_rejects_a_bad_server_path(serve_http_port):
    with pytest.raises(DeploymentError, match="envs.nope.server: .*cannot import module 'gym_ray_env_nope.server'"):
        deploy_env("nope", EnvConfig(server="gym_ray_env_nope.server:Nope"))


@ray.remote(num_cpus=0)
class EpisodeRunner:
    """Stands in for an agent actor: drives a counter episode through whatever client it was given."""

    def __init__(self, client):
        self.client = client

    async def run(self, sid: str, steps: list[int]) -> float:
        t = Task(
            task_id=sid,
            env="counter",
            prompt=[Message(role="user", content="count")],
            verifier_metadata={"initial_count": 0, "expected_count": sum(steps)},
        )
        await self.client.seed_session(sid, t)
        for s in steps:
            await self.client.call_tool(sid, ToolCall(name="increment", arguments={"count": s}))
        result = await self.client.verify(sid, t, [])
        await self.client.close_session(sid)
        return result.reward


def test_both_clients_work_inside_a_ray_actor(apps):
    cfg = env_cfg("counter")
    local = EpisodeRunner.remote(make_env_client("counter", cfg))
    handle = EpisodeRunner.remote(make_env_client("counter", cfg, app_name=apps["counter"]))
    refs = [
        r.run.remote(f"actor-{i}-{j}", [j, 2, -1]) for i, r in enumerate((local, handle)) for j in range(20)
    ]
    assert ray.get(refs, timeout=120) == [1.0] * 40
    for actor in (local, handle):
        ray.kill(actor)


def test_a_seed_travels_with_the_sessions_first_call(apps):
    """No request of its own: the replica seeds, then runs the first call; a seed that fails raises
    `SeedError` from that call; a session that never made a call costs no request at all."""
    client = make_env_client("counter", env_cfg("counter"), app_name=apps["counter"])
    deployment = serve.get_deployment_handle("counter", apps["counter"])

    def task(sid: str, initial) -> Task:
        return Task(task_id=sid, env="counter", prompt=[Message(role="user", content="count")],
                    verifier_metadata={"initial_count": initial, "expected_count": 5})

    sent: list[str] = []

    async def go():
        await client.tools()
        real = client._calls.call
        client._calls.call = lambda method, *a, **kw: sent.append(method) or real(method, *a, **kw)
        before = await deployment.num_sessions.remote()
        await client.seed_session("lazy-1", task("lazy-1", 3))
        unsent = (list(sent), await deployment.num_sessions.remote())
        out = await client.call_tool("lazy-1", ToolCall(name="increment", arguments={"count": 2}))
        seeded = await deployment.num_sessions.remote()
        reward = (await client.verify("lazy-1", task("lazy-1", 3), [])).reward
        await client.close_session("lazy-1")
        await client.seed_session("lazy-2", task("lazy-2", 0))
        await client.close_session("lazy-2")  # e.g. the first generate failed
        await client.seed_session("lazy-3", task("lazy-3", "three"))
        with pytest.raises(SeedError, match="seed failed for task lazy-3: ValueError"):
            await client.call_tool("lazy-3", ToolCall(name="increment", arguments={}))
        await client.close_session("lazy-3")
        return before, unsent, out, seeded, reward, await deployment.num_sessions.remote()

    before, unsent, out, seeded, reward, after = asyncio.run(go())
    assert unsent == ([], before) and out == "The counter is now 5." and seeded == before + 1 and reward == 1.0
    assert sent == ["seeded", "verify", "seeded", "close_session"] and after == before


def test_load_1000_concurrent_counter_sessions_through_the_handle(apps):
    client = make_env_client("counter", env_cfg("counter"), app_name=apps["counter"])
    deployment = serve.get_deployment_handle("counter", apps["counter"])
    sessions_before = deployment.num_sessions.remote().result(timeout_s=30)
    rng = random.Random(3)
    plans = [[rng.randint(-9, 9) for _ in range(3)] for _ in range(1000)]

    async def episode(i: int, steps: list[int]) -> tuple[float, str, str | None]:
        sid = f"load-{i}"
        t = Task(
            task_id=sid,
            env="counter",
            prompt=[Message(role="user", content="count")],
            verifier_metadata={"initial_count": i, "expected_count": i + sum(steps)},
        )
        await client.seed_session(sid, t)
        for s in steps:
            out = await client.call_tool(sid, ToolCall(name="increment", arguments={"count": s}))
            assert not out.startswith("Error"), out
        value = await client.call_tool(sid, ToolCall(name="get_value"))
        result = await client.verify(sid, t, [])
        await client.close_session(sid)
        return result.reward, value, result.error

    async def go():
        return await asyncio.gather(*(episode(i, p) for i, p in enumerate(plans)))

    results = asyncio.run(go())
    assert [r for r, _, _ in results] == [1.0] * 1000
    assert [v for _, v, _ in results] == [str(i + sum(p)) for i, p in enumerate(plans)]
    assert all(e is None for _, _, e in results)
    assert deployment.num_sessions.remote().result(timeout_s=30) == sessions_before  # all 1,000 were closed


@ray.remote(num_cpus=0)
class PoolUser:
    async def run(self) -> tuple[int, str]:
        import time

        from gym_ray.resources import run_in_process
        from gym_ray.resources.pool import ProcessTimeout

        value = await run_in_process(pow, 12, 2, timeout_s=60)  # builtins: importable in any worker
        try:
            await run_in_process(time.sleep, 30, timeout_s=0.5)
        except ProcessTimeout as e:
            return value, str(e)
        return value, "no timeout"


def test_run_in_process_works_inside_a_ray_actor(ray_cluster):
    actor = PoolUser.remote()
    value, timeout = ray.get(actor.run.remote(), timeout=120)
    ray.kill(actor)
    assert value == 144 and "sleep ran longer than 0.5 s" in timeout


def test_sessions_stick_to_one_of_several_replicas(serve_http_port):
    """Two replicas, each with its own sessions: every call of an episode must reach the same one."""
    cfg = env_cfg("counter").model_copy(update={"num_replicas": 2})
    app = deploy_env("counter_x2", cfg, route_prefix="/counter_x2")
    client = make_env_client("counter_x2", cfg, app_name=app)
    assert client.sticky

    tasks = [
        Task(
            task_id=f"x{i}",
            env="counter",
            prompt=[Message(role="user", content="count")],
            verifier_metadata={"initial_count": 0, "expected_count": 3},
        )
        for i in range(200)
    ]

    async def play(t: Task) -> None:
        await client.seed_session(t.task_id, t)
        for _ in range(3):
            out = await client.call_tool(t.task_id, ToolCall(name="increment", arguments={}))
            assert not out.startswith("Error"), out

    async def go():
        await asyncio.gather(*(play(t) for t in tasks))
        # counted before verify, which frees the session
        handle = serve.get_deployment_handle("counter_x2", app)
        counts = [await handle.num_sessions.remote() for _ in range(20)]
        rewards = await asyncio.gather(*(client.verify(t.task_id, t, []) for t in tasks))
        return counts, [r.reward for r in rewards]

    try:
        counts, rewards = asyncio.run(go())
        assert rewards == [1.0] * 200
        # both replicas hold some of the sessions (an even split shows up as one distinct count)
        assert 0 not in counts and (
            set(counts) == {100} or (len(set(counts)) == 2 and sum(set(counts)) == 200)
        )
        row = {"task_id": "h", "prompt": "count", "verifier_metadata": {"expected_count": 2}}
        with http(serve_http_port, "counter_x2") as c:
            for i in range(10):
                headers = {"X-Session-Id": f"http-{i}"}
                c.cookies.clear()
                c.post("/seed_session", json=row, headers=headers)
                c.post("/increment", json={"count": 2}, headers=headers)
                assert (
                    c.post("/verify", json={"task": row, "messages": []}, headers=headers).json()["reward"]
                    == 1.0
                )
    finally:
        serve.delete(app)


@pytest.mark.slow  # starts Ray and Serve
def test_collect_refuses_an_unrouted_config_for_a_multi_replica_env_app(serve_http_port):
    """`gym-ray collect` attaching to a running env app with 2 replicas: a run config that does not say so
    would spread a session's calls over both replicas (sessions lost), so it is refused, naming the option."""
    from gym_ray.config import validate_config
    from gym_ray.launch.deploy import running_apps
    from gym_ray.resources.serve import deploy_env

    env = {"server": "gym_ray_env_weather.server:Weather", "hosting": "serve"}
    app = deploy_env("weather_pair", EnvConfig(**{**env, "num_replicas": 2}))
    try:
        run = {"model": {"kind": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "m"},
               "envs": {"weather_pair": env}}
        with pytest.raises(RuntimeError, match=r"envs\.weather_pair: .*2 replicas.*envs\.weather_pair\.num_replicas"):
            running_apps(validate_config(run))
        run["envs"]["weather_pair"] = {**env, "num_replicas": 2}
        assert running_apps(validate_config(run)) == {"weather_pair": "weather_pair"}
    finally:
        serve.delete(app)


@pytest.mark.slow  # starts Ray and Serve, kills a replica
def test_a_dead_replica_loses_only_its_own_sessions(serve_http_port):
    """Two replicas; one is killed mid-episode. Its sessions fail with an error (never a reward, never
    another session's state); the other replica's finish right; their re-runs finish right."""
    from gym_ray.serving.batch import REPLICA_KEY_PREFIX

    cfg = env_cfg("counter").model_copy(update={"num_replicas": 2})
    app = deploy_env("counter_kill", cfg, route_prefix="/counter_kill")
    client = make_env_client("counter_kill", cfg, app_name=app)

    def task(sid: str) -> Task:
        return Task(task_id=sid, env="counter", prompt=[Message(role="user", content="count")],
                    verifier_metadata={"initial_count": 0, "expected_count": 3})

    async def start(sid: str) -> None:
        await client.seed_session(sid, task(sid))
        await client.call_tool(sid, ToolCall(name="increment", arguments={}))

    async def finish(sid: str) -> float:
        for _ in range(2):
            out = await client.call_tool(sid, ToolCall(name="increment", arguments={}))
            assert not out.startswith("Error"), out
        return (await client.verify(sid, task(sid), [])).reward

    async def run(coros):
        return await asyncio.gather(*coros, return_exceptions=True)

    try:
        sids = [f"k{i}" for i in range(100)]
        loop = asyncio.new_event_loop()
        loop.run_until_complete(run(start(s) for s in sids))
        homes = dict(client._calls._homes)  # where each session lives, as the client learnt it
        victim = homes["k0"]
        lost = {s for s in sids if homes[s] == victim}
        assert 0 < len(lost) < len(sids)  # new sessions went to both replicas
        [name] = [n for n in replica_names(app) if n.endswith("#" + victim.removeprefix(REPLICA_KEY_PREFIX))]
        ray.kill(ray.get_actor(name, namespace="serve"), no_restart=True)
        outs = dict(zip(sids, loop.run_until_complete(run(finish(s) for s in sids)), strict=True))
        assert all(outs[s] == 1.0 for s in sids if s not in lost), outs
        assert all(isinstance(outs[s], Exception) for s in lost), {s: outs[s] for s in lost}
        reruns = [f"re-{s}" for s in sorted(lost)]
        loop.run_until_complete(run(start(s) for s in reruns))
        assert loop.run_until_complete(run(finish(s) for s in reruns)) == [1.0] * len(reruns)
        loop.close()
    finally:
        serve.delete(app)


# --- One call's size fails no other call of its coalesced batch (Serve's gRPC limit is 4 MiB a message) ---
HUGE = 5_000_000  # characters: over the transport's limit on its own


def _gather_in_one_batch(*coros):
    """Calls made in one event-loop iteration share one `call_batch` request."""

    async def go():
        return await asyncio.gather(*coros, return_exceptions=True)

    return asyncio.run(go())


@pytest.fixture(scope="module")
def flood_app(serve_http_port):
    """A tool whose answer is as long as the task says, behind a cap of 3,000,000 characters."""
    cfg = EnvConfig(server="hostile_envs:Flood", agent={"max_tool_output_chars": 3_000_000})
    tests_dir = {"env_vars": {"PYTHONPATH": str(Path(__file__).parent)}}  # the replica imports hostile_envs
    options = {**env_serve_options("flood", cfg), "ray_actor_options": {"num_cpus": 0, "runtime_env": tests_dir}}
    serve.run(EnvDeployment.options(**options).bind("flood", cfg.model_dump()), name="flood", route_prefix="/flood")
    yield "flood", cfg
    serve.delete("flood")


def test_an_answer_over_the_transport_limit_is_capped_on_the_replica_and_fails_no_other_call(flood_app):
    """One answer of 5 MB (cut there to the run's cap), two of 2 MB each within the cap (7 MB together) and
    five small ones in one batch: each call gets its own whole answer; none fails."""
    app, cfg = flood_app
    client = make_env_client("flood", cfg, app_name=app)
    sizes = [HUGE, 2_000_000, 2_000_000, *(100 + i for i in range(5))]
    for i, size in enumerate(sizes):
        task = Task(task_id=f"f{i}", env="flood", prompt=[Message(role="user", content="dump")], verifier_metadata={"size": size})
        asyncio.run(client.seed_session(f"f{i}", task))
    outs = _gather_in_one_batch(*(client.call_tool(f"f{i}", ToolCall(name="dump")) for i in range(len(sizes))))
    assert [type(o).__name__ for o in outs] == ["str"] * len(sizes), [o for o in outs if not isinstance(o, str)]
    capped, note = outs[0], f"\n[gym_ray: output truncated to 3000000 of {HUGE} characters]"
    assert capped == "x" * 3_000_000 + note
    assert cap_output(capped, 3_000_000) == (capped, True)  # the agent keeps the replica's cut, counted
    assert outs[1:] == ["x" * size for size in sizes[1:]]
    _gather_in_one_batch(*(client.close_session(f"f{i}") for i in range(len(sizes))))


def test_a_huge_tool_argument_fails_no_other_call_and_its_answer_is_capped(apps):
    """A 5 MB city: the request is over the limit, and so would its answer be. Every call of the batch
    gets its own forecast; the big one's answer is cut on the replica to the agent's cap (16,384)."""
    client = make_env_client("weather", env_cfg("weather"), app_name=apps["weather"])
    cities = ["Oslo", "Lima", "Cairo", "Oslo" + " " * HUGE, "Quito", "Perth", "Riga", "Hanoi"]
    for i in range(len(cities)):
        task = Task(task_id=f"big-arg-{i}", env="weather", prompt=[Message(role="user", content="?")], verifier_metadata={"city": "Oslo"})
        asyncio.run(client.seed_session(f"big-arg-{i}", task))
    outs = _gather_in_one_batch(*(client.call_tool(f"big-arg-{i}", ToolCall(name="get_weather",
                                                                            arguments={"city": c}))
                                  for i, c in enumerate(cities)))
    assert all(isinstance(o, str) for o in outs), [o for o in outs if not isinstance(o, str)]
    expected = ["The weather in {} is {}, {} °C.".format(c, *forecast(c)) for c in cities]
    assert [o for i, o in enumerate(outs) if i != 3] == [e for i, e in enumerate(expected) if i != 3]
    assert outs[3] == expected[3][:16384] + f"\n[gym_ray: output truncated to 16384 of {len(expected[3])} characters]"
    _gather_in_one_batch(*(client.close_session(f"big-arg-{i}") for i in range(len(cities))))


def test_a_batch_resent_for_its_size_runs_no_call_twice_and_verify_is_isolated_too(apps):
    """Counter sessions: a batch of increments with one 5 MB argument, then a batch of verifies with one
    5 MB transcript. Every other counter moved exactly once and every verdict is its own."""
    client = make_env_client("counter", env_cfg("counter"), app_name=apps["counter"])
    n, big = 8, 5
    tasks = [Task(task_id=f"once-{i}", env="counter", prompt=[Message(role="user", content="count")],
                  verifier_metadata={"initial_count": i, "expected_count": i + 1}) for i in range(n)]
    for t in tasks:
        asyncio.run(client.seed_session(t.task_id, t))
    padded = {"count": 1, "pad": "x" * HUGE}
    outs = _gather_in_one_batch(*(client.call_tool(t.task_id, ToolCall(name="increment",
                                                                       arguments=padded if i == big else {}))
                                  for i, t in enumerate(tasks)))
    assert outs[big] == "Error: invalid arguments for increment: pad: unexpected argument"
    assert [o for i, o in enumerate(outs) if i != big] == [f"The counter is now {i + 1}." for i in range(n) if i != big]
    values = _gather_in_one_batch(*(client.call_tool(t.task_id, ToolCall(name="get_value")) for t in tasks))
    assert values == [str(i if i == big else i + 1) for i in range(n)]  # no increment ran twice
    transcript = [Message(role="user", content="count"), Message(role="assistant", content="y" * HUGE)]
    verdicts = _gather_in_one_batch(*(client.verify(t.task_id, t, transcript if i == big else [])
                                      for i, t in enumerate(tasks)))
    assert [v.reward for v in verdicts] == [0.0 if i == big else 1.0 for i in range(n)], verdicts
    assert verdicts[big].info["reason"] == "increment was never called"  # its own verdict, on its own state

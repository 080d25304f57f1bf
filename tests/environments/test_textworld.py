"""textworld: the generator's own walkthroughs, played through the env's client, win with full score; no-op,
garbled and interpreter commands score 0; burning an ingredient loses a cooking game; a game is the same for
the same row; every episode's interpreter is unloaded once its session closes; bad rows are clear errors."""

from __future__ import annotations

import asyncio
import filecmp
from concurrent.futures import ThreadPoolExecutor

import pytest

pytest.importorskip("textworld")
pytest.importorskip("jericho")

from env_helpers import ENVIRONMENTS, play_all  # noqa: E402
from gym_ray_env_textworld.games import ensure_game, game_path, parse_settings, walkthrough  # noqa: E402
from gym_ray_env_textworld.server import FOLD_SEEDS, GAMES  # noqa: E402

from gym_ray.config import load_config  # noqa: E402
from gym_ray.resources import EnvError  # noqa: E402
from gym_ray.resources.client import make_env_client  # noqa: E402
from gym_ray.tasks import load_tasks  # noqa: E402
from gym_ray.types import Task  # noqa: E402

DATA = ENVIRONMENTS / "textworld" / "data"
# jericho warns that it knows no TextWorld game's score location (the server ignores it; pytest resets filters).
pytestmark = pytest.mark.filterwarnings("ignore::jericho.UnsupportedGameWarning")


def row_game(task: Task) -> tuple[str, dict, int]:
    m = task.verifier_metadata
    return m["challenge"], parse_settings(m["settings"]), m["seed"]


@pytest.fixture(scope="module")
def games(tmp_path_factory):
    """(cache dir, picked tasks): the first test-fold game of each challenge and the first train-fold cooking
    game, generated once (two at a time) for the whole file."""
    cache = tmp_path_factory.mktemp("textworld-cache")
    test, train = load_tasks([DATA / "test.parquet"]), load_tasks([DATA / "train.parquet"])
    picked = [next(t for t in test if t.verifier_metadata["challenge"] == c) for c in GAMES]
    picked.append(next(t for t in train if t.verifier_metadata["challenge"] == "tw-cooking"))
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(lambda t: ensure_game(*row_game(t), cache), picked))
    return cache, picked


def client(cache, *overrides: str):
    cfg = load_config(ENVIRONMENTS / "textworld" / "config.yaml",
                      [f"envs.textworld.config.cache_dir={cache}", *overrides]).envs["textworld"]
    return make_env_client("textworld", cfg)


def interpreters() -> int:
    """Loaded copies of jericho's libfrotz in this process (each game loads its own)."""
    with open("/proc/self/maps") as maps:
        return len({line.split()[-1] for line in maps if "libfrotz" in line})


def test_folds_are_seed_ranges_with_the_challenges_own_splits():
    for fold, low in FOLD_SEEDS.items():
        tasks = load_tasks([DATA / f"{fold}.parquet"])
        for challenge in GAMES:
            rows = [t.verifier_metadata for t in tasks if t.verifier_metadata["challenge"] == challenge]
            assert sorted(m["seed"] for m in rows) == list(range(low, low + 1000)), (fold, challenge)
            assert {m["split"] for m in rows} == {fold}
            settings = [parse_settings(m["settings"]) for m in rows]
            if challenge == "tw-cooking":
                assert {s["split"] for s in settings} == {"valid" if fold == "dev" else fold}
            if challenge == "tw-simple":
                assert {s["test"] for s in settings} == {fold != "train"}


def test_walkthroughs_win_no_op_and_garbled_score_zero_and_interpreters_unload(games):
    cache, picked = games
    env = client(cache)
    paths = [walkthrough(game_path(*row_game(t), cache)) for t in picked]
    before = interpreters()
    runs = [(f"gold{i}", t, p) for i, (t, p) in enumerate(zip(picked, paths, strict=True))]
    runs += [(f"garbled{i}", t, [" ".join(w[::-1] for w in a.split()) for a in p])
             for i, (t, p) in enumerate(zip(picked, paths, strict=True))]
    runs += [(f"noop{i}", t, ["look", "inventory", "wait", "restart", "quit", ""]) for i, t in enumerate(picked)]
    results = play_all(env, runs, together=True)
    assert interpreters() == before, "a game's interpreter outlived its session"
    for (sid, task, _), (first, steps, result) in zip(runs, results, strict=True):
        assert first.strip() and "$$" not in first and result.error is None, (sid, task.task_id)
        last = steps[-1]
        if sid.startswith("gold"):
            assert last.done and last.info["won"] and last.info["score"] == last.info["max_score"], task.task_id
            assert result.reward == 1.0 and result.components == {"score": 1.0, "won": 1.0}, (task.task_id, result)
            assert sum(s.reward for s in steps) == 1.0, [s.reward for s in steps]
        else:
            assert result.reward == 0.0 and not last.info["won"] and not last.done, (sid, task.task_id, result)
            assert result.components == {"score": 0.0, "won": 0.0}
            assert all(s.reward == 0.0 for s in steps)
    noop = results[2 * len(picked)][1]
    assert noop[3].observation == "`restart` is not available in this game.", noop[3]
    assert len(results) == 3 * len(picked) == 15


def test_burning_an_ingredient_loses_a_cooking_game_and_step_limit_stops(games):
    cache, picked = games
    cooking = picked[0]
    path = walkthrough(game_path(*row_game(cooking), cache))
    cook = next(i for i, a in enumerate(path) if a.startswith("cook "))  # cooked twice, the food burns
    (_, steps, result), = play_all(client(cache), [("lose", cooking, [*path[:cook + 1], path[cook]])])
    assert steps[-1].done and steps[-1].info["lost"] and not steps[-1].info["won"], steps[-1]
    assert 0.0 < result.reward < 1.0 and result.reward == steps[-1].info["score"] / steps[-1].info["max_score"]
    assert result.components["won"] == 0.0 and result.info["lost"]
    assert sum(s.reward for s in steps) == pytest.approx(result.reward)
    (_, steps, result), = play_all(client(cache, "envs.textworld.config.step_limit=2"), [("limit", cooking, path)])
    assert len(steps) == 2 and steps[-1].done and not steps[-1].info["won"], steps


def test_the_same_row_makes_the_same_game(games, tmp_path):
    cache, picked = games
    coin = next(t for t in picked if t.verifier_metadata["challenge"] == "tw-coin_collector")
    again = ensure_game(*row_game(coin), tmp_path)
    first = game_path(*row_game(coin), cache)
    assert again.relative_to(tmp_path) == first.relative_to(cache)
    for suffix in (".z8", ".json"):
        assert filecmp.cmp(first.with_suffix(suffix), again.with_suffix(suffix), shallow=False), suffix


@pytest.mark.parametrize(("meta", "error"), [
    ({"challenge": "tw-coin_collector"}, "task bad: verifier_metadata needs seed"),
    ({"challenge": "tw-zork", "seed": 1}, "task bad: unknown challenge 'tw-zork'"),
    ({"challenge": "tw-coin_collector", "seed": 1, "settings": "{}"}, "task bad: tw-coin_collector: settings need level"),
    ({"challenge": "tw-cooking", "seed": 1, "settings": '{"rooms": 3}'}, "task bad: tw-cooking: unknown settings rooms"),
])
def test_bad_row_is_an_env_error_naming_the_field(tmp_path, meta, error):
    env = client(tmp_path)
    bad = Task(task_id="bad", env="textworld", prompt=[{"role": "system", "content": "x"}], verifier_metadata=meta)

    async def go():
        try:
            await env.reset("bad", bad)
        finally:
            await env.close_session("bad")

    with pytest.raises(EnvError, match=error):
        asyncio.run(go())


def test_list_commands_appends_the_games_admissible_commands(games):
    cache, picked = games
    coin = next(t for t in picked if t.verifier_metadata["challenge"] == "tw-coin_collector")
    first_move = walkthrough(game_path(*row_game(coin), cache))[0]
    (first, steps, _), = play_all(client(cache, "envs.textworld.config.list_commands=true"), [("cmds", coin, ["look"])])
    assert first.endswith("inventory, look") and first_move in first.rsplit("Available commands:", 1)[1]
    assert "Available commands:" in steps[0].observation

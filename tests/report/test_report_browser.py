"""report.html in a real headless Chromium (Debian's, driven by Playwright): it loads from file:// with no
console error, every plot renders, the filters select what pandas selects on the Parquet rows, and an opened
rollout's token view is the row's token ids and loss mask. Screenshots go to runs/test-screenshots/."""

from __future__ import annotations

import io
import json
import shutil
import time
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import report_runs
from playwright.sync_api import sync_playwright

from gym_ray.report.finish import finish_run, write_report
from gym_ray.rundir import part_files, read_rollout_table
from gym_ray.types import rollouts_from_arrow

SHOTS = Path(__file__).resolve().parents[2] / "runs" / "test-screenshots"
PLOTS = ["reward", "passk", "tokens", "latency", "status", "components", "spread", "throughput"]


@pytest.fixture(scope="module")
def run_dir(mixed_run) -> Path:
    return mixed_run


@pytest.fixture(scope="module")
def browser():
    chromium = shutil.which("chromium")
    assert chromium, "Debian's chromium is missing: scripts/install.sh installs it"
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium, headless=True, args=["--no-sandbox"])
        yield b
        b.close()


def _open(browser, path: Path):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("request", lambda r: errors.append(f"network request {r.url}") if not r.url.startswith("file:") else None)
    page.goto(path.as_uri())
    return page, errors


def test_report_loads_plots_filters_and_token_view_matches_parquet(run_dir, browser):
    printed = io.StringIO()
    report = finish_run(run_dir, out=printed)
    assert report is not None and f"report: {report}" in printed.getvalue()
    df = pd.read_parquet(run_dir)
    SHOTS.mkdir(parents=True, exist_ok=True)
    page, errors = _open(browser, report)

    for pid in PLOTS:
        svg = page.locator(f"#plot-{pid} svg")
        box = svg.bounding_box()
        assert box and box["width"] > 200 and box["height"] > 100, pid
        assert svg.locator("path").count() > 3, pid  # axes, ticks and the data
    assert page.locator("#count").inner_text() == f"{len(df)} of {len(df)} rows"
    page.screenshot(path=str(SHOTS / "report-full.png"), full_page=True)

    page.select_option("#f-status", "ok")
    page.fill("#f-rmin", "1")
    want = df[(df.status == "ok") & (df.reward >= 1)]
    assert 0 < len(want) < len(df)
    assert page.locator("#count").inner_text() == f"{len(want)} of {len(df)} rows"
    shown = page.locator("#rows tr")
    assert shown.count() == min(50, len(want))
    assert set(shown.evaluate_all("rows => rows.map(r => r.dataset.rollout)")) <= set(want.rollout_id)
    page.fill("#f-task", "weather-2")
    assert page.locator("#count").inner_text() == f"{len(want[want.task_id == 'weather-2'])} of {len(df)} rows"

    first = page.locator("#rows tr").first
    rollout_id = first.get_attribute("data-rollout")
    first.click()
    row = df[df.rollout_id == rollout_id].iloc[0]
    tokens = page.locator("#tokens .tok[data-id]")
    ids = tokens.evaluate_all("t => t.map(x => Number(x.dataset.id))")
    mask = tokens.evaluate_all("t => t.map(x => Number(x.dataset.mask))")
    assert ids == list(row.response_token_ids) and mask == list(row.response_loss_mask)
    assert page.locator("#tokens .fin").all_inner_texts() == list(row.call_finish_reasons)
    assert page.locator("#tokens .span-start").count() == len(row.gen_span_starts)
    roles = page.locator("#conversation .msg .role").all_inner_texts()
    assert [r.split()[0].lower() for r in roles][-3:] == ["assistant", "tool", "assistant"]
    assert "°C" in page.locator("#conversation").inner_text()
    page.check("#show-prompt")
    assert page.locator("#tokens .tok.prompt").count() == len(row.prompt_token_ids)
    page.locator("#detail").screenshot(path=str(SHOTS / "report-rollout.png"))
    assert errors == []
    page.close()


# `<!--<script>` in a script block makes the HTML parser read the `</script>` after it as text: the data block
# would swallow the browser's own script. The rest is what a page must never run or follow.
HOSTILE = ('<!--<script>window.pwned = 1</script><img src=x onerror="window.pwned = 2">'
           '<a href="javascript:window.pwned = 3">click</a></script><script>window.pwned = 4</script>')


def test_a_reply_that_looks_like_markup_stays_text_and_the_browser_runs(run_dir, browser, tmp_path):
    rows = rollouts_from_arrow(read_rollout_table(run_dir))
    messages = json.loads(rows[0].messages_json)
    messages[-1]["content"] = HOSTILE
    rows[0] = rows[0].model_copy(update={"messages_json": json.dumps(messages)})
    hostile = tmp_path / "hostile"
    shutil.copytree(run_dir / ".gym_ray", hostile / ".gym_ray")
    report_runs.write_rows(hostile, rows)
    page, errors = _open(browser, write_report(hostile, tmp_path / "hostile.html"))

    assert page.locator("#count").inner_text() == f"{len(rows)} of {len(rows)} rows"
    page.locator(f"#rows tr[data-rollout='{rows[0].rollout_id}']").click()
    conversation = page.locator("#conversation")
    assert HOSTILE in conversation.inner_text()
    assert conversation.locator("script, img, a").count() == 0
    assert page.evaluate("window.pwned") is None
    assert errors == []
    page.close()


@pytest.mark.slow  # a minute on this 2-core machine, most of it building the report
def test_report_of_20k_rows_stays_responsive(run_dir, browser, tmp_path):
    """20,000 rows: the page opens, filters and pages at once; only the sample carries tokens."""
    big = tmp_path / "big"
    big.mkdir()
    base = pq.read_table(part_files(run_dir)).combine_chunks()
    copies = -(-20_000 // base.num_rows)
    parts = []
    for c in range(copies):
        t = base
        for col in ("rollout_id", "group_id", "task_id"):
            t = t.set_column(t.schema.get_field_index(col), col,
                             pc.binary_join_element_wise(t[col], pa.scalar(f"~{c}"), ""))
        parts.append(t)
    table = pa.concat_tables(parts).slice(0, 20_000)
    pq.write_table(table, big / "part-000000-00000000.parquet")
    shutil.copytree(run_dir / ".gym_ray", big / ".gym_ray")
    t0 = time.monotonic()
    report = write_report(big, tmp_path / "big.html")
    built = time.monotonic() - t0
    size = report.stat().st_size
    assert size < 40e6, size  # the index of 20k rows, tokens for 1,000 of them
    page, errors = _open(browser, report)
    t0 = time.monotonic()
    page.wait_for_function("document.getElementById('count').textContent.startsWith('20000')")
    page.select_option("#f-status", "ok")
    page.fill("#f-rmin", "1")
    page.click("#next")
    filtered = time.monotonic() - t0
    assert filtered < 5, filtered
    assert page.locator("#pageinfo").inner_text().startswith("page 2 / ")
    page.locator("#rows tr").first.click()
    assert page.locator("#detail").is_visible()
    page.screenshot(path=str(SHOTS / "report-20k.png"))
    assert errors == []
    print(f"20k rows: report built in {built:.1f} s, {size / 1e6:.1f} MB, filter + page in {filtered:.2f} s")


def test_a_tree_shows_its_branches_side_by_side_from_the_fork(tree_run, browser, tmp_path):
    """An opened tree leaf shows its tree: the prefix every leaf shares once, then one column per leaf with
    its own tokens from there and its reward, as the Parquet rows hold them."""
    page, errors = _open(browser, write_report(tree_run, tmp_path / "tree.html"))
    df = pd.read_parquet(tree_run)
    leaf = df[(df.node_id == "0.1.0") & (df.task_id != "counter-stop")].iloc[0]
    page.locator(f"#rows tr[data-rollout='{leaf.rollout_id}']").click()
    tree = df[df.tree_id == leaf.tree_id].sort_values("node_id")
    seqs = [list(r.prompt_token_ids) + list(r.response_token_ids) for r in tree.itertuples()]
    fork = next(i for i in range(min(map(len, seqs))) if len({s[i] for s in seqs}) > 1)
    assert fork <= tree.branch_token_offset.min() and fork > len(leaf.prompt_token_ids)

    prefix = page.locator("#tree-view .tree-prefix")
    assert int(prefix.get_attribute("data-len")) == fork
    assert prefix.locator(".tok").evaluate_all("t => t.map(x => Number(x.dataset.id))") == seqs[0][
        len(leaf.prompt_token_ids):fork]
    branches = page.locator("#tree-view .branch")
    assert branches.evaluate_all("b => b.map(x => x.dataset.node)") == list(tree.node_id)
    for k, r in enumerate(tree.itertuples()):
        branch = branches.nth(k)
        assert branch.locator(".tok").evaluate_all("t => t.map(x => Number(x.dataset.id))") == seqs[k][fork:]
        assert float(branch.get_attribute("data-reward")) == r.reward
        assert f"reward {r.reward:g}" in branch.locator(".role").inner_text().lower()
    assert page.locator("#tree-view .branch.current").get_attribute("data-node") == "0.1.0"
    box = [branches.nth(k).bounding_box() for k in range(len(tree))]
    assert len({round(b["y"]) for b in box}) == 1  # side by side, in one row
    page.locator("#detail").screenshot(path=str(SHOTS / "report-tree.png"))
    assert errors == []
    page.close()

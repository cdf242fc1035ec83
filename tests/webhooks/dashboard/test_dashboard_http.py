"""The dashboard over real HTTP: pages, JSON, the shipped script and the live event stream."""

from __future__ import annotations

import json
import re
import time
import xml.etree.ElementTree as ET

import httpx

from bot.problem import Problem
from bot.store import Store
from tests.support.dashboard_seed import Served, serve_dashboard

SVG_BLOCK = re.compile(r"<svg .*?</svg>", re.S)


def svgs(html: str) -> list[ET.Element]:
    return [ET.fromstring(block) for block in SVG_BLOCK.findall(html)]


def test_index_lists_experiments_leaderboard_students_and_queue(served: Served) -> None:
    response = httpx.get(served.url + "/", timeout=10)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    html = response.text
    for title in ("Raise learning rate to 3e-3", "Deeper model: 4 layers", "Double the batch size"):
        assert title in html
    assert "under-trained in a 5-minute budget" in html  # a rationale
    assert 'href="/experiments/4"' in html  # the experiment page
    assert 'href="https://github.example.com/lab/charlm/pull/4"' in html  # and the PR
    leaderboard = html[html.index('id="leaderboard"') : html.index('id="experiments"')]
    assert leaderboard.index("Cosine schedule") < leaderboard.index("Raise learning rate")
    assert "claimed Δ" in leaderboard and "measured Δ" in leaderboard
    assert "-0.0327" in leaderboard and "(n=3)" in leaderboard
    students = html[html.index('id="students"') : html.index('id="queue"')]
    assert "fern" in students and "Dropout 0.1 on attention" in students
    assert "offline" in students
    assert '<script src="/static/live.js"' in html
    charts = svgs(html)
    assert len(charts) == 2
    titles = [c.find("{http://www.w3.org/2000/svg}title").text for c in charts]
    assert titles == ["best val_bpb over experiments", "best val_bpb over time"]


def test_experiment_page_shows_seeds_curves_decisions_and_change(served: Served) -> None:
    html = httpx.get(served.url + "/experiments/2", timeout=10).text
    assert "Raise learning rate to 3e-3" in html
    runs = html[html.index('id="exp-runs"') : html.index('id="exp-diff"')]
    assert runs.count("<tr>") == 4  # header + three seeds
    assert "1.4620" in runs and "1.4580" in runs
    assert "<code>train.py</code>" in html and "lr 1e-3 -&gt; 3e-3" in html
    decisions = html[html.index('id="exp-decisions"') :]
    assert "confirm" in decisions and "p = 0.001" in decisions
    (chart,) = svgs(html)
    lines = list(chart.iter("{http://www.w3.org/2000/svg}polyline"))
    assert len(lines) == 6  # three seeds, each over the baseline's seed (dashed)
    assert sum(1 for line in lines if line.get("stroke-dasharray")) == 3


def test_experiment_page_of_a_crash_shows_the_log_and_unknown_is_404(served: Served) -> None:
    html = httpx.get(served.url + "/experiments/5", timeout=10).text
    assert "RuntimeError: CUDA out of memory" in html
    missing = httpx.get(served.url + "/experiments/999", timeout=10)
    assert missing.status_code == 404
    by_id = httpx.get(served.url + "/experiments/2?by=id", timeout=10).text
    assert "Deeper model: 4 layers" in by_id  # experiment 2 is PR #3


def test_api_experiments_and_hosts(served: Served) -> None:
    experiments = httpx.get(served.url + "/api/experiments", timeout=10).json()
    assert len(experiments) == 8
    lr = next(e for e in experiments if e["pr_number"] == 2)
    assert lr["state"] == "merged" and lr["seeds"] == 3 and lr["verdict"] == "merge"
    assert lr["page"] == "/experiments/2"
    assert lr["pr_url"] == "https://github.example.com/lab/charlm/pull/2"
    hosts = httpx.get(served.url + "/api/hosts", timeout=10).json()
    assert [h["name"] for h in hosts] == ["fern", "frieren", "himmel", "stark"]
    assert hosts[0]["job_phase"] == "training" and hosts[0]["pr_number"] == 7


def test_live_script_is_served(served: Served) -> None:
    response = httpx.get(served.url + "/static/live.js", timeout=10)
    assert response.status_code == 200
    assert "javascript" in response.headers["content-type"]
    assert 'new EventSource("/events")' in response.text


def test_the_stylesheet_is_served_and_nothing_else_under_static(served: Served) -> None:
    html = httpx.get(served.url + "/", timeout=10).text
    assert '<link rel="stylesheet" href="/static/dashboard.css">' in html
    css = httpx.get(served.url + "/static/dashboard.css", timeout=10)
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
    assert "--accent" in css.text
    for name in ("pages.py", "..%2F__init__.py", "missing.css"):
        assert httpx.get(f"{served.url}/static/{name}", timeout=10).status_code == 404


def test_events_stream_delivers_published_bus_messages(served: Served) -> None:
    with httpx.stream("GET", served.url + "/events", timeout=10) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        messages = []
        lines = response.iter_lines()
        for line in lines:
            if line.startswith("data:"):
                messages.append(json.loads(line[5:]))
                if messages[-1]["topic"] == "hello":
                    break  # subscribed: now the engine publishes
        served.publish("experiment", id=42, state="review")
        for line in lines:
            if line.startswith("data:"):
                messages.append(json.loads(line[5:]))
                break
    assert messages == [{"topic": "hello"}, {"topic": "experiment", "id": 42, "state": "review"}]
    deadline = time.monotonic() + 5
    while served.bus._subscribers and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not served.bus._subscribers  # a closed browser tab unsubscribes


def test_maximize_problem_and_default_github(seeded) -> None:
    running, stop = serve_dashboard(
        seeded.path, problem=Problem(metric="accuracy", direction="maximize")
    )
    try:
        started = time.monotonic()
        html = httpx.get(running.url + "/", timeout=10).text
        assert time.monotonic() - started < 5
    finally:
        stop()
    assert "accuracy (higher is better)" in html
    assert 'href="https://github.com/lab/charlm/pull/2"' in html
    leaderboard = html[html.index('id="leaderboard"') : html.index('id="experiments"')]
    # higher is better now: the learning-rate experiment (1.462) outranks the schedule (1.428)
    assert leaderboard.index("Raise learning rate") < leaderboard.index("Cosine schedule")


def test_text_and_links_from_agents_and_hosts_are_made_harmless(served: Served, seeded) -> None:
    writer = Store(seeded.path)
    writer.update("experiments", seeded.ids["lr"], {"title": "<script>alert(1)</script>"})
    writer.execute(
        "UPDATE runs SET wandb_url = CASE seed WHEN 0 THEN 'javascript:alert(1)' "
        "ELSE 'https://wandb.ai/lab/charlm/runs/' || seed END WHERE experiment_id = ?",
        (seeded.ids["lr"],),
    )
    writer.close()
    index = httpx.get(served.url + "/", timeout=10).text
    assert "<script>alert(1)</script>" not in index
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in index
    page = httpx.get(served.url + "/experiments/2", timeout=10).text
    assert "javascript:" not in page
    assert page.count('href="https://wandb.ai/lab/charlm/runs/') == 2


def test_a_stored_link_that_is_not_safe_https_is_shown_as_dropped(served: Served, seeded) -> None:
    # Rows stored before the protocol dropped such URLs on receipt: the page applies
    # the same rule (bot.protocol.https_url) and says the link was dropped.
    writer = Store(seeded.path)
    writer.execute(
        "UPDATE runs SET wandb_url = CASE seed WHEN 0 THEN 'http://wandb.ai/lab/charlm/runs/0' "
        "WHEN 1 THEN 'https://wandb.ai/x) ![t](https://tracker.example/p.png)' "
        "ELSE 'https://wandb.ai/lab/charlm/runs/' || seed END WHERE experiment_id = ?",
        (seeded.ids["lr"],),
    )
    writer.close()
    page = httpx.get(served.url + "/experiments/2", timeout=10).text
    assert 'href="http://wandb.ai' not in page and "tracker.example" not in page
    assert page.count("W&amp;B link dropped (not https)") == 2
    assert page.count('href="https://wandb.ai/lab/charlm/runs/') == 1

"""A Claude advisor answering off-schema in the bot's loop: counted with its cost, backed off,
then the gate alone decides (the real SDK against a scripted Messages API)."""

from __future__ import annotations

from pathlib import Path

from support.scripted_anthropic import ScriptedAnthropic, text

from agents.advisor import make_advisor
from agents.loop import MAX_ADVISOR_FAILURES, AdvisorLoop
from tests.support.engine_lab import Lab, ok


async def test_off_schema_reviews_are_paid_for_counted_and_bounded(tmp_path: Path) -> None:
    lab = Lab(tmp_path)
    lab.baseline(2.0, 2.0001)
    exp_id = lab.experiment(5)
    lab.run(ok(1.0, head="5" * 40))
    prose = [text("Looks good to me!", input_tokens=1000, output_tokens=50)] * MAX_ADVISOR_FAILURES
    with ScriptedAnthropic(prose) as api:
        claude = make_advisor(
            "test-key", engine="messages", base_url=api.url, stream=False, max_retries=0
        )
        loop = AdvisorLoop(lab.engine, claude, propose=False)
        for _ in range(MAX_ADVISOR_FAILURES + 2):  # more passes than failures allowed
            await loop.review_pending()
            lab.store.execute("UPDATE experiments SET advisor_retry_at = 0")  # time passes
        assert len(api.requests) == MAX_ADVISOR_FAILURES
    calls = lab.store.query("SELECT error, cost_usd, input_tokens FROM advisor_calls")
    assert len(calls) == MAX_ADVISOR_FAILURES
    assert all(c["error"] and c["cost_usd"] > 0 and c["input_tokens"] == 1000 for c in calls)
    assert not lab.exp(exp_id).review_requested
    last = lab.store.one("SELECT verdict, actor FROM decisions ORDER BY id DESC LIMIT 1")
    assert last == {"verdict": "merge", "actor": "gate"}

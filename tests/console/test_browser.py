"""The console in a real browser: Debian's chromium driven by Playwright, against a real
``sympozium-schedule run`` (controller, local runner, demo agent) on loopback.

Screenshots of each page are taken in every run; with ``CONSOLE_SCREENSHOTS=docs/img`` they
are written where the README shows them.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright import sync_api as playwright_api

from tests import support
from tests.console.conftest import instance, schedule

pytestmark = [pytest.mark.browser, pytest.mark.e2e, pytest.mark.timeout(240)]
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run"]
PATIENCE = 30_000  # ms: a loaded 2-core machine is slow, a passing test never waits this long
wait_for = support.wait_for


class Scheduler:
    """``sympozium-schedule run`` with its console on a known port."""

    def __init__(self, data_dir: Path, log: Path):
        self.data_dir = data_dir
        self.port = support.free_port()
        env = dict(os.environ, DEMO_AGENT_SECONDS="0.3", PYTHONUNBUFFERED="1")
        self.out = log.open("w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "sympozium_schedule.cli.main", "run", "--data-dir", str(data_dir),
             "--console-address", f"127.0.0.1:{self.port}", "--log-format", "json"],
            stdout=self.out, stderr=subprocess.STDOUT, env=env)
        self.log = log
        line = wait_for(lambda: self._console_line(), timeout=60, what="the console's address")
        self.url = f"http://127.0.0.1:{self.port}"
        self.token = (data_dir / "console.token").read_text().strip()
        assert line == f"console: {self.url}/#token={self.token}"

    def _console_line(self) -> str | None:
        if self.process.poll() is not None:
            raise AssertionError(f"run exited: {self.log.read_text()}")
        return next((ln for ln in self.log.read_text().splitlines() if ln.startswith("console: ")), None)

    def api(self, method: str, path: str, body: Any = None) -> Any:
        request = urllib.request.Request(self.url + path, method=method,
                                         data=json.dumps(body).encode() if body is not None else None,
                                         headers={"Authorization": f"Bearer {self.token}",
                                                  "Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:
            data = response.read()
            return json.loads(data) if data else None

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.out.close()


@pytest.fixture(scope="module")
def scheduler(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scheduler]:
    root = tmp_path_factory.mktemp("console")
    data_dir = root / "data"
    data_dir.mkdir()
    support.seed_store(
        data_dir, instance(), instance("bob"),
        schedule("nightly-report", "0 3 * * *", timeZone="Europe/Warsaw"),
        schedule("hourly-sweep", "0 * * * *", type="sweep"),
        schedule("standup-reminder", "30 9 * * 1-5", timeZone="America/New_York"),
        schedule("herd-a", "0 */2 * * *", instance_ref="bob"),
        schedule("herd-b", "0 */4 * * *", instance_ref="bob"),
        schedule("paused-digest", "15 6 * * *", suspend=True),
        schedule("agent-followup", "@every 45m", labels={"sympozium.ai/source": "agent",
                                                          "sympozium.ai/instance": "alice"}))
    running = Scheduler(data_dir, root / "run.log")
    yield running
    running.stop()


@pytest.fixture(scope="module")
def browser(scheduler: Scheduler) -> Iterator[Any]:  # the scheduler first: Playwright runs a loop
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: ./dev test installs Debian's chromium "
                    "(apt-get install chromium)")
    with playwright_api.sync_playwright() as p:
        launched = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        yield launched
        launched.close()


@pytest.fixture
def page(scheduler: Scheduler, browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1360, "height": 900}, timezone_id="Europe/Warsaw")
    opened = context.new_page()
    opened.set_default_timeout(PATIENCE)
    errors: list[str] = []
    opened.on("pageerror", lambda exc: errors.append(str(exc)))
    opened.goto(f"{scheduler.url}/#token={scheduler.token}")
    opened.get_by_test_id("signed-in").wait_for()
    opened.get_by_test_id("live").and_(opened.locator("[data-state=live]")).wait_for()
    yield opened
    context.close()
    assert errors == [], f"JavaScript errors on the page: {errors}"


def shot(page: Any, name: str, tmp_path: Path) -> None:
    target = Path(os.environ.get("CONSOLE_SCREENSHOTS", "")) if os.environ.get("CONSOLE_SCREENSHOTS") \
        else tmp_path
    target.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(target / f"console-{name}.png"), full_page=True)


def test_the_list_shows_every_schedule_with_its_timeline(page: Any, scheduler: Scheduler,
                                                         tmp_path: Path) -> None:
    table = page.get_by_test_id("schedules-table")
    for name in ("nightly-report", "hourly-sweep", "herd-a", "paused-digest", "agent-followup"):
        table.get_by_test_id(f"row-{name}").wait_for()
    assert page.get_by_test_id("phase-paused-digest").inner_text() == "Suspended"
    assert "agent" in page.get_by_test_id("row-agent-followup").inner_text()
    timeline = page.get_by_test_id("timeline")
    timeline.get_by_test_id("timeline-row-hourly-sweep").wait_for()
    # hourly-sweep fires 24 times in the next 24 hours: one mark each.
    assert timeline.get_by_test_id("timeline-row-hourly-sweep").locator("rect.fire").count() == 24
    assert re.search(r"busiest: \d+ schedules at", page.get_by_test_id("herd-peak").text_content() or "")
    page.get_by_test_id("search").fill("herd")
    page.get_by_test_id("row-nightly-report").wait_for(state="detached")
    assert page.get_by_test_id("row-herd-b").is_visible()
    page.get_by_test_id("search").fill("")
    page.get_by_test_id("range-168").click()
    page.get_by_text("Upcoming fires, next 7 days").wait_for()
    assert timeline.is_visible()
    page.get_by_test_id("range-24").click()
    page.get_by_text("Upcoming fires, next 24 hours").wait_for()
    shot(page, "schedules", tmp_path)


def test_create_with_the_cron_preview_then_fires_appear_without_a_reload(
        page: Any, scheduler: Scheduler, tmp_path: Path) -> None:
    page.get_by_test_id("nav-new").click()
    form = page.get_by_test_id("schedule-form")
    form.wait_for()
    page.get_by_test_id("field-name").fill("console-made")
    page.get_by_test_id("field-instanceRef").fill("alice")
    page.get_by_test_id("field-timeZone").fill("America/New_York")
    page.get_by_test_id("field-schedule").fill("30 2 * * *")
    # The preview follows the typing: 02:30 local, and the spring-forward gap is named.
    note = page.get_by_test_id("preview-dst").filter(has_text="in America/New_York: clocks jump")
    note.wait_for()
    assert "02:30 does not exist" in note.inner_text()
    assert page.get_by_test_id("preview-dst").count() == 1  # 02:30 is not repeated in the autumn
    times = page.get_by_test_id("preview-times").locator("li")
    assert times.count() == 6
    assert all("02:30:00" in t for t in times.all_inner_texts())
    page.get_by_test_id("field-task").fill("Summarise the night's alerts.")
    shot(page, "new", tmp_path)
    # Now something that fires soon, in UTC.
    page.get_by_test_id("field-timeZone").fill("UTC")
    page.get_by_test_id("field-schedule").fill("@every 3s")
    page.wait_for_function("() => !document.querySelector('[data-testid=preview-dst]')")
    page.get_by_test_id("submit").and_(page.locator(":enabled")).wait_for()
    page.get_by_test_id("submit").click()
    page.get_by_test_id("schedule-title").wait_for()
    assert page.get_by_test_id("schedule-title").inner_text() == "console-made"
    stored = scheduler.api("GET", "/api/v1/schedules/console-made")
    assert stored["spec"]["schedule"] == "@every 3s"
    assert stored["spec"]["instanceRef"] == "alice"
    # From here on, nothing reloads the page: a marker on window would be gone if it did.
    page.evaluate("window.__noReload = 42")
    strip = page.get_by_test_id("outcome-strip")
    page.wait_for_function(
        "() => document.querySelectorAll('[data-testid=outcome-strip] [data-phase=Succeeded]').length >= 2")
    assert page.evaluate("window.__noReload") == 42
    assert strip.locator("rect.cell").count() >= 2
    page.get_by_test_id("runs-table").wait_for()
    total = int(page.get_by_test_id("status-total-runs").inner_text())
    assert total >= 2
    scheduler.api("POST", "/api/v1/schedules/console-made/suspend")  # stop it firing for the rest


def test_an_invalid_cron_is_rejected_in_the_form(page: Any, scheduler: Scheduler) -> None:
    page.get_by_test_id("nav-new").click()
    page.get_by_test_id("field-name").fill("broken-one")
    page.get_by_test_id("field-instanceRef").fill("alice")
    page.get_by_test_id("field-task").fill("t")
    page.get_by_test_id("field-schedule").fill("61 * * * *")
    error = page.get_by_test_id("preview-error")
    error.wait_for()
    assert error.inner_text().startswith("spec.schedule: '61 * * * *': not a valid cron expression")
    assert page.get_by_test_id("submit").is_disabled()
    # Even a form forced past the preview is refused by the server, with the same line.
    page.evaluate("document.querySelector('[data-testid=submit]').disabled = false")
    page.get_by_test_id("submit").click()
    form_error = page.get_by_test_id("form-error")
    form_error.wait_for()
    assert form_error.inner_text() == error.inner_text()
    names = [s["metadata"]["name"] for s in scheduler.api("GET", "/api/v1/schedules")]
    assert "broken-one" not in names


def test_pause_resume_trigger_and_a_runs_logs(page: Any, scheduler: Scheduler, tmp_path: Path) -> None:
    page.goto(f"{scheduler.url}/#/s/default/nightly-report")
    page.get_by_test_id("schedule-title").wait_for()
    assert page.get_by_test_id("detail-phase").inner_text() == "Active"
    page.get_by_test_id("action-suspend").click()
    page.get_by_test_id("action-resume").wait_for()  # the page changed from the live stream
    assert page.get_by_test_id("detail-phase").inner_text() == "Suspended"
    assert scheduler.api("GET", "/api/v1/schedules/nightly-report")["spec"]["suspend"] is True
    page.get_by_test_id("action-resume").click()
    page.get_by_test_id("action-suspend").wait_for()
    assert scheduler.api("GET", "/api/v1/schedules/nightly-report")["spec"]["suspend"] is False
    page.get_by_test_id("action-trigger").click()
    banner = page.get_by_test_id("banner-ok").filter(has_text="Triggered run")
    banner.wait_for()
    run = re.search(r"Triggered run (\S+)", banner.inner_text())
    assert run is not None
    name = run.group(1)
    page.get_by_test_id(f"run-phase-{name}").and_(page.get_by_text("Succeeded")).wait_for()
    page.get_by_test_id(f"open-run-{name}").click()
    logs = page.get_by_test_id(f"run-detail-{name}").get_by_test_id("run-logs")
    page.wait_for_function(
        "() => (document.querySelector('[data-testid=run-logs]') || {}).textContent?.includes('demo agent')")
    assert "demo agent: did 'Check in.'" in logs.inner_text()
    assert "demo agent" in page.get_by_test_id("run-result").inner_text()
    shot(page, "schedule", tmp_path)


def test_delete_asks_first(page: Any, scheduler: Scheduler) -> None:
    page.goto(f"{scheduler.url}/#/s/default/hourly-sweep")
    page.get_by_test_id("action-delete").click()
    page.get_by_test_id("confirm-cancel").click()
    assert scheduler.api("GET", "/api/v1/schedules/hourly-sweep")["metadata"]["name"] == "hourly-sweep"
    page.get_by_test_id("action-delete").click()
    page.get_by_test_id("confirm-ok").click()
    page.get_by_test_id("schedules-table").wait_for()
    names = [s["metadata"]["name"] for s in scheduler.api("GET", "/api/v1/schedules")]
    assert "hourly-sweep" not in names


def test_without_the_token_the_console_only_reads(browser: Any, scheduler: Scheduler) -> None:
    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(PATIENCE)
    page.goto(f"{scheduler.url}/#/s/default/nightly-report")
    page.get_by_test_id("set-token").wait_for()
    assert page.get_by_test_id("action-trigger").is_disabled()
    assert page.get_by_test_id("action-suspend").is_disabled()
    context.close()

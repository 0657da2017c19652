"""The HTML report: self-contained, escaped, and rendered by a real headless browser."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest
from typer.testing import CliRunner

from sparring.cli import app
from sparring.config import load_config
from sparring.game import Game
from tests.test_game import TINY

PAYLOAD = '<script>document.body.dataset.pwned="1"</script><img src=x onerror="alert(1)">\x1b[31mred\x1b[0m'


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    cfg = load_config(None, [*TINY, f"run.dir={root}", "run.name=r", "schedule.steps=3"])
    Game(cfg, root / "r").play()
    with (root / "r" / "attacks.jsonl").open("a") as handle:  # a hostile attack, as an attacker might write
        handle.write(
            json.dumps(
                {
                    "step": 2,
                    "stage": "attacker",
                    "prompt": PAYLOAD,
                    "responses": [PAYLOAD],
                    "p_unsafe": [1.0],
                    "self_bleu": 0.0,
                }
            )
            + "\n"
        )
    exploited = CliRunner().invoke(app, ["exploit", str(root / "r"), "--steps", "2", "-q"])
    assert exploited.exit_code == 0, exploited.output
    return root / "r"


def test_report_is_self_contained_and_escaped(run_dir):
    result = CliRunner().invoke(app, ["report", str(run_dir)])
    assert result.exit_code == 0, result.output
    page = (run_dir / "report.html").read_text()
    assert "<script>document.body.dataset.pwned" not in page and "onerror=" not in page.replace("onerror=&quot;", "")
    assert "&lt;script&gt;document.body.dataset.pwned" in page
    for reference in ('src="http', "src='http", 'href="http', "href='http", "url(http", "@import"):
        assert reference not in page  # nothing loaded from outside
    assert page.count('<figure class="plot"') >= 5
    assert (run_dir / "report_plots" / "asr.png").stat().st_size > 1000
    assert "<h2>Exploitability</h2>" in page and 'data-metric="exploitability"' in page
    assert (run_dir / "report_plots" / "exploitability.png").stat().st_size > 1000
    assert json.loads((run_dir / "attacks.jsonl").read_text().splitlines()[-1])["prompt"] == PAYLOAD  # lossless


def test_report_renders_in_headless_chromium(run_dir, tmp_path):
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is missing in CI (.ci/run installs Debian's chromium)")
        pytest.skip("chromium is not installed")
    CliRunner().invoke(app, ["report", str(run_dir)])
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--enable-logging=stderr",
        "--v=0",
    ]
    done = subprocess.run(
        [browser, *flags, "--dump-dom", (run_dir / "report.html").as_uri()], capture_output=True, text=True, timeout=120
    )
    dom = done.stdout
    figures = dom.count('<figure class="plot"')
    assert figures >= 5
    assert f'data-rendered="{figures}"' in dom  # our one script ran without error and saw every plot
    assert "data-pwned" not in dom  # the hostile script never ran
    assert "Uncaught" not in done.stderr

"""The magic's live view in a real JupyterLab (light and dark theme), driven by headless Chromium.

A JupyterLab server on 127.0.0.1 serves a notebook with ``%load_ext nbexec`` and a
``%%train`` cell (the built-in trainer, 2 gloo ranks, one log line per step: more
lines than the tail's pane shows). While the job runs the test checks, in the page:

- the last printed line is inside the tail pane's viewport (the tail follows);
- a reader who scrolls up keeps their place while lines arrive, and following
  resumes once they scroll back to the bottom;
- the phase the view shows is "finishing" between the last step and the end
  (recorded by a MutationObserver, so no redraw can be missed);
- in the dark theme, no element of the view or its summary has a light background.

Screenshots go to test-artifacts/ (live-view-{light,dark}-{running,finished}.png).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("playwright.sync_api", reason="playwright is in the dev extra")
pytest.importorskip("jupyterlab", reason="jupyterlab is in the dev extra")

from lab_server import ARTIFACTS, CHROMIUM, Lab, open_lab, report_page  # noqa: E402
from playwright.sync_api import Page, sync_playwright  # noqa: E402

if not CHROMIUM.is_file():
    pytest.skip(f"no Chromium at {CHROMIUM} (.ci/run installs Debian's chromium)", allow_module_level=True)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

RUN_TIMEOUT_MS = 300_000
NOTEBOOK = "live_view.ipynb"
# 3 epochs of 20 steps, a line per step: ~65 lines from rank 0, the pane shows ~20.
TRAIN_CELL = """%%train --nproc 2 --output runs
model: {d_model: 32, layers: 1, heads: 2, ff_dim: 64}
training: {learning_rate: 1.0e-2, batch_size: 16, epochs: 3, seed: 3, log_every: 1}
data: {num_train: 640, num_val: 64, seq_len: 16}"""

# Records each state the view's head shows (phase, the step in its progress label, status),
# from the moment the page loads: a redraw that lasts a millisecond is recorded too.
RECORD_JS = """() => {
    window.__nbexecHeads = [];
    const record = () => {
        const heads = document.querySelectorAll('.nbexec-live-head');
        const head = heads[heads.length - 1];
        const summary = [...document.querySelectorAll('.jp-OutputArea-output .nbexec-run')].pop();
        const phase = head && head.querySelector('.nbexec-phase');
        const progress = head && head.querySelector('.nbexec-progress');
        const entry = JSON.stringify({
            phase: phase ? phase.dataset.phase : null,
            progress: progress ? progress.innerText : null,
            summary: summary ? summary.innerText.split('\\n')[0] : null,
        });
        const all = window.__nbexecHeads;
        if (all[all.length - 1] !== entry) all.push(entry);
    };
    new MutationObserver(record).observe(document.body, {subtree: true, childList: true, characterData: true});
}"""

# The tail pane of the newest view and facts about its viewport, in one go (one instant).
PANE_JS = """() => {
    const panes = document.querySelectorAll('.nbexec-live .nbexec-tail');
    const pane = panes[panes.length - 1];
    if (!pane) return null;
    const lines = pane.querySelectorAll('div > div');
    const box = pane.getBoundingClientRect();
    const visible = [...lines].filter(l => {
        const r = l.getBoundingClientRect();
        return r.bottom > box.top + 1 && r.top < box.bottom - 1;
    });
    const last = lines[lines.length - 1];
    const r = last ? last.getBoundingClientRect() : null;
    return {
        overflowing: pane.scrollHeight > pane.clientHeight + 20,
        count: lines.length,
        lastText: last ? last.textContent : null,
        lastVisible: r !== null && r.top >= box.top - 1 && r.bottom <= box.bottom + 1,
        firstVisible: visible.length ? visible[0].textContent : null,
        scrollTop: pane.scrollTop,
        lastSeq: Number(pane.closest('.nbexec-live').dataset.lastSeq),
    };
}"""

# Elements of the last cell's outputs whose background is light (luminance > 0.6, mostly opaque).
LIGHT_BACKGROUNDS_JS = """() => {
    const cells = document.querySelectorAll('.jp-CodeCell');
    const out = cells[cells.length - 1].querySelector('.jp-OutputArea');
    const light = [];
    for (const el of [out, ...out.querySelectorAll('*')]) {
        const m = getComputedStyle(el).backgroundColor.match(/[\\d.]+/g);
        if (!m) continue;
        const [r, g, b, a] = [Number(m[0]), Number(m[1]), Number(m[2]), m.length > 3 ? Number(m[3]) : 1];
        const lin = c => { c /= 255; return c <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4; };
        const lum = 0.2126 * lin(r) + 0.7152 * lin(g) + 0.0722 * lin(b);
        if (a > 0.5 && lum > 0.6) light.push(`${el.tagName}.${el.className} ${getComputedStyle(el).backgroundColor}`);
    }
    return light;
}"""


def _notebook() -> dict[str, Any]:
    def code(source: str) -> dict[str, Any]:
        return {"cell_type": "code", "metadata": {}, "source": source, "outputs": [], "execution_count": None}

    return {
        "cells": [code("%load_ext nbexec"), code(TRAIN_CELL)],
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
        "nbformat": 4, "nbformat_minor": 5,
    }


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    root = tmp_path_factory.mktemp("lab")
    with open_lab(root, {NOTEBOOK: json.dumps(_notebook())}) as server:
        yield server


def _run_all(page: Page) -> None:
    # not awaited: the command's promise settles only once the cells have run
    page.evaluate("() => { window.jupyterapp.commands.execute('notebook:run-all-cells'); }")


def _wait_idle(page: Page) -> None:
    page.locator(".jp-Notebook-ExecutionIndicator[data-status='idle']").wait_for(timeout=RUN_TIMEOUT_MS)


def _train_and_check(page: Page, theme: str) -> None:
    page.evaluate(RECORD_JS)
    _run_all(page)
    # The tail has more lines than its pane shows, the job still running.
    page.wait_for_function(f"() => {{ const p = ({PANE_JS})(); return p && p.overflowing; }}", timeout=RUN_TIMEOUT_MS)
    pane = page.evaluate(PANE_JS)
    assert pane["overflowing"] and pane["lastVisible"], f"the newest line is in the pane's viewport: {pane}"
    page.screenshot(path=str(ARTIFACTS / f"live-view-{theme}-running.png"), full_page=True)
    if theme == "dark":
        light = page.evaluate(LIGHT_BACKGROUNDS_JS)
        assert light == [], f"light backgrounds in the dark theme while running: {light}"

    # A reader scrolls up: they keep their place while lines keep coming.
    page.evaluate("() => { const p = [...document.querySelectorAll('.nbexec-live .nbexec-tail')].pop();"
                  " p.scrollTop = 0; p.dispatchEvent(new Event('scroll')); }")
    before = page.evaluate(PANE_JS)
    page.wait_for_function(f"(seq) => ({PANE_JS})().lastSeq >= seq + 3", arg=before["lastSeq"],
                           timeout=RUN_TIMEOUT_MS)
    after = page.evaluate(PANE_JS)
    assert after["scrollTop"] == 0 and after["firstVisible"] == before["firstVisible"], (before, after)
    assert not after["lastVisible"], "the newest line is below: the reader was not pulled down"
    # Back at the bottom, the pane follows again.
    page.evaluate("() => { const p = [...document.querySelectorAll('.nbexec-live .nbexec-tail')].pop();"
                  " p.scrollTop = p.scrollHeight; p.dispatchEvent(new Event('scroll')); }")
    back = page.evaluate(PANE_JS)
    page.wait_for_function(f"(seq) => {{ const p = ({PANE_JS})(); return !p || p.lastSeq >= seq + 2; }}",
                           arg=back["lastSeq"], timeout=RUN_TIMEOUT_MS)
    following = page.evaluate(PANE_JS)
    assert following is None or following["lastVisible"], following  # None: the run ended, the summary is there

    _wait_idle(page)
    page.wait_for_function("() => [...document.querySelectorAll('.jp-OutputArea-output .nbexec-run')].length > 0",
                           timeout=RUN_TIMEOUT_MS)
    page.screenshot(path=str(ARTIFACTS / f"live-view-{theme}-finished.png"), full_page=True)
    if theme == "dark":
        light = page.evaluate(LIGHT_BACKGROUNDS_JS)
        assert light == [], f"light backgrounds in the dark theme in the summary: {light}"

    heads = [json.loads(h) for h in page.evaluate("() => window.__nbexecHeads")]
    last_step = next((i for i, h in enumerate(heads) if (h["progress"] or "").startswith("step 60/60")), None)
    assert last_step is not None, heads
    # (the page may still show the previous run's summary when recording starts)
    end = next((i for i in range(last_step, len(heads)) if "FINISHED" in (heads[i]["summary"] or "")), None)
    assert end is not None, heads
    assert any(h["phase"] == "finishing" for h in heads[last_step:end]), heads
    assert "FINISHED" in heads[end]["summary"]
    summary = page.locator(".jp-OutputArea-output .nbexec-run").last
    assert summary.locator("details", has_text="lineage").get_attribute("open") is None, "lineage collapsed"
    assert "Out[" not in page.locator(".jp-CodeCell").last.inner_text(), "no Out[n] repeating the summary"


def test_the_live_view_follows_shows_phases_and_suits_both_themes(lab: Lab) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1300, "height": 1800})
        try:
            lab.open(page, NOTEBOOK)
            _train_and_check(page, "light")

            page.evaluate("() => window.jupyterapp.commands.execute('apputils:change-theme',"
                          " {theme: 'JupyterLab Dark'})")
            page.wait_for_function("() => document.body.dataset.jpThemeLight === 'false'", timeout=60_000)
            _train_and_check(page, "dark")
        except BaseException:
            page.screenshot(path=str(ARTIFACTS / "live-view-failure.png"), full_page=True)
            report_page(page, lab)
            raise
        finally:
            browser.close()

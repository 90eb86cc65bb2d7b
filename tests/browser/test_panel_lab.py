"""The training panel in a real JupyterLab, driven by headless Chromium through Playwright.

A JupyterLab server on 127.0.0.1 (free port, token, settings/workspaces/runtime
in a temporary folder, news off) serves a copy of notebooks/06_training_panel.ipynb;
Debian's Chromium (never a downloaded browser) opens it, runs all cells, clicks
Train in the rendered widget and waits for log lines and FINISHED in the page,
then types a long run into the form, clicks Stop and waits for KILLED. On the way it
measures the panel as drawn, in JupyterLab's light and dark themes: the run history fits
the panel, "backup to" sits beside its checkbox, a disabled Stop looks unlike an enabled
one, and in the dark theme no element keeps a light background of its own. A second test
opens the committed notebook as a new user would (outputs and saved widget state, no
kernel run) and checks that the panel shows, not its ``VBox(children=...`` text.
Screenshots go to test-artifacts/ at the repo root. The server, its kernel and every
training process are gone afterwards.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

REPO = Path(__file__).resolve().parents[2]
NOTEBOOK = REPO / "notebooks" / "06_training_panel.ipynb"
RUN_TIMEOUT_MS = 180_000
REOPENED = "reopened.ipynb"
THEMES = {"light": "JupyterLab Light", "dark": "JupyterLab Dark"}

playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright is in the dev extra")
pytest.importorskip("jupyterlab", reason="jupyterlab is in the dev extra")

# the JupyterLab helpers shared with the live view's browser test
from lab_server import (  # noqa: E402
    ARTIFACTS,
    CHROMIUM,
    KERNEL_READY_JS,
    _descendants,
    _free_port,
    _proc,
    _wait_until_serving,
)

if not CHROMIUM.is_file():
    pytest.skip(f"no Chromium at {CHROMIUM} (.ci/run installs Debian's chromium)", allow_module_level=True)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


@dataclass
class Lab:
    url: str
    token: str
    server: subprocess.Popen[bytes]
    workdir: Path


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    root = tmp_path_factory.mktemp("lab")
    work, home = root / "work", root / "home"
    work.mkdir()
    _copy_without_outputs(NOTEBOOK, work / NOTEBOOK.name)
    shutil.copy(NOTEBOOK, work / REOPENED)  # as committed: outputs and saved widget state
    shutil.copy(NOTEBOOK.parent / "tiny.yaml", work / "tiny.yaml")
    settings = home / "settings"
    notification = settings / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    notification.parent.mkdir(parents=True)
    notification.write_text(json.dumps({"fetchNews": "false", "checkForUpdates": False}))
    # Start the notebook's own kernel without the "Select Kernel" dialog (it shows when the kernel is slow to come up).
    tracker = settings / "@jupyterlab" / "notebook-extension" / "tracker.jupyterlab-settings"
    tracker.parent.mkdir(parents=True)
    tracker.write_text(json.dumps({"autoStartDefaultKernel": True}))

    port, token = _free_port(), secrets.token_hex(16)
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}",
        "JUPYTERLAB_SETTINGS_DIR": str(settings),
        "JUPYTERLAB_WORKSPACES_DIR": str(home / "workspaces"),
        "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
        "JUPYTER_CONFIG_DIR": str(home / "config"),
        "JUPYTER_DATA_DIR": str(home / "data"),  # no notebook is trusted from the host's signature database
        "IPYTHONDIR": str(home / "ipython"),
    }
    argv = [
        sys.executable, "-m", "jupyterlab", "--no-browser",
        "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={work}",
        "--LabApp.news_url=None", "--ServerApp.open_browser=False", "--allow-root",
        "--LabApp.expose_app_in_browser=True",  # window.jupyterapp: the test waits on the page's own kernel
    ]
    log = root / "jupyterlab.log"
    with log.open("wb") as sink:
        server = subprocess.Popen(argv, env=env, cwd=work, stdout=sink, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_until_serving(url, token, server, log)
        yield Lab(url=url, token=token, server=server, workdir=work)
    finally:
        tree = [server, *_descendants(server.pid)]
        server.terminate()  # the server shuts its kernels down on SIGTERM
        _, alive = psutil.wait_procs([_proc(p) for p in tree if _proc(p) is not None], timeout=30)
        for p in alive:
            p.kill()
        assert not [p for p in alive if p.pid != server.pid], "the kernel outlived the server"


def _copy_without_outputs(source: Path, target: Path) -> None:
    """The notebook without its committed outputs and saved widget state: JupyterLab would render the
    saved panel before any cell runs, so a panel in the page would not prove the kernel built it."""
    notebook = json.loads(source.read_text())
    notebook["metadata"].pop("widgets", None)
    for cell in notebook["cells"]:
        if cell["cell_type"] == "code":
            cell["outputs"], cell["execution_count"] = [], None
    target.write_text(json.dumps(notebook))


def _training_processes(server_pid: int) -> list[psutil.Process]:
    found = []
    for p in _descendants(server_pid):
        try:
            cmd = " ".join(p.cmdline())
        except psutil.Error:
            continue
        if "torch.distributed.run" in cmd or "nbexec.child" in cmd or "runner/guard.py" in cmd:
            found.append(p)
    return found


def _status_text(page: object) -> str:
    """The panel's status label (the Label beside the Train/Stop buttons)."""
    return page.locator(".nbexec-panel-status").inner_text()  # type: ignore[attr-defined]


def _report_failure(page: object, lab: Lab) -> None:
    """Print what the page, the server and the process tree looked like (pytest shows it with the failure)."""
    def text(selector: str) -> str:
        try:
            return "\n".join(page.locator(selector).all_inner_texts())  # type: ignore[attr-defined]
        except Exception as err:  # noqa: BLE001 - a diagnostic must not hide the failure
            return f"<unreadable: {err}>"

    print("--- panel status:", text(".nbexec-panel-status"))
    print("--- panel:\n", text(".nbexec-panel")[-4000:])
    print("--- cell outputs:\n", text(".jp-OutputArea-output")[-4000:])
    print("--- processes under the server:")
    for p in _descendants(lab.server.pid):
        try:
            print(f"  {p.pid} {p.status()} {' '.join(p.cmdline())[:200]}")
        except psutil.Error:
            pass
    for path in sorted(lab.workdir.rglob("*")):
        if path.is_file() and (path.suffix == ".log" or path.name == "result.json"):
            print(f"--- {path.relative_to(lab.workdir)} (tail):\n", path.read_text(errors="replace")[-1500:])
    log = lab.workdir.parent / "jupyterlab.log"
    print("--- jupyterlab.log (tail):\n", log.read_text(errors="replace")[-4000:] if log.exists() else "<none>")


def _set_theme(page: object, theme: str) -> None:
    """Switch JupyterLab's theme through its own command, and wait until the page has it."""
    light = "true" if theme == "light" else "false"
    page.evaluate(  # type: ignore[attr-defined]
        "(name) => window.jupyterapp.commands.execute('apputils:change-theme', {theme: name})", THEMES[theme]
    )
    page.wait_for_function(  # type: ignore[attr-defined]
        "(light) => document.body.dataset.jpThemeLight === light && document.body.dataset.jpThemeName !== undefined",
        arg=light, timeout=60_000,
    )
    # the theme's CSS is loaded once the body's own background follows it
    page.wait_for_function(  # type: ignore[attr-defined]
        "(light) => { const m = getComputedStyle(document.body).getPropertyValue('--jp-layout-color0').trim();"
        " return m !== '' && (light === 'true') === (m.toLowerCase() === 'white' || m.toLowerCase() === '#fff'"
        " || m.toLowerCase() === '#ffffff'); }",
        arg=light, timeout=60_000,
    )


# Every element of the panel whose own background is light (relative luminance > 0.5, not transparent).
LIGHT_BACKGROUNDS_JS = """(skip) => {
    const lum = (c) => {
        const m = c.match(/rgba?\\(([^)]+)\\)/);
        if (!m) return null;
        const [r, g, b, a] = m[1].split(',').map(Number);
        if (a === 0) return null;
        const ch = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); };
        return 0.2126 * ch(r) + 0.7152 * ch(g) + 0.0722 * ch(b);
    };
    const found = [];
    for (const panel of document.querySelectorAll('.nbexec-panel')) {
        for (const el of [panel, ...panel.querySelectorAll('*')]) {
            if (skip && el.closest(skip)) continue;
            const bg = getComputedStyle(el).backgroundColor;
            const l = lum(bg);
            if (l !== null && l > 0.5) {
                found.push(`${el.tagName.toLowerCase()}.${[...el.classList].join('.')} ${bg}: `
                           + (el.innerText || '').slice(0, 60));
            }
        }
    }
    return found;
}"""

# Where the parts of the panel are drawn (px).
LAYOUT_JS = """() => {
    const panel = document.querySelector('.nbexec-panel');
    const table = panel.querySelector('.nbexec-history');
    const box = (el) => { const r = el.getBoundingClientRect(); return {left: r.left, right: r.right, top: r.top,
                                                                         bottom: r.bottom, width: r.width}; };
    const check = panel.querySelector('.nbexec-backup .widget-label-basic');  // the box and its words
    const target = panel.querySelector('.nbexec-backup-target input');
    return {panel: box(panel), table: table ? box(table) : null,
            tableScroll: table ? table.parentElement.scrollWidth : null,
            checkbox: check ? box(check) : null, target: target ? box(target) : null};
}"""


def _button_look(page: object, selector: str) -> dict[str, str]:
    return page.evaluate(  # type: ignore[attr-defined]
        "(sel) => { const s = getComputedStyle(document.querySelector(sel));"
        " return {background: s.backgroundColor, color: s.color, cursor: s.cursor}; }",
        selector,
    )


def _check_layout(page: object) -> None:
    layout = page.evaluate(LAYOUT_JS)  # type: ignore[attr-defined]
    assert layout["table"] is not None, "the run history table is not in the panel"
    assert layout["table"]["width"] <= layout["panel"]["width"] + 0.5, layout
    assert layout["table"]["right"] <= layout["panel"]["right"] + 0.5, layout
    assert layout["tableScroll"] <= layout["panel"]["width"] + 0.5, layout  # nothing hidden sideways either
    check, target = layout["checkbox"], layout["target"]
    assert check is not None and target is not None, layout
    assert abs((check["top"] + check["bottom"]) / 2 - (target["top"] + target["bottom"]) / 2) < 12, layout
    assert 0 <= target["left"] - check["right"] < 160, f"'backup to' is far from its checkbox: {layout}"


def test_train_and_stop_in_jupyterlab(lab: Lab) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with playwright_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 2400})
            # Should the kernel dialog show anyway, confirm the notebook's own kernel before any action.
            page.add_locator_handler(
                page.locator(".jp-Dialog", has_text="Select Kernel"),
                lambda dialog: dialog.get_by_role("button", name="Select").click(),
            )
            page.goto(f"{lab.url}/lab/tree/{NOTEBOOK.name}?token={lab.token}")
            page.wait_for_function(KERNEL_READY_JS, timeout=120_000)

            # Run all cells: the notebook builds the panel and trains once from Python.
            page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
            page.locator("li[data-command='runmenu:run-all']").click()
            status = page.locator(".nbexec-panel-status")
            status.wait_for(timeout=120_000)
            page.wait_for_function(
                "() => [...document.querySelectorAll('.nbexec-panel-status')].some(e => e.innerText.endsWith(': FINISHED'))",
                timeout=RUN_TIMEOUT_MS,
            )
            page.locator(".jp-Notebook-ExecutionIndicator[data-status='idle']").wait_for(timeout=RUN_TIMEOUT_MS)
            first = _status_text(page)

            # Click Train in the rendered widget: a second run, followed live in the page.
            page.locator(".nbexec-panel").get_by_role("button", name="Train", exact=False).click()
            page.wait_for_function(
                "(before) => { const t = document.querySelector('.nbexec-panel-status').innerText;"
                " return t !== before && t.endsWith(': FINISHED'); }",
                arg=first, timeout=RUN_TIMEOUT_MS,
            )
            panel_text = page.locator(".nbexec-panel").inner_text()
            second = _status_text(page)
            assert second.endswith(": FINISHED") and second != first
            run_name = second.removesuffix(": FINISHED")
            assert run_name in panel_text and "val_f1" in panel_text
            assert page.locator(".nbexec-panel .nbexec-history").inner_text().count("FINISHED") >= 2
            assert "[rank0]" in page.locator(".nbexec-panel").text_content()  # the log tail (collapsed)
            page.screenshot(path=str(ARTIFACTS / "panel-lab-finished.png"), full_page=True)

            # As drawn, in both themes: the history fits, "backup to" sits by its checkbox, and in
            # the dark theme nothing keeps a light background of its own.
            page.locator(".nbexec-panel").screenshot(path=str(ARTIFACTS / "panel-light.png"))
            _check_layout(page)
            _set_theme(page, "dark")
            page.locator(".nbexec-panel").screenshot(path=str(ARTIFACTS / "panel-dark.png"))
            assert page.evaluate(LIGHT_BACKGROUNDS_JS, None) == []  # the whole panel, the run's summary included
            _check_layout(page)
            idle_stop = _button_look(page, ".nbexec-panel .nbexec-stop")

            # Type a long run into the form, Train, see its lines, Stop: KILLED, nothing left running.
            epochs = page.locator(".nbexec-panel .widget-inline-hbox", has_text="epochs").locator("input")
            epochs.fill("500")
            epochs.press("Enter")
            train = page.locator(".nbexec-panel").get_by_role("button", name="Train", exact=False)
            page.wait_for_function(
                "() => !document.querySelector('.nbexec-panel .nbexec-train').disabled", timeout=30_000
            )
            train.click()
            page.wait_for_function(
                "() => document.querySelector('.nbexec-panel').innerText.includes('epoch 1/500 step')",
                timeout=RUN_TIMEOUT_MS,
            )
            assert _training_processes(lab.server.pid), "the job runs under the kernel"
            # While the job runs: the whole panel, the live view inside it (its tail, progress track,
            # metrics and resources tables) included
            assert page.evaluate(LIGHT_BACKGROUNDS_JS, None) == []
            page.locator(".nbexec-panel").screenshot(path=str(ARTIFACTS / "panel-dark-running.png"))
            # the disabled Stop (idle) must not look like the enabled one (a job to stop)
            assert _button_look(page, ".nbexec-panel .nbexec-stop") != idle_stop
            assert idle_stop["cursor"] == "not-allowed"
            page.locator(".nbexec-panel").get_by_role("button", name="Stop", exact=False).click()
            page.wait_for_function(
                "() => document.querySelector('.nbexec-panel-status').innerText.endsWith(': KILLED')",
                timeout=60_000,
            )
            page.screenshot(path=str(ARTIFACTS / "panel-lab-killed.png"), full_page=True)
            _, alive = psutil.wait_procs(_training_processes(lab.server.pid), timeout=15)
            assert [p for p in alive if p.status() != psutil.STATUS_ZOMBIE] == []
            _set_theme(page, "light")
        except BaseException:
            page.screenshot(path=str(ARTIFACTS / "panel-lab-failure.png"), full_page=True)
            _report_failure(page, lab)
            raise
        finally:
            browser.close()


def test_a_reopened_notebook_shows_the_panel_not_its_repr(lab: Lab) -> None:
    """The committed notebook opened without running it (a new user, an untrusted notebook)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with playwright_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1600})
            page.add_locator_handler(
                page.locator(".jp-Dialog", has_text="Select Kernel"),
                lambda dialog: dialog.get_by_role("button", name="Select").click(),
            )
            page.goto(f"{lab.url}/lab/tree/{REOPENED}?token={lab.token}")
            page.wait_for_function(KERNEL_READY_JS, timeout=120_000)
            # the committed output of the panel's cell, as the page renders it (in this notebook's tab:
            # the workspace also restores the notebook the other test opened, in a hidden tab)
            shown = ".jp-NotebookPanel:not(.lm-mod-hidden) .jp-CodeCell .jp-OutputArea"
            page.wait_for_function(
                "(sel) => { const o = document.querySelector(sel); return o !== null && o.innerText.trim().length > 0; }",
                arg=shown, timeout=60_000,
            )
            text = page.locator(shown).first.inner_text()
            page.screenshot(path=str(ARTIFACTS / "panel-reopened.png"), full_page=False)
            assert "VBox(children=" not in text
            assert "TrainingPanel" in text or page.locator(".nbexec-panel").count() > 0, text[:500]
        finally:
            browser.close()

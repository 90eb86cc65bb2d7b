"""A JupyterLab server for browser tests: 127.0.0.1, a free port, a token, its own settings; gone afterwards.

    with open_lab(tmp_path, {"x.ipynb": text}) as lab:
        lab.open(page, "x.ipynb")          # the page's own kernel started, connected and idle

Debian's Chromium drives it (never a downloaded browser). MLflow tracks into a
store in the server's folder. The server, its kernels and every training
process are gone once the ``with`` block ends.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = Path(os.environ.get("NBEXEC_CHROMIUM", "/usr/bin/chromium"))
ARTIFACTS = Path(os.environ.get("NBEXEC_TEST_ARTIFACTS", REPO / "test-artifacts"))
STARTUP_TIMEOUT_S = 90

# True once the open notebook's kernel is started, connected to this page and idle. Run-all sent
# before that can be swallowed (seen under load: outputs cleared, nothing executed); and a session
# created from outside the page raced the page's own kernel start (two kernels, the widgets bound
# to the other one), so the page starts its kernel itself and the tests wait on that kernel.
KERNEL_READY_JS = """() => {
    const widget = window.jupyterapp && window.jupyterapp.shell.currentWidget;
    const kernel = widget && widget.sessionContext && widget.sessionContext.session
        && widget.sessionContext.session.kernel;
    return Boolean(kernel && kernel.connectionStatus === 'connected' && kernel.status === 'idle');
}"""


@dataclass
class Lab:
    url: str
    token: str
    server: subprocess.Popen[bytes]
    workdir: Path
    log: Path

    def open(self, page: Any, notebook: str) -> None:
        """Open ``notebook`` in ``page`` and wait for its own kernel to be ready."""
        page.add_locator_handler(
            page.locator(".jp-Dialog", has_text="Select Kernel"),
            lambda dialog: dialog.get_by_role("button", name="Select").click(),
        )
        page.goto(f"{self.url}/lab/tree/{notebook}?token={self.token}")
        page.wait_for_function(KERNEL_READY_JS, timeout=120_000)


@contextmanager
def open_lab(root: Path, files: Mapping[str, str]) -> Iterator[Lab]:
    """Serve ``files`` (name -> text) from ``root/work`` in a JupyterLab of its own."""
    work, home = root / "work", root / "home"
    work.mkdir(parents=True)
    for name, text in files.items():
        (work / name).write_text(text)
    settings = home / "settings"
    notification = settings / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    notification.parent.mkdir(parents=True)
    notification.write_text(json.dumps({"fetchNews": "false", "checkForUpdates": False}))
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
        yield Lab(url=url, token=token, server=server, workdir=work, log=log)
    finally:
        tree = [server, *_descendants(server.pid)]
        server.terminate()  # the server shuts its kernels down on SIGTERM
        procs = [p for p in (_proc(q) for q in tree) if p is not None]
        _, alive = psutil.wait_procs(procs, timeout=30)
        for p in alive:
            p.kill()


def report_page(page: Any, lab: Lab) -> None:
    """Print what the page and the server looked like (pytest shows it with the failure)."""
    try:
        print("--- cell outputs:\n", "\n".join(page.locator(".jp-OutputArea-output").all_inner_texts())[-4000:])
    except Exception as err:  # noqa: BLE001 - a diagnostic must not hide the failure
        print(f"--- cell outputs unreadable: {err}")
    print("--- jupyterlab.log (tail):\n", lab.log.read_text(errors="replace")[-4000:] if lab.log.exists() else "")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_until_serving(url: str, token: str, server: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"JupyterLab exited with {server.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)  # polling the server's readiness, not standing in for an event
    pytest.fail(f"JupyterLab did not answer in {STARTUP_TIMEOUT_S} s:\n{log.read_text()[-3000:]}")


def _proc(p: object) -> psutil.Process | None:
    try:
        return p if isinstance(p, psutil.Process) else psutil.Process(p.pid)  # type: ignore[attr-defined]
    except psutil.NoSuchProcess:
        return None


def _descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []

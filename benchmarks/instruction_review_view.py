"""Screenshot of the instruction/chat review interface in a real Label Studio.

Curates a small chat file (two answers held: PII, truncation), pushes the held rows with
`curagate review push`'s code, logs in as the admin with headless Chromium (driven over the
DevTools protocol) and saves the labelling view of the chat task:
benchmarks/results/instruction_review_view.png (and a small JSON beside it).

    PYTHONPATH=$PWD .venv/bin/python benchmarks/instruction_review_view.py

Needs `chromium` on PATH and Label Studio's venv (`curagate labelstudio start` makes it).
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import websockets

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
PNG = RESULTS / "instruction_review_view.png"
WINDOW = (1280, 1100)
RENDER_WAIT_S = 20.0  # the labelling app loads its bundle and the task after navigation


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _chat_files(root: Path) -> tuple[Path, Path]:
    def chat(i: int, question: str, answer: str) -> dict:
        turns = [
            {"role": "system", "content": "You are a bank assistant."},
            {"role": "user", "content": question},
            {"role": "assistant", "content": "Could you tell me a little more about it?"},
            {"role": "user", "content": f"It is about my order {1000 + i}."},
            {"role": "assistant", "content": answer},
        ]
        return {"id": f"c{i}", "messages": turns}

    pairs = [
        ("where is my card?", "Your new card arrives within three working days of the order."),
        ("my transfer is missing", "Please call us on +44 20 7946 0958 so we can check the transfer."),
        ("how do I freeze it?", "You can freeze the card in the app under Cards, then tap Freeze and"),
        ("top up pending", "Top-ups from a new card can take up to an hour to show."),
    ]
    train, test = root / "chat.jsonl", root / "chat_test.jsonl"
    train.write_text("".join(json.dumps(chat(i, q, a)) + "\n" for i, (q, a) in enumerate(pairs)))
    test.write_text(
        json.dumps(chat(9, "what is the exchange rate?", "It is shown before you confirm.")) + "\n"
    )
    return train, test


def _session_cookies(url: str, email: str, password: str) -> dict[str, str]:
    with httpx.Client(base_url=url, follow_redirects=True, timeout=30) as client:
        page = client.get("/user/login/")
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)
        if token is None:
            raise RuntimeError("no CSRF token on the login page")
        client.post(
            "/user/login/",
            data={"csrfmiddlewaretoken": token.group(1), "email": email, "password": password},
            headers={"Referer": f"{url}/user/login/"},
        )
        cookies = {c.name: c.value for c in client.cookies.jar}
    if "sessionid" not in cookies:
        raise RuntimeError("login failed: no session cookie")
    return cookies


async def _screenshot(debug_port: int, url: str, cookies: dict[str, str], target: str) -> bytes:
    deadline = time.monotonic() + 30
    while True:
        try:
            pages = httpx.get(f"http://127.0.0.1:{debug_port}/json", timeout=2).json()
            ws_url = next(p["webSocketDebuggerUrl"] for p in pages if p.get("type") == "page")
            break
        except (httpx.HTTPError, StopIteration):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)
    async with websockets.connect(ws_url, max_size=64 * 2**20) as ws:
        counter = 0

        async def call(method: str, **params: object) -> dict:
            nonlocal counter
            counter += 1
            await ws.send(json.dumps({"id": counter, "method": method, "params": params}))
            while True:
                msg = json.loads(await ws.recv())
                if msg.get("id") == counter:
                    return msg.get("result", {})

        host = url.split("//", 1)[1].split(":")[0]
        for name, value in cookies.items():
            await call("Network.setCookie", name=name, value=value, domain=host, path="/")
        await call("Emulation.setDeviceMetricsOverride", width=WINDOW[0], height=WINDOW[1],
                   deviceScaleFactor=1, mobile=False)  # fmt: skip
        await call("Page.enable")
        await call("Page.navigate", url=target)
        await asyncio.sleep(RENDER_WAIT_S)
        shot = await call("Page.captureScreenshot", format="png")
    return base64.b64decode(shot["data"])


def main() -> int:
    from flows.labelstudio import (
        connect,
        find_project,
        list_tasks,
        load_credentials,
        push_flags,
        start_server,
        stop_server,
    )
    from flows.pipeline import run_curation, write_run
    from schemas.params import params_from_dict

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        print("chromium not found", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data_dir = root / "ls"
        raw = {
            "instruction": {"policy": {"non_target_language": "off"}},
            "labelstudio": {"server": {"venv": str(ROOT / ".venv-labelstudio"), "data_dir": str(data_dir)}},
        }
        params = params_from_dict(raw)
        cfg = params.labelstudio
        train, test = _chat_files(root)
        out = root / "out"
        write_run(run_curation(train, test, params=params, until="review", show_progress=False), out)
        state = start_server(cfg.server, port=_free_port(), data_dir=data_dir)
        browser = None
        try:
            pushed = push_flags(connect(cfg), out, cfg)
            ls = connect(cfg)
            project_id = find_project(ls, cfg.instruction_project_title)
            tasks = {t["data"]["flag_id"]: t for t in list_tasks(ls, project_id, page_size=100)}
            task = tasks["c2"]  # the truncated answer
            creds = load_credentials(data_dir)
            cookies = _session_cookies(state.url, cfg.server.username, creds["password"])
            port = _free_port()
            browser = subprocess.Popen(
                [chromium, "--headless=new", "--no-sandbox", "--disable-gpu",
                 f"--remote-debugging-port={port}", f"--user-data-dir={root / 'chrome'}", "about:blank"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            target = f"{state.url}/projects/{project_id}/data?task={task['id']}"
            png = asyncio.run(_screenshot(port, state.url, cookies, target))
        finally:
            if browser is not None:
                browser.terminate()
                browser.wait(timeout=20)
            stop_server(data_dir, timeout_s=cfg.server.stop_timeout_s)
    RESULTS.mkdir(parents=True, exist_ok=True)
    PNG.write_bytes(png)
    summary = {
        "pushed": pushed.imported,
        "pii_masked": pushed.pii_masked,
        "task": {k: task["data"][k] for k in ("flag_id", "issue", "text", "response", "reasons")},
        "png": str(PNG.relative_to(ROOT)),
    }
    (RESULTS / "instruction_review_view.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The Autobahn|Testsuite fuzzing client against Bastion's WebSocket echo: the conformance run.

    python tests/websocket/autobahn/run.py [--cases '*'] [--wstest 'wstest'] [--keep DIR]

Starts a Bastion server (a native ``App.websocket`` echo route, limits raised to the suite's
16 MiB messages) on a free loopback port, runs ``wstest -m fuzzingclient`` against it, writes
the suite's summary to ``report.json`` beside this file, and exits non-zero unless every
case passes: OK, NON-STRICT or INFORMATIONAL, as Autobahn itself counts a pass, with a clean
close. It takes about a quarter of an hour (section 9 sends 16 MiB messages, sections 12 and
13 compress), so it is not part of the pytest run. ``autobahntestsuite`` runs on Python 2.7
only; see README.md beside this file for setting it up.
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent.parent
PASSING = ("OK", "NON-STRICT", "INFORMATIONAL")
PASSING_CLOSE = ("OK", "INFORMATIONAL")

SERVER = """
import sys
sys.path.insert(0, {repo!r})
from bastion import App
from bastion.engine import run
from bastion.websocket import WebSocketConfig

size = 32 * 1024 * 1024
app = App(websocket=WebSocketConfig(max_message_size=size, max_frame_size=size))


@app.websocket("/")
async def echo(ws):
    async for message in ws:
        await ws.send(message)


run(app, ["127.0.0.1:{port}"])
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_listening(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("the server did not start")


def summarize(index: dict[str, dict[str, str]]) -> list[str]:
    """The cases that did not pass, as lines to print."""
    failed = []
    for case, result in sorted(index.items(), key=lambda item: _case_key(item[0])):
        if result["behavior"] not in PASSING or result["behaviorClose"] not in PASSING_CLOSE:
            failed.append(f"{case}: {result['behavior']} / close {result['behaviorClose']}")
    return failed


def _case_key(case: str) -> list[int]:
    return [int(part) for part in case.split(".")]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cases", default="*", help="comma-separated case patterns")
    parser.add_argument("--wstest", default="wstest", help="the command that runs wstest")
    parser.add_argument("--keep", type=Path, help="also keep the HTML reports here")
    args = parser.parse_args()
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="autobahn-") as tmp:
        work = Path(tmp)
        spec = {
            "outdir": str(work / "reports"),
            "servers": [{"agent": "bastion", "url": f"ws://127.0.0.1:{port}"}],
            "cases": args.cases.split(","),
            "exclude-cases": [],
            "exclude-agent-cases": {},
        }
        (work / "fuzzingclient.json").write_text(json.dumps(spec))
        script = SERVER.format(repo=str(REPO), port=port)
        with (work / "server.log").open("wb") as log:
            server = subprocess.Popen([sys.executable, "-c", script], stdout=log, stderr=log)
        try:
            wait_listening(port)
            command = [*shlex.split(args.wstest), "-m", "fuzzingclient", "-s", "fuzzingclient.json"]
            subprocess.run(command, cwd=work, check=True, stdout=subprocess.DEVNULL)
        finally:
            server.terminate()
            server.wait(10)
        index = json.loads((work / "reports" / "index.json").read_text())["bastion"]
        if args.keep is not None:
            shutil.copytree(work / "reports", args.keep, dirs_exist_ok=True)
    report = {case: index[case] for case in sorted(index, key=_case_key)}
    (HERE / "report.json").write_text(json.dumps(report, indent=1) + "\n")
    failed = summarize(report)
    counts: dict[str, int] = {}
    for result in report.values():
        counts[result["behavior"]] = counts.get(result["behavior"], 0) + 1
    print(f"{len(report)} cases: " + ", ".join(f"{n} {k}" for k, n in sorted(counts.items())))
    for line in failed:
        print("FAILED", line)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

"""Running wrk on the client core and turning its text report into numbers."""

import re
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path

from bench.harness.procs import CLIENT_CORE, pinned

_UNIT_TO_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}
_DURATION = r"([\d.]+)(us|ms|s|m|h)"


class WrkError(RuntimeError):
    """wrk could not run, timed out, or printed something we cannot read."""


@dataclass
class WrkResult:
    requests: int
    requests_per_sec: float
    p50_ms: float | None
    p75_ms: float | None
    p90_ms: float | None
    p99_ms: float | None
    connect_errors: int
    read_errors: int
    write_errors: int
    timeouts: int
    non_2xx_3xx: int

    @property
    def socket_errors(self) -> int:
        return self.connect_errors + self.read_errors + self.write_errors + self.timeouts

    @property
    def errors(self) -> int:
        return self.socket_errors + self.non_2xx_3xx

    def as_dict(self) -> dict[str, object]:
        data: dict[str, object] = asdict(self)
        data["errors"] = self.errors
        return data


def build_command(
    url: str,
    duration_s: float,
    connections: int,
    script: Path | None = None,
    script_args: tuple[str, ...] = (),
    core: str | None = CLIENT_CORE,
) -> list[str]:
    """The exact wrk invocation: one thread, pinned to ``core`` (None: not), percentiles."""
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{duration_s:g}s", "--latency"]
    if script is not None:
        argv += ["-s", str(script)]
    argv.append(url)
    if script_args:
        argv += ["--", *script_args]
    return pinned(argv, core)


def run(argv: list[str], duration_s: float, cwd: Path | None = None) -> str:
    """Run wrk and return its stdout; the timeout leaves wrk room to drain and report."""
    try:
        done = subprocess.run(
            argv, cwd=cwd, capture_output=True, text=True, timeout=duration_s + 30, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise WrkError(f"wrk did not finish within {duration_s + 30:.0f}s") from exc
    except FileNotFoundError as exc:
        raise WrkError(f"cannot run {argv[0]!r}: {exc}") from exc
    if done.returncode != 0:
        raise WrkError(f"wrk exited {done.returncode}: {done.stderr.strip() or done.stdout}")
    return done.stdout


def _to_ms(value: str, unit: str) -> float:
    return float(value) * _UNIT_TO_MS[unit]


def _percentile(text: str, pct: int) -> float | None:
    match = re.search(rf"^\s*{pct}(?:\.0+)?%\s+{_DURATION}\s*$", text, re.MULTILINE)
    return _to_ms(*match.groups()) if match else None


def _int_after(pattern: str, text: str) -> int:
    match = re.search(pattern, text)
    return int(match.group(1)) if match else 0


def parse(text: str) -> WrkResult:
    """Parse wrk 4.x output produced with ``--latency``."""
    rps = re.search(r"^Requests/sec:\s+([\d.]+)", text, re.MULTILINE)
    total = re.search(r"^\s*(\d+) requests in ", text, re.MULTILINE)
    if not rps or not total:
        raise WrkError(f"unrecognised wrk output:\n{text}")
    sockets = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text
    )
    connect, read, write, timeout = (int(g) for g in sockets.groups()) if sockets else (0,) * 4
    return WrkResult(
        requests=int(total.group(1)),
        requests_per_sec=float(rps.group(1)),
        p50_ms=_percentile(text, 50),
        p75_ms=_percentile(text, 75),
        p90_ms=_percentile(text, 90),
        p99_ms=_percentile(text, 99),
        connect_errors=connect,
        read_errors=read,
        write_errors=write,
        timeouts=timeout,
        non_2xx_3xx=_int_after(r"Non-2xx or 3xx responses:\s+(\d+)", text),
    )

"""Result rows, the printed table, and the JSON dump."""

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.harness.contention import BUSY_THRESHOLD_PCT
from bench.harness.wrk import WrkResult

OK = "ok"
NOTE_WIDTH = 110


@dataclass
class Row:
    """One server in one scenario; ``status`` is ``ok`` or says what went wrong."""

    server: str
    description: str
    status: str = OK
    message: str = ""
    command: list[str] = field(default_factory=list)
    wrk_command: list[str] = field(default_factory=list)
    wrk_output: str = ""
    result: WrkResult | None = None
    foreign_cpu_pct: float | None = None  # CPU used by other processes, % of one core
    # CPU time of the server's process tree per request, in microseconds: unlike req/s, it
    # hardly moves when other work takes turns on the server's core.
    server_cpu_us: float | None = None
    rounds_rps: list[float] = field(default_factory=list)  # req/s of the rounds that count
    rounds: list[dict[str, object]] = field(default_factory=list)  # every round, for the JSON

    @property
    def disturbed(self) -> bool:
        return (self.foreign_cpu_pct or 0.0) > BUSY_THRESHOLD_PCT

    @property
    def flagged(self) -> bool:
        errors = self.result is not None and self.result.errors > 0
        return self.status != OK or errors or self.disturbed

    def as_dict(self) -> dict[str, object]:
        return {
            "server": self.server,
            "description": self.description,
            "status": self.status,
            "message": self.message,
            "command": self.command,
            "wrk_command": self.wrk_command,
            "wrk_output": self.wrk_output,
            "result": self.result.as_dict() if self.result else None,
            "foreign_cpu_pct": self.foreign_cpu_pct,
            "server_cpu_us": self.server_cpu_us,
            "rounds_rps": self.rounds_rps,
            "rounds": self.rounds,
        }

    def summary(self) -> dict[str, object]:
        """The per-round record kept in the JSON next to the chosen (median) round."""
        return {
            "status": self.status,
            "requests_per_sec": _rps(self),
            "p50_ms": self.result.p50_ms if self.result else None,
            "p99_ms": self.result.p99_ms if self.result else None,
            "errors": self.result.errors if self.result else None,
            "foreign_cpu_pct": self.foreign_cpu_pct,
            "server_cpu_us": self.server_cpu_us,
        }


def median_row(rows: list[Row]) -> Row:
    """The round with the median req/s (the lower one for an even count).

    Rounds that other processes disturbed only count when no round was clean: a stolen
    core always lowers req/s, so mixing them in would bias the median down. If no round
    produced numbers, the last attempt explains why.
    """
    measured = [row for row in rows if row.result is not None]
    if not measured:
        return rows[-1]
    pool = [row for row in measured if not row.disturbed] or measured
    ranked = sorted(pool, key=_rps)
    chosen = ranked[(len(ranked) - 1) // 2]
    chosen.rounds_rps = [_rps(row) for row in pool]
    chosen.rounds = [row.summary() for row in rows]
    return chosen


def _rps(row: Row) -> float:
    return row.result.requests_per_sec if row.result else 0.0


def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 1:
        return f"{value * 1000:.0f}us"
    return f"{value:.2f}ms" if value < 1000 else f"{value / 1000:.2f}s"


def _ratio(row: Row, baseline: Row | None) -> str:
    if row.result is None or baseline is None or baseline.result is None:
        return "-"
    if baseline.result.requests_per_sec == 0:
        return "-"
    return f"{row.result.requests_per_sec / baseline.result.requests_per_sec:.2f}x"


def _clip(text: str, limit: int = NOTE_WIDTH) -> str:
    """Keep the table readable; the full message is in the JSON output."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _error_detail(result: WrkResult) -> str:
    parts = [
        f"{label} {count}"
        for label, count in (
            ("connect", result.connect_errors),
            ("read", result.read_errors),
            ("write", result.write_errors),
            ("timeout", result.timeouts),
            ("non-2xx/3xx", result.non_2xx_3xx),
        )
        if count
    ]
    return "ERRORS: " + ", ".join(parts)


def _spread(row: Row) -> str:
    if len(row.rounds_rps) < 2:
        return "-"
    return f"{min(row.rounds_rps) / 1000:.1f}k-{max(row.rounds_rps) / 1000:.1f}k"


def _cpu(row: Row) -> str:
    return "-" if row.server_cpu_us is None else f"{row.server_cpu_us:.1f}"


def _cells(row: Row, baselines: dict[str, Row | None], latency: bool, spread: bool) -> list[str]:
    result = row.result
    if result is None:
        empty = ["-"] * (5 + len(baselines) + spread)
        return [row.server, *empty, _clip(f"{row.status.upper()}: {row.message}")]
    errors = f"{result.errors} !" if result.errors else "0"
    notes = [_error_detail(result)] if result.errors else [row.message] if row.message else []
    if row.disturbed:
        notes.append(f"BUSY MACHINE: other processes used {row.foreign_cpu_pct:.0f}% of a core")
    ratios = [_ratio(row, base) for base in baselines.values()]
    return [
        row.server,
        f"{result.requests_per_sec:,.0f}",
        *([_spread(row)] if spread else []),
        _ms(result.p50_ms) if latency else "n/a",
        _ms(result.p99_ms) if latency else "n/a",
        errors,
        _cpu(row),
        *ratios,
        "; ".join(notes),
    ]


def table(
    rows: list[Row],
    baseline_names: tuple[str, ...],
    latency: bool = True,
    markdown: bool = False,
) -> str:
    """Aligned text table (or Markdown), with one ratio column per scenario baseline."""
    by_name = {row.server: row for row in rows}
    baselines = {name: by_name.get(name) for name in baseline_names}
    spread = any(len(row.rounds_rps) > 1 for row in rows)
    header = [
        "server",
        "req/s",
        *(["range"] if spread else []),
        "p50",
        "p99",
        "errors",
        "cpu us/req",
        *(f"vs {b}" for b in baselines),
        "note",
    ]
    body = [_cells(row, baselines, latency, spread) for row in rows]
    right = set(range(1, len(header) - 1))  # numbers; server and note stay left
    if markdown:
        rule = ["---:" if i in right else "---" for i in range(len(header))]
        lines = [header, rule, *body]
        return "\n".join(("| " + " | ".join(cells) + " |").replace("  |", " |") for cells in lines)
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]

    def fmt(cells: list[str]) -> str:
        return "  ".join(
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    return "\n".join([fmt(header), fmt(["-" * w for w in widths]), *map(fmt, body)])


def write_json(path: Path, meta: dict[str, object], rows: list[Row]) -> None:
    payload = {**meta, "rows": [row.as_dict() for row in rows]}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2) + "\n")


def read_json(path: Path) -> tuple[dict[str, Any], list[Row]]:
    """Load what ``write_json`` saved, so a table can be re-rendered (e.g. as Markdown)."""
    payload: dict[str, Any] = json.loads(path.read_text())
    rows = [_row_from_dict(data) for data in payload.pop("rows")]
    return payload, rows


def _row_from_dict(data: dict[str, Any]) -> Row:
    result = data.get("result")
    fields = {name for name in WrkResult.__dataclass_fields__}
    return Row(
        server=data["server"],
        description=data["description"],
        status=data["status"],
        message=data["message"],
        command=data["command"],
        wrk_command=data["wrk_command"],
        wrk_output=data["wrk_output"],
        result=WrkResult(**{k: v for k, v in result.items() if k in fields}) if result else None,
        foreign_cpu_pct=data.get("foreign_cpu_pct"),
        server_cpu_us=data.get("server_cpu_us"),
        rounds_rps=data.get("rounds_rps", []),
        rounds=data.get("rounds", []),
    )

"""Draw the site's pictures as SVG files in docs/images/, with no plotting library.

    python docs/_build/figures.py            # write them
    python docs/_build/figures.py --check    # exit 1 naming any figure that is out of date

The ring-hash figure is computed from ``bastion.balancer`` itself, with the hosts that
``bench/hashing.py`` uses; the latency figure reads the latest reverse-proxy table of
docs/benchmarks.md; the two diagrams are drawn from the boxes listed here.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from xml.sax.saxutils import escape

ROOT = Path(__file__).resolve().parents[2]
IMAGES = ROOT / "docs" / "images"
BENCHMARKS = ROOT / "docs" / "benchmarks.md"
FONT = 'font-family="Helvetica, Arial, sans-serif"'
INK, MUTED, ACCENT, SECOND = "#263238", "#78909c", "#3949ab", "#ef6c00"

sys.path.insert(0, str(ROOT))


class Canvas:
    """An SVG document built up from rectangles, lines and text."""

    def __init__(self, width: int, height: int, title: str) -> None:
        self.width, self.height = width, height
        self.parts = [
            f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
            f'width="{width}" height="{height}" role="img" aria-label="{escape(title)}">',
            f"<title>{escape(title)}</title>",
            '<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" '
            f'markerHeight="7" orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="{INK}"/>'
            "</marker></defs>",
            f'<rect width="{width}" height="{height}" fill="#ffffff"/>',
        ]

    def text(
        self,
        x: float,
        y: float,
        words: str,
        size: int = 13,
        anchor: str = "middle",
        color: str = INK,
        weight: str = "normal",
    ) -> None:
        self.parts.append(
            f'<text x="{x:.1f}" y="{y:.1f}" {FONT} font-size="{size}" fill="{color}" '
            f'text-anchor="{anchor}" font-weight="{weight}">{escape(words)}</text>'
        )

    def rect(self, x: float, y: float, w: float, h: float, fill: str, stroke: str = "") -> None:
        line = f' stroke="{stroke}" stroke-width="1.5"' if stroke else ""
        self.parts.append(
            f'<rect x="{x:.1f}" y="{y:.1f}" width="{w:.1f}" height="{h:.1f}" rx="3" '
            f'fill="{fill}"{line}/>'
        )

    def line(
        self,
        x1: float,
        y1: float,
        x2: float,
        y2: float,
        color: str = INK,
        arrow: bool = False,
        dash: bool = False,
    ) -> None:
        extra = ' marker-end="url(#arrow)"' if arrow else ""
        extra += ' stroke-dasharray="5,4"' if dash else ""
        self.parts.append(
            f'<line x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}" stroke="{color}" '
            f'stroke-width="1.5"{extra}/>'
        )

    def box(self, x: float, y: float, w: float, h: float, lines: Sequence[str]) -> None:
        """A labelled box: the first line bold, the rest smaller."""
        self.rect(x, y, w, h, "#e8eaf6", ACCENT)
        top = y + h / 2 - (len(lines) - 1) * 8 + 4
        for number, words in enumerate(lines):
            bold = number == 0
            self.text(
                x + w / 2,
                top + number * 16,
                words,
                13 if bold else 11,
                weight="bold" if bold else "normal",
                color=INK if bold else MUTED,
            )

    def svg(self) -> str:
        return "\n".join([*self.parts, "</svg>"]) + "\n"


def request_flow() -> str:
    """One request, from the client's bytes to the handler and back."""
    canvas = Canvas(900, 315, "How a request flows through Bastion")
    steps = [
        ("client", "TCP or TLS"),
        ("HTTPConnection", "one per socket,", "on the event loop"),
        ("RequestParser", "httptools (llhttp)", "+ Bastion's limits"),
        ("Exchange", "head, body stream,", "response framing"),
        ("handler adapter", "App, compat,", "WSGI, ASGI, static"),
    ]
    width, gap, y = 150, 32, 40
    for index, lines in enumerate(steps):
        x = 20 + index * (width + gap)
        canvas.box(x, y, width, 70, lines)
        if index:
            canvas.line(x - gap, y + 35, x - 2, y + 35, arrow=True)
    adapter = 20 + 4 * (width + gap) + width / 2
    canvas.box(560, 180, 150, 62, ["event loop", "async def routes, ASGI,", "static, balancer"])
    canvas.box(730, 180, 150, 62, ["thread pool", "bounded: --threads,", "--queue-size"])
    canvas.line(adapter, y + 70, 635, 178, arrow=True)
    canvas.line(adapter, y + 70, 805, 178, arrow=True)
    canvas.text(640, 150, "async", 11, color=MUTED)
    canvas.text(858, 150, "blocking", 11, color=MUTED)
    canvas.box(
        200, 180, 300, 62, ["response", "header block + body: one write", "(sendfile for files)"]
    )
    canvas.line(558, 211, 502, 211, arrow=True)
    canvas.line(805, 244, 805, 270)
    canvas.line(805, 270, 350, 270)
    canvas.line(350, 270, 350, 244, arrow=True)
    canvas.line(200, 211, 95, 211)
    canvas.line(95, 211, 95, 112, arrow=True)
    canvas.text(
        450,
        300,
        "Deadlines and limits are the engine's: one sweep a second checks "
        "every connection; no handler touches a socket.",
        12,
        color=MUTED,
    )
    return canvas.svg()


def process_tree() -> str:
    """The supervisor, its admin listener and its workers."""
    canvas = Canvas(900, 375, "The supervisor and its worker processes")
    canvas.box(
        300,
        20,
        300,
        70,
        [
            "supervisor",
            "binds the listeners, signals, reload,",
            "health checks, aggregated metrics",
        ],
    )
    canvas.box(650, 20, 230, 70, ["admin listener", "/healthz /readyz /metrics", "dashboard, /api"])
    canvas.line(600, 55, 648, 55, arrow=True)
    for index in range(3):
        x = 40 + index * 290
        canvas.box(
            x,
            150,
            240,
            70,
            [f"worker {index}", "imports the app; one event loop;", "counts in plain numbers"],
        )
        canvas.line(450, 92, x + 120, 148, arrow=True)
        canvas.box(x, 260, 110, 56, ["event loop", "every socket"])
        canvas.box(x + 130, 260, 110, 56, ["thread pool", "blocking code"])
        canvas.line(x + 55, 222, x + 55, 258, arrow=True)
        canvas.line(x + 185, 222, x + 185, 258, arrow=True)
    canvas.text(
        450,
        340,
        "fork; a dead worker is replaced; SIGHUP starts a new generation "
        "before the old one drains.",
        12,
        color=MUTED,
    )
    canvas.text(
        450,
        360,
        "Figures flow up: workers report counters to the supervisor, "
        "which serves them for the whole server.",
        12,
        color=MUTED,
    )
    return canvas.svg()


def ring_shares(count: int = 100) -> dict[str, list[float]]:
    """Each server's share of the hash space, as a multiple of a fair share, sorted."""
    from bastion.balancer import Maglev, PoolSnapshot, RingHash

    names = [f"10.{n // 62500}.{n // 250 % 250}.{n % 250}:8000" for n in range(count)]
    pool = PoolSnapshot.of(names)
    shares = {}
    for name, table in (("ring-hash", RingHash(pool)), ("maglev", Maglev(pool))):
        values = table.shares().values()
        shares[name] = sorted((share * count for share in values), reverse=True)
    return shares


def bar_chart_frame(
    canvas: Canvas,
    left: int,
    top: int,
    width: int,
    height: int,
    low: float,
    high: float,
    ticks: Sequence[float],
    label: str,
) -> None:
    """Axes with horizontal grid lines at ``ticks`` (values between low and high)."""
    for tick in ticks:
        y = top + height - (tick - low) / (high - low) * height
        canvas.line(left, y, left + width, y, "#eceff1")
        canvas.text(left - 6, y + 4, f"{tick:g}", 11, "end", MUTED)
    canvas.line(left, top, left, top + height, MUTED)
    canvas.line(left, top + height, left + width, top + height, MUTED)
    canvas.text(18, top + height / 2, label, 12, color=MUTED)


def ring_hash_spread() -> str:
    shares = ring_shares()
    canvas = Canvas(900, 380, "Share of the hash space per server, 100 servers")
    left, top, width, height, low, high = 90, 50, 780, 260, 0.94, 1.06
    canvas.text(
        450,
        28,
        "Each of 100 equal servers' share of the hash space (1 = a fair share), busiest first",
        14,
        weight="bold",
    )
    bar_chart_frame(
        canvas,
        left,
        top,
        width,
        height,
        low,
        high,
        [0.94, 0.96, 0.98, 1.0, 1.02, 1.04, 1.06],
        "share",
    )
    colors = {"ring-hash": ACCENT, "maglev": SECOND}
    for name, values in shares.items():
        step = width / len(values)
        points = " ".join(
            f"{left + (i + 0.5) * step:.1f},"
            f"{top + height - (min(max(v, low), high) - low) / (high - low) * height:.1f}"
            for i, v in enumerate(values)
        )
        canvas.parts.append(
            f'<polyline points="{points}" fill="none" stroke="{colors[name]}" stroke-width="2"/>'
        )
    target = top + height - (1.05 - low) / (high - low) * height
    canvas.line(left, target, left + width, target, "#c62828", dash=True)
    canvas.text(
        left + width - 4, target - 6, "target at 100 servers: spread ≤ 5%", 11, "end", "#c62828"
    )
    ring_spread = (shares["ring-hash"][0] - 1) * 100
    maglev_spread = (shares["maglev"][0] - 1) * 100
    canvas.rect(left + 20, top + height + 30, 14, 4, ACCENT)
    canvas.text(
        left + 40,
        top + height + 36,
        f"ring hash, 8,192 points per server: busiest +{ring_spread:.1f}%",
        12,
        "start",
    )
    canvas.rect(left + 430, top + height + 30, 14, 4, SECOND)
    canvas.text(
        left + 450,
        top + height + 36,
        f"Maglev, 65,537 slots: busiest +{maglev_spread:.2f}%",
        12,
        "start",
    )
    return canvas.svg()


def proxy_latency(markdown: str) -> list[tuple[str, float, float]]:
    """(proxy, p50 ms, p99 ms) from the last table of the Reverse proxy section."""
    section = markdown.split("\n## Reverse proxy", 1)
    if len(section) < 2:
        raise SystemExit(f"{BENCHMARKS}: no '## Reverse proxy' section")
    body = section[1].split("\n## ", 1)[0]
    tables = re.findall(r"^\| proxy \| req/s .*?(?=\n\n|\Z)", body, re.M | re.S)
    if not tables:
        raise SystemExit(f"{BENCHMARKS}: no '| proxy | req/s |' table under Reverse proxy")
    rows = [line.split("|")[1:-1] for line in tables[-1].splitlines()]
    header = [cell.strip() for cell in rows[0]]
    p50, p99 = header.index("p50"), header.index("p99")
    # A baseline row is an older build measured for comparison, not a proxy to show.
    return [
        (cells[0].strip(), _ms(cells[p50]), _ms(cells[p99]))
        for cells in rows[2:]
        if cells[0].strip() != "bastion-baseline"
    ]


def _ms(cell: str) -> float:
    text = cell.strip()
    if text.endswith("ms"):
        return float(text[:-2])
    if text.endswith("us"):
        return float(text[:-2]) / 1000
    raise SystemExit(f"{BENCHMARKS}: cannot read a latency from {text!r}")


def balancer_latency(markdown: str) -> str:
    rows = proxy_latency(markdown)
    canvas = Canvas(900, 380, "Reverse proxies' latency under the same load")
    left, top, width, height = 90, 50, 780, 250
    high = max(p99 for _, _, p99 in rows) * 1.1
    step = 5.0 if high > 10 else 1.0
    ticks = [step * n for n in range(int(high / step) + 1)]
    canvas.text(
        450,
        28,
        "Latency through each reverse proxy, wrk -c50, one upstream (docs/benchmarks.md)",
        14,
        weight="bold",
    )
    bar_chart_frame(canvas, left, top, width, height, 0, high, ticks, "ms")
    slot = width / len(rows)
    for index, (name, p50, p99) in enumerate(rows):
        x = left + index * slot + slot / 2
        for offset, value, color in ((-32, p50, ACCENT), (4, p99, SECOND)):
            bar = value / high * height
            canvas.rect(x + offset, top + height - bar, 28, bar, color)
            canvas.text(x + offset + 14, top + height - bar - 5, f"{value:g}", 11)
        canvas.text(x, top + height + 20, name, 12)
    canvas.rect(left + 250, top + height + 40, 14, 10, ACCENT)
    canvas.text(left + 270, top + height + 50, "p50", 12, "start")
    canvas.rect(left + 330, top + height + 40, 14, 10, SECOND)
    canvas.text(left + 350, top + height + 50, "p99", 12, "start")
    return canvas.svg()


def figures() -> dict[str, str]:
    markdown = BENCHMARKS.read_text(encoding="utf-8")
    return {
        "request-flow.svg": request_flow(),
        "process-tree.svg": process_tree(),
        "ring-hash-spread.svg": ring_hash_spread(),
        "balancer-latency.svg": balancer_latency(markdown),
    }


def stale(drawn: dict[str, str]) -> list[str]:
    """The figures whose file differs from what would be drawn now."""
    return [
        name
        for name, svg in drawn.items()
        if not (IMAGES / name).exists() or (IMAGES / name).read_text(encoding="utf-8") != svg
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="only report out-of-date figures")
    args = parser.parse_args(argv)
    drawn = figures()
    if args.check:
        for name in stale(drawn):
            print(f"docs/images/{name} is out of date: run python docs/_build/figures.py")
        return 1 if stale(drawn) else 0
    IMAGES.mkdir(exist_ok=True)
    for name, svg in drawn.items():
        (IMAGES / name).write_text(svg, encoding="utf-8")
        print(f"wrote docs/images/{name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The HTML page listing a directory: sorted, escaped, and readable on a phone.

Directories come first, then files, each in case-insensitive name order. Every name is
HTML-escaped for the page and percent-encoded for its link; names the server would refuse to
serve (Windows device names, control characters, symlinks leading outside the root) are left
out, so every link on the page works. The page is built on the thread pool: a directory can
hold many entries, and each one costs a ``stat``.
"""

from __future__ import annotations

import html
import os
import stat
import time
from dataclasses import dataclass
from urllib.parse import quote

from bastion.static.paths import MAX_NAME, Resolver, allowed_name

_STYLE = """
:root { color-scheme: light dark; }
body { font: 16px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0;
  padding: 1rem; max-width: 60rem; }
h1 { font-size: 1.25rem; margin: 0 0 1rem; overflow-wrap: anywhere; font-weight: 600; }
table { width: 100%; border-collapse: collapse; }
th, td { padding: .55rem .5rem; border-bottom: 1px solid rgba(128, 128, 128, .25);
  vertical-align: top; }
th { text-align: left; font-size: .8rem; text-transform: uppercase; opacity: .7; }
td.name { overflow-wrap: anywhere; width: 100%; }
td.name a { display: block; text-decoration: none; }
td.name a:hover { text-decoration: underline; }
tr.dir td.name a { font-weight: 600; }
td.size, td.modified, th.size, th.modified { white-space: nowrap; text-align: right;
  font-variant-numeric: tabular-nums; }
td.size, td.modified { font-size: .875rem; opacity: .8; }
@media (max-width: 32rem) {
  body { padding: .75rem; }
  thead { display: none; }
  tr { display: grid; grid-template-columns: auto minmax(0, 1fr);
    border-bottom: 1px solid rgba(128, 128, 128, .25); padding: .45rem 0; }
  td { border: 0; padding: 0 .25rem; }
  td.name { grid-column: 1 / -1; min-width: 0; }
  td.size { text-align: left; padding-right: .75rem; }
  td.modified { text-align: left; }
  tr.parent td.size, tr.parent td.modified { display: none; }
}
footer { margin-top: 1rem; font-size: .8rem; opacity: .6; }
"""


@dataclass(slots=True)
class Entry:
    name: str
    is_dir: bool
    size: int
    mtime: float


def read_entries(resolver: Resolver, directory: str) -> list[Entry]:
    """The entries of ``directory`` a client may follow, sorted for display (blocking)."""
    entries = []
    with os.scandir(directory) as scan:
        for item in scan:
            name = item.name
            if not allowed_name(name) or len(os.fsencode(name)) > MAX_NAME:
                continue
            if any(c < " " or c == "\x7f" or c == "\\" for c in name):
                continue
            try:
                if (
                    item.is_symlink()
                    and not resolver.follow_symlinks
                    and not resolver.contains(item.path)
                ):
                    continue
                info = item.stat()
            except OSError:
                continue  # removed meanwhile, or a dangling symlink
            is_dir = stat.S_ISDIR(info.st_mode)
            if not is_dir and not stat.S_ISREG(info.st_mode):
                continue
            entries.append(Entry(name, is_dir, info.st_size, info.st_mtime))
    entries.sort(key=lambda e: (not e.is_dir, e.name.casefold(), e.name))
    return entries


def human_size(size: int) -> str:
    if size < 1024:
        return f"{size} B"
    value = float(size)
    for unit in ("KiB", "MiB", "GiB", "TiB", "PiB"):
        value /= 1024
        if value < 1024 or unit == "PiB":
            return f"{value:.1f} {unit}" if value < 100 else f"{value:.0f} {unit}"
    return f"{size} B"  # pragma: no cover


def _display(text: str) -> str:
    """Undecodable bytes of a name (kept as surrogates) shown as U+FFFD."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _href(name: str) -> str:
    return quote(os.fsencode(name), safe="")


def render(entries: list[Entry], url_path: str, *, parent: bool) -> bytes:
    """The page for ``entries`` of the directory at ``url_path`` (already decoded)."""
    title = html.escape(f"Index of {_display(url_path)}", quote=False)
    rows = []
    if parent:
        rows.append(
            '<tr class="dir parent"><td class="name"><a href="../">../</a></td>'
            '<td class="size"></td><td class="modified"></td></tr>'
        )
    for entry in entries:
        shown = html.escape(_display(entry.name) + ("/" if entry.is_dir else ""))
        href = _href(entry.name) + ("/" if entry.is_dir else "")
        stamp = time.gmtime(entry.mtime)
        iso = time.strftime("%Y-%m-%dT%H:%M:%SZ", stamp)
        when = time.strftime("%Y-%m-%d %H:%M", stamp)
        if entry.is_dir:
            size_cell = '<td class="size">&mdash;</td>'
        else:
            size_cell = (
                f'<td class="size" data-bytes="{entry.size}" title="{entry.size} bytes">'
                f"{human_size(entry.size)}</td>"
            )
        rows.append(
            f'<tr class="{"dir" if entry.is_dir else "file"}">'
            f'<td class="name"><a href="{href}">{shown}</a></td>{size_cell}'
            f'<td class="modified"><time datetime="{iso}">{when}</time></td></tr>'
        )
    count = len(entries)
    page = (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{title}</title><style>{_STYLE}</style></head>\n"
        f"<body><h1>{title}</h1>\n"
        '<table><thead><tr><th class="name">Name</th><th class="size">Size</th>'
        '<th class="modified">Modified (UTC)</th></tr></thead>\n<tbody>\n'
        + "\n".join(rows)
        + f"\n</tbody></table>\n<footer>{count} {'entry' if count == 1 else 'entries'}"
        "</footer>\n</body></html>\n"
    )
    return page.encode("utf-8")


def listing_page(resolver: Resolver, directory: str, url_path: str, *, parent: bool) -> bytes:
    """Read and render in one call: the job handed to the thread pool."""
    return render(read_entries(resolver, directory), url_path, parent=parent)

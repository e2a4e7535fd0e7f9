"""Logging for ``bastion run``: the error log, the access log, or the user's own configuration.

The error log is the root logger (Bastion's own lines on ``bastion.server``, what goes wrong
with a request on ``bastion.error``, applications on their own loggers): stderr by default,
a file opened with ``WatchedFileHandler`` otherwise, so log rotation needs no signal. The
access log is not written through ``logging`` unless asked to: each worker writes its lines
in batches straight to ``access_log_file`` (stdout by default; a file is reopened when it is
rotated; see :mod:`bastion.observe.accesslog`), which is much cheaper per request.
``log_config`` hands everything to the standard library's ``dictConfig`` (a ``.json`` or
``.toml`` file) or ``fileConfig``; the access log then goes to the ``bastion.access`` logger,
for that configuration to route.
"""

from __future__ import annotations

import json
import logging
import logging.config
import logging.handlers
import os
import sys
from typing import Any

from bastion.cli.settings import ConfigError, Settings

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

ERROR_FORMAT = "%(asctime)s [%(process)d] %(levelname)s %(name)s: %(message)s"
# Below DEBUG, for lines too many to want even while debugging (uvicorn's level of that name).
TRACE = 5
logging.addLevelName(TRACE, "TRACE")

# Handlers this module installed, so a reload replaces them instead of adding more.
_installed: list[tuple[logging.Logger, logging.Handler]] = []


def configure_logging(settings: Settings) -> None:
    for logger, handler in _installed:
        logger.removeHandler(handler)
        handler.close()
    _installed.clear()
    path = settings["log_config"]
    if path:
        _apply_log_config(path, settings)
        return
    root = logging.getLogger()
    error_handler = _handler(settings["error_log_file"], sys.stderr)
    error_handler.setFormatter(logging.Formatter(ERROR_FORMAT))
    root.addHandler(error_handler)
    root.setLevel(settings["log_level"].upper())
    _installed.append((root, error_handler))
    target = settings["access_log_file"]
    if settings["access_log"] and target != "-":
        # Workers open it themselves; trying here turns a bad path into one clear message.
        try:
            os.close(os.open(target, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644))
        except OSError as exc:
            raise ConfigError(f"cannot open log file {target}: {exc.strerror}") from None


def announce(logger: logging.Logger, message: str, prefix: str = "Bastion ") -> None:
    """Log ``message`` at INFO, and print it on stderr too (after ``prefix``) when the log
    does not show it there (a higher --log-level, a log file, --log-config): whoever starts
    the server sees where it serves, once."""
    logger.info("%s", message)
    show(logger, message, prefix)


def show(logger: logging.Logger, message: str, prefix: str = "Bastion ") -> None:
    """Print ``message`` on stderr unless ``logger`` has shown it there at INFO already."""
    if not _shows_on_stderr(logger, logging.INFO):
        print(prefix + message, file=sys.stderr, flush=True)


def _shows_on_stderr(logger: logging.Logger, level: int) -> bool:
    if not logger.isEnabledFor(level):
        return False
    current: logging.Logger | None = logger
    while current is not None:
        for handler in current.handlers:
            stream = getattr(handler, "stream", None)
            if stream in (sys.stderr, sys.__stderr__) and level >= handler.level:
                return True
        current = current.parent if current.propagate else None
    return False


def where(urls: list[str]) -> str:
    """The addresses served, said so that binding every interface is never a surprise."""
    shown = []
    for url in urls:
        if "://0.0.0.0:" in url:
            url += " (every IPv4 address of this machine)"
        elif "://[::]:" in url:
            url += " (every IPv6 address of this machine)"
        shown.append(url)
    return ", ".join(shown)


def _handler(target: str, stream: Any) -> logging.Handler:
    if target == "-":
        return logging.StreamHandler(stream)
    try:
        return logging.handlers.WatchedFileHandler(target)
    except OSError as exc:
        raise ConfigError(f"cannot open log file {target}: {exc.strerror}") from None


def _apply_log_config(path: str, settings: Settings) -> None:
    try:
        if path.endswith((".json", ".toml")):
            with open(path, "rb") as file:
                config: dict[str, Any] = (
                    json.load(file) if path.endswith(".json") else tomllib.load(file)
                )
            config.setdefault("version", 1)
            config.setdefault("disable_existing_loggers", False)
            logging.config.dictConfig(config)
        else:
            logging.config.fileConfig(path, disable_existing_loggers=False)
    except FileNotFoundError:
        raise settings.error("log_config", f"{path} does not exist") from None
    except Exception as exc:
        raise settings.error("log_config", f"cannot configure logging from {path}: {exc}") from exc

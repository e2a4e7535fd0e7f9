"""What monitoring a server runs with: the admin listener and the workers' side of it."""

from __future__ import annotations

from dataclasses import dataclass, field

from bastion.observe.metrics import DEFAULT_MAX_SERIES


@dataclass(frozen=True)
class MonitorConfig:
    """``admin_bind`` None means no admin listener; the workers still count (it is cheap)."""

    admin_bind: str | None = None
    admin_token: str | None = None
    shutdown_delay: float = 0.0
    health_checks: tuple[str, ...] = ()  # module:function, loaded in each worker
    health_check_timeout: float = 5.0
    health_path_prefix: str = ""
    max_series: int = DEFAULT_MAX_SERIES
    # A worker whose event loop has not beaten for this long fails liveness.
    beat_deadline: float = field(default=3.0)

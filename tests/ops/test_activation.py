"""systemd socket activation: serve the sockets passed as LISTEN_FDS, bind nothing else."""

from __future__ import annotations

import os
import signal
import socket
import sys

from bastion.engine.listeners import systemd_sockets
from tests.ops.running import supervisor

LAUNCHER = """
import os, sys
os.dup2(int(sys.argv[1]), 3)
os.close(int(sys.argv[1]))
os.environ.update(LISTEN_PID=str(os.getpid()), LISTEN_FDS="1")
os.execv(sys.argv[2], sys.argv[2:])
"""


def test_listen_fds_for_another_process_are_left_alone() -> None:
    env = {"LISTEN_FDS": "1", "LISTEN_PID": str(os.getpid() + 1)}
    assert systemd_sockets(env) == []
    assert env == {"LISTEN_FDS": "1", "LISTEN_PID": str(os.getpid() + 1)}


def test_socket_activation_serves_the_passed_socket_with_several_workers() -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    port = listener.getsockname()[1]
    fd = listener.fileno()
    # What systemd does: the socket as fd 3, LISTEN_PID set to the service's own pid.
    launcher = (sys.executable, "-c", LAUNCHER, str(fd))
    try:
        with supervisor(
            "tests.ops.apps:app", "--workers", "2", prefix=launcher, pass_fds=(fd,)
        ) as proc:
            listener.close()  # only the server holds it now
            assert proc.port == port
            assert "127.0.0.1:8000" not in proc.text  # no default bind besides the socket
            proc.wait_workers(2)
            pids = {proc.get("/pid")[1] for _ in range(30)}
            assert all(status == 200 for status, _ in [proc.get("/")])
            assert len(pids) >= 1
            proc.signal(signal.SIGHUP)
            proc.wait_for("reload complete")
            assert proc.get("/")[0] == 200
            proc.signal(signal.SIGTERM)
            assert proc.wait(15) == 0
    finally:
        listener.close()

"""Bastion's reverse proxy in one process: ``Balancer`` on the engine (uvloop), one upstream.

The ``bastion-balancer`` row of ``bench/proxy.py``. One process and no supervisor, so the
CPU time of the process is the proxy's alone.

Usage: ``python -m bench.apps.balancer_proxy --bind 127.0.0.1:PORT --upstream http://HOST:PORT``.
"""

import argparse

from bastion.balancer.config import single_route
from bastion.balancer.proxy import Balancer
from bastion.engine import ServerConfig, run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bind", required=True)
    parser.add_argument("--upstream", required=True, action="append")
    parser.add_argument("--strategy", default="round-robin")
    args = parser.parse_args()
    balancer = Balancer(single_route(args.upstream, strategy=args.strategy))
    run(balancer, [args.bind], ServerConfig())


if __name__ == "__main__":
    main()

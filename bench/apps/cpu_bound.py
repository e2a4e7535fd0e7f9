"""A CPU-bound handler: about 1 ms of pure Python work per request (the ``cpu`` workload).

It measures how Bastion scales with worker processes, not how fast it serves hello world:
with one process the work runs on one core whatever the thread count (the GIL), so
``--workers 2`` should come close to twice the throughput of ``--workers 1`` on two free cores.

    python -m bastion run bench.apps.cpu_bound:app --bind 127.0.0.1:8001 --workers 2
"""

import bastion

# Iterations of the loop below that take about 1 ms on a ~3 GHz core with CPython 3.11.
ITERATIONS = 17_000

app = bastion.App()


def work(iterations: int = ITERATIONS) -> int:
    total = 0
    for i in range(iterations):
        total += i * i % 7
    return total


@app.get("/")
async def cpu(request):
    return bastion.Response(b"%d\n" % work(), headers={"content-type": "text/plain"})

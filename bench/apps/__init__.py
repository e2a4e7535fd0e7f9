"""Applications served by the benchmark harness.

The hello apps answer ``GET /`` with ``200``, ``content-type: text/plain`` and the 13-byte
body ``Hello, world!`` so that rows of one scenario are comparable. The others belong to one
workload each: a CPU-bound handler (``workers``), and the same JSON endpoint in Flask and in
FastAPI (``flask-json``, ``fastapi-json``).
"""

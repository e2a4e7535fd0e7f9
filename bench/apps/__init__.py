"""Hello-world applications served by the benchmark harness.

Every app answers ``GET /`` with ``200``, ``content-type: text/plain`` and the
13-byte body ``Hello, world!`` so that rows of one scenario are comparable.
"""

"""Bastion's native API with a plain ``def`` handler (the ``bastion-sync`` row).

Kept separate from ``native_async`` so the cost of running sync handlers is visible.
"""

import bastion

app = bastion.App()


@app.get("/")
def hello(request):
    return bastion.Response(b"Hello, world!", headers={"content-type": "text/plain"})

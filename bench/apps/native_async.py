"""Bastion's native API with an ``async def`` handler (the ``bastion-async`` row)."""

import bastion

app = bastion.App()


@app.get("/")
async def hello(request):
    return bastion.Response(b"Hello, world!", headers={"content-type": "text/plain"})

"""A small FastAPI app with one JSON endpoint (the ``fastapi-json`` workload).

The route returns a dict and FastAPI turns it into a ``JSONResponse``, as most FastAPI apps
do; Bastion (``--interface asgi``) and uvicorn serve this very app.

    python -m bastion run bench.apps.fastapi_json:app --interface asgi --bind 127.0.0.1:8001
"""

from fastapi import FastAPI

from bench.apps.json_payload import PATH, PAYLOAD

app = FastAPI()


# No return annotation: with one, FastAPI would also validate the dict against a response
# model, a cost of the app rather than of the server.
@app.get(PATH)
async def json_endpoint():
    return PAYLOAD

"""A small Flask app with one JSON endpoint (the ``flask-json`` workload).

The view returns a dict, which Flask serialises with its default JSON provider, as most
Flask apps do; Bastion (``--interface wsgi``) and gunicorn serve this very app.

    python -m bastion run bench.apps.flask_json:app --interface wsgi --bind 127.0.0.1:8001
"""

from flask import Flask

from bench.apps.json_payload import PATH, PAYLOAD

app = Flask(__name__)


@app.get(PATH)
def json_endpoint() -> dict[str, object]:
    return PAYLOAD

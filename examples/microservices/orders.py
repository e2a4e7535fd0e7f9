"""The orders service, a Flask application (WSGI): each order names its customer, whom it
looks up in the users service over HTTP, through the balancer."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from typing import Any

from flask import Flask, abort, jsonify

API = os.environ.get("API", "http://127.0.0.1:8100")
INSTANCE = os.environ.get("INSTANCE", "orders")
ORDERS = {
    10: {"id": 10, "user_id": 1, "item": "analytical engine"},
    11: {"id": 11, "user_id": 2, "item": "compiler"},
    12: {"id": 12, "user_id": 3, "item": "flow chart"},
}

app = Flask(__name__)


def customer(user_id: int) -> Any:
    try:
        with urllib.request.urlopen(f"{API}/users/{user_id}", timeout=3) as response:
            return json.load(response)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        return {"error": str(exc)}


@app.get("/orders")
def all_orders() -> Any:
    response = jsonify(served_by=INSTANCE, orders=list(ORDERS.values()))
    response.headers["X-Served-By"] = INSTANCE
    return response


@app.get("/orders/<int:order_id>")
def one_order(order_id: int) -> Any:
    if order_id not in ORDERS:
        abort(404)
    order = ORDERS[order_id]
    response = jsonify(served_by=INSTANCE, customer=customer(order["user_id"]), **order)
    response.headers["X-Served-By"] = INSTANCE
    return response


@app.get("/healthz")
def healthz() -> Any:
    return jsonify(status="ok", served_by=INSTANCE)

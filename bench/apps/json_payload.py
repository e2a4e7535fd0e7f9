"""The JSON document the framework apps answer with, shared with the harness's answer check."""

PATH = "/json"
PAYLOAD = {"message": "Hello, world!", "items": [1, 2, 3]}

"""The baseline of the app benchmark: a bare Flask JSON endpoint, nothing else, served by the
same gunicorn configuration as the reference app (`gunicorn benchmarks.bare_app:app`)."""
from flask import Flask, jsonify

app = Flask(__name__)


@app.get("/json")
def bare_json():
    return jsonify(status="processing")

"""WSGI entry point for gunicorn: `gunicorn reference_app.wsgi:app` (config from the environment)."""
from loopfix.reference_app import create_app

app = create_app()

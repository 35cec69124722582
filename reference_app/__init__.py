"""The reference app: Flask + RQ + Redis + SQLAlchemy, every seed fix in place and every
seed-era bug behind a switch (`policy.Policy`). `create_app(config)` is the factory."""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flask import Flask

    from loopfix.reference_app.config import Config


def create_app(config: Config | None = None) -> Flask:
    # Imported here, not at the top: importing any reference_app module (the policy core, which
    # harness/ and sim/ import) runs this file, and must not pull in Flask, Redis or SQLAlchemy.
    import redis
    from flask import Flask, g, jsonify, request
    from werkzeug.exceptions import HTTPException

    from loopfix.reference_app.config import Config
    from loopfix.reference_app.db import RequestDb
    from loopfix.reference_app.request_limits import check_body
    from loopfix.reference_app.policy import REDIS_UNAVAILABLE_RETRY_AFTER_S, retry_after_header
    from loopfix.reference_app.services import Services, set_services

    config = config or Config.from_env()
    svc = Services(config)
    set_services(svc)

    class App(Flask):
        """Flask, with `ensure_sync`'s answer kept per function: Flask asks it for every hook and
        view of every request (inspect.iscoroutinefunction each time, ~1 µs apiece); an async
        view is still run through async_to_sync."""

        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            self._sync_of: dict = {}

        def ensure_sync(self, func):
            found = self._sync_of.get(func)
            if found is None:
                found = self._sync_of[func] = super().ensure_sync(func)
            return found

    app = App(__name__, static_folder=None)  # no static files: no /static route to document
    app.extensions["loopfix"] = svc
    app.config["MAX_CONTENT_LENGTH"] = None  # the cap is request_limits' (first before_request below)
    svc.engine  # create tables at start, not on the first request
    config.recordings_dir.mkdir(parents=True, exist_ok=True)

    from loopfix.reference_app import routes_leads, routes_recordings, routes_webhooks

    app.register_blueprint(routes_recordings.bp)
    app.register_blueprint(routes_webhooks.bp)
    app.register_blueprint(routes_leads.bp)

    class RequestGlobals(app.app_ctx_globals_class):
        """Flask's `g`; `g.db`, the request's ORM session, is opened on first use (RequestDb)."""

        def __getattr__(self, name: str):
            if name == "db" and "request_db" in self.__dict__:
                return self.request_db.session
            return super().__getattr__(name)

    app.app_ctx_globals_class = RequestGlobals

    @app.before_request
    def _before():  # one hook, not two: each costs every request
        check_body(request.environ, config.max_body_bytes)  # 413 before a byte is read
        g.request_db = RequestDb(svc.reads, svc.sessions)

    @app.teardown_request
    def _close_db(_exc):
        db = g.pop("request_db", None)
        if db is not None:
            db.close()

    @app.get("/healthz")
    def healthz():
        svc.redis.ping()
        return jsonify(ok=True, variant=svc.policy.variant, time_scale=svc.policy.time_scale)

    @app.errorhandler(redis.exceptions.ConnectionError)
    @app.errorhandler(redis.exceptions.TimeoutError)
    def _redis_down(_exc):
        resp = jsonify(error="redis_unavailable", message="coordination store unreachable; retry shortly")
        resp.status_code = 503  # Retry-After in wall seconds, as HTTP means it
        resp.headers["Retry-After"] = retry_after_header(svc.policy.wall(REDIS_UNAVAILABLE_RETRY_AFTER_S))
        return resp

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException):
        resp = jsonify(error=exc.name.lower().replace(" ", "_"), message=exc.description)
        resp.status_code = exc.code
        for name, value in exc.get_headers():  # 416's Content-Range, 405's Allow, ...
            if name.lower() not in ("content-type", "content-length"):
                resp.headers[name] = value
        return resp

    return app

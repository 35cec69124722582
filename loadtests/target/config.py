"""The target file (`loopfix target init` writes a commented example): where the service is,
the time scale it runs at, its fixtures, loopfix's media stand-in it must accept recording URLs
on, the policy it promises, its routes, optional hooks and an optional adapter class."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_PATHS: dict[str, str] = {
    "healthz": "/healthz",
    "call_status": "/webhooks/twilio/call-status",
    "recording": "/webhooks/twilio/recording",
    "play": "/api/recordings/file/{call_sid}",
    "enqueue": "/api/calls/{call_sid}/recording/enqueue",
    "bulk_delete": "/api/leads/bulk-delete",
    "job": "/api/jobs/{job_id}",
    "job_resume": "/api/jobs/{job_id}/resume",
    "leads": "/api/leads",
}
HOOKS = ("workers_stop", "workers_start")


@dataclass(frozen=True)
class TargetConfig:
    """A parsed, checked target file. Paths in it are resolved against the file's folder."""

    url: str
    fixtures: dict[str, Any]
    media_host: str = "127.0.0.1"
    media_port: int = 9100
    time_scale: float = 1.0
    policy: dict[str, Any] = field(default_factory=dict)  # overrides of loopfix's fixed policy
    paths: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_PATHS))
    hooks: dict[str, str] = field(default_factory=dict)
    adapter: str | None = None  # "package.module:Class"
    webhook_url: str | None = None  # the base URL the service signs webhooks against (default: url)
    source: Path | None = None  # the target file

    @property
    def media_url(self) -> str:
        return f"http://{self.media_host}:{self.media_port}"

    @property
    def signing_url(self) -> str:
        return (self.webhook_url or self.url).rstrip("/")

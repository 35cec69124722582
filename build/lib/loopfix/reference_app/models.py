"""SQLAlchemy 2 models: the database is the source of truth; Redis only coordinates.

Times are wall-clock epoch seconds (floats): the policy core converts them to policy seconds
with the configured time scale. Unique constraints carry the idempotency rules: one CallLog
per call_sid, one RecordingFile per RecordingSid, one *active* delete job per business.
"""
from __future__ import annotations

from sqlalchemy import Boolean, Float, ForeignKey, Index, Integer, String, Text, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class Business(Base):
    __tablename__ = "business"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    api_token: Mapped[str] = mapped_column(String(100), unique=True, index=True)
    twilio_account_sid: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    twilio_auth_token: Mapped[str] = mapped_column(String(100))


class CallLog(Base):
    __tablename__ = "call_log"
    id: Mapped[int] = mapped_column(primary_key=True)
    business_id: Mapped[int] = mapped_column(ForeignKey("business.id"), index=True)
    call_sid: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    from_number: Mapped[str] = mapped_column(String(32), default="")
    to_number: Mapped[str] = mapped_column(String(32), default="")
    call_status: Mapped[str] = mapped_column(String(32), default="")
    recording_sid: Mapped[str | None] = mapped_column(String(64), nullable=True)
    recording_url: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[float] = mapped_column(Float)


class RecordingRun(Base):
    """One attempt series to fetch a recording; its id is the job id everywhere."""

    __tablename__ = "recording_run"
    id: Mapped[int] = mapped_column(primary_key=True)
    business_id: Mapped[int] = mapped_column(ForeignKey("business.id"), index=True)
    call_sid: Mapped[str] = mapped_column(String(64), index=True)
    recording_sid: Mapped[str | None] = mapped_column(String(64), nullable=True)
    recording_url: Mapped[str | None] = mapped_column(Text, nullable=True)
    job_type: Mapped[str] = mapped_column(String(16))  # full | download_only
    status: Mapped[str] = mapped_column(String(16))  # queued | running | retry_wait | done | failed
    retry_count: Mapped[int] = mapped_column(Integer, default=0)  # retries waiting for the CallLog (+ stuck re-queues)
    fetch_retry_count: Mapped[int] = mapped_column(Integer, default=0)  # retries after a failed audio fetch
    defer_count: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[float] = mapped_column(Float)
    started_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    heartbeat_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    next_attempt_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    finished_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    rq_job_id: Mapped[str | None] = mapped_column(String(100), nullable=True)


class RecordingFile(Base):
    __tablename__ = "recording_file"
    id: Mapped[int] = mapped_column(primary_key=True)
    business_id: Mapped[int] = mapped_column(ForeignKey("business.id"), index=True)
    recording_sid: Mapped[str] = mapped_column(String(64), unique=True)
    call_sid: Mapped[str] = mapped_column(String(64), index=True)
    path: Mapped[str] = mapped_column(Text)
    size: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64))
    content_type: Mapped[str] = mapped_column(String(64), default="audio/mpeg")
    created_at: Mapped[float] = mapped_column(Float)


class Lead(Base):
    __tablename__ = "lead"
    id: Mapped[int] = mapped_column(primary_key=True)
    business_id: Mapped[int] = mapped_column(ForeignKey("business.id"), index=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    phone: Mapped[str] = mapped_column(String(32), default="")


class BackgroundJob(Base):
    """A bulk operation of one business; `active` is 1 while queued/running/paused, else NULL,
    so the partial-unique index below admits one active job per (business, job_type).
    The `before` and `seed` variants insert rows with `active` NULL: the seeds' schema had no
    such constraint, which is what let their duplicate-job check race."""

    __tablename__ = "background_job"
    id: Mapped[int] = mapped_column(primary_key=True)
    business_id: Mapped[int] = mapped_column(ForeignKey("business.id"), index=True)
    job_type: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16))  # queued | running | paused | completed | failed
    active: Mapped[bool | None] = mapped_column(Boolean, nullable=True, default=True)
    total: Mapped[int] = mapped_column(Integer, default=0)
    processed: Mapped[int] = mapped_column(Integer, default=0)
    succeeded: Mapped[int] = mapped_column(Integer, default=0)
    failed_count: Mapped[int] = mapped_column(Integer, default=0)
    lead_ids: Mapped[str] = mapped_column(Text, default="[]")  # JSON list, the job's input
    cursor: Mapped[int] = mapped_column(Integer, default=0)  # index of the next batch's first id
    heartbeat_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    lock_owner: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # The RQ job of the current run: a run whose id is no longer here was superseded (resumed
    # elsewhere) and stops; every batch commits only while it still is.
    rq_job_id: Mapped[str | None] = mapped_column(String(100), nullable=True)
    created_at: Mapped[float] = mapped_column(Float)
    queued_at: Mapped[float | None] = mapped_column(Float, nullable=True)  # last (re)enqueue
    started_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    finished_at: Mapped[float | None] = mapped_column(Float, nullable=True)

    __table_args__ = (
        Index(
            "one_active_job_per_business",
            "business_id",
            "job_type",
            "active",
            unique=True,
            sqlite_where=text("active IS NOT NULL"),
            postgresql_where=text("active IS NOT NULL"),
        ),
    )

"""Fine-tuning job records: the finetune tab creates one, the trainer process reports into it, and
any page reads it (ARCHITECTURE 3b: jobs, not requests). Functions receive a session."""

from __future__ import annotations

import math

from sqlalchemy import select
from sqlalchemy.orm import Session

from .errors import NotFoundError, StorageError
from .models import JOB_STATUSES, MAX_NAME_CHARS, FinetuneJob

FINISHED = ("done", "cancelled", "failed")


def create_finetune_job(session: Session, name: str, config: dict) -> FinetuneJob:
    if not isinstance(name, str) or not name.strip() or len(name) > MAX_NAME_CHARS:
        raise StorageError(f"job name must be 1..{MAX_NAME_CHARS} characters")
    if not isinstance(config, dict):
        raise StorageError(f"job config must be a JSON object, got {type(config).__name__}")
    job = FinetuneJob(name=name.strip(), config=config, status="queued", progress=0.0)
    session.add(job)
    session.flush()
    return job


def update_finetune_job(session: Session, job_id: int, *, status: str | None = None, progress: float | None = None,
                        message: str | None = None, output_lora_path: str | None = None) -> FinetuneJob:
    """Record what the trainer reports. A finished job (done, cancelled, failed) stays finished."""
    job = get_finetune_job(session, job_id)
    if status is not None:
        if status not in JOB_STATUSES:
            raise StorageError(f"job status must be one of {', '.join(JOB_STATUSES)}, got {status!r}")
        if job.status in FINISHED and status != job.status:
            raise StorageError(f"job {job_id} already ended as {job.status!r}; start a new job instead")
        job.status = status
    if progress is not None:
        if not isinstance(progress, (int, float)) or not math.isfinite(progress) or not 0 <= progress <= 1:
            raise StorageError(f"job progress must be a fraction in [0, 1], got {progress!r}")
        job.progress = float(progress)
    if message is not None:
        job.message = message
    if output_lora_path is not None:
        job.output_lora_path = output_lora_path
    session.flush()
    return job


def get_finetune_job(session: Session, job_id: int) -> FinetuneJob:
    job = session.get(FinetuneJob, job_id)
    if job is None:
        raise NotFoundError(f"no fine-tuning job {job_id}")
    return job


def list_finetune_jobs(session: Session) -> list[FinetuneJob]:
    return list(session.scalars(select(FinetuneJob).order_by(FinetuneJob.id.desc())))

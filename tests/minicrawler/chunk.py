"""The chunk task: "download" a chunk's images into temp storage, then tell the job's row.

``download_chunk(job_id, chunk_index, images, *, sleep=0.0, image_bytes=1024, fail=None,
retries=0, countdown=0.1, max_retries=3)``, registered as ``minicrawler.download_chunk``:

- ``retries``: the first ``retries`` attempts call ``self.retry(countdown=countdown,
  max_retries=max_retries)`` before writing anything; the attempt after them runs the chunk. With
  ``retries > max_retries`` the last retry raises MaxRetriesExceededError and the chunk fails.
- writes ``images`` fake JPEG files of ``image_bytes`` bytes each as
  ``<temp_dir>/job-<job_id>/chunk-<chunk_index>/<n>.jpg``, sleeping ``sleep`` seconds after each
  (a chunk then takes ``images * sleep`` seconds);
- ``fail``: a message; with it the chunk raises ChunkFailedError after writing its images (they
  stay in temp storage, as a crashed chunk's do);
- on success or final failure (not on a retry) it updates ``crawl_jobs`` as seed 003's
  ``on_chunk_complete`` does, when the app has a database. A worker killed mid-chunk never gets
  there: the row keeps counting the chunk active.

It returns ``{"job_id", "chunk_index", "images", "bytes"}``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from celery.exceptions import Retry

from tests.minicrawler.jobs import on_chunk_complete

# SOI, an APP0 JFIF header, a comment segment to pad with and EOI: enough for `file` to say JPEG.
_HEAD = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
_EOI = b"\xff\xd9"


class ChunkFailedError(RuntimeError):
    """What a chunk raises when told to fail."""


def fake_jpeg(size: int) -> bytes:
    """``size`` bytes (at least 26) that start and end as a JPEG does, padded with comments."""
    pad = max(size - len(_HEAD) - len(_EOI), 4)
    segments = []
    while pad:
        # A comment segment is its marker, a 16-bit length counting itself, and the text: 4 to
        # 65537 bytes. Split so that what is left is never shorter than a segment.
        seg = pad if pad <= 65537 else min(65537, pad - 4)
        segments.append(b"\xff\xfe" + (seg - 2).to_bytes(2, "big") + b"\x00" * (seg - 4))
        pad -= seg
    return _HEAD + b"".join(segments) + _EOI


def chunk_dir(temp_dir: str | Path, job_id: int, chunk_index: int) -> Path:
    return Path(temp_dir) / f"job-{job_id}" / f"chunk-{chunk_index}"


def download_chunk(
    self: Any,  # the bound Celery task; Celery ships no type hints
    job_id: int,
    chunk_index: int,
    images: int,
    *,
    sleep: float = 0.0,
    image_bytes: int = 1024,
    fail: str | None = None,
    retries: int = 0,
    countdown: float = 0.1,
    max_retries: int = 3,
) -> dict[str, int]:
    database: str | None = self.app.conf.get("minicrawler_database")
    task_id = str(self.request.id)
    try:
        if int(self.request.retries) < retries:
            raise self.retry(countdown=countdown, max_retries=max_retries)
        where = chunk_dir(self.app.conf.get("minicrawler_temp_dir"), job_id, chunk_index)
        where.mkdir(parents=True, exist_ok=True)
        body = fake_jpeg(image_bytes)
        for n in range(images):
            (where / f"{n}.jpg").write_bytes(body)
            if sleep:
                time.sleep(sleep)
        if fail is not None:
            raise ChunkFailedError(fail)
    except Retry:
        raise  # not an end: the chunk is still active
    except Exception:
        if database:
            on_chunk_complete(database, job_id, task_id, success=False)
        raise
    if database:
        on_chunk_complete(database, job_id, task_id, success=True)
    return {
        "job_id": job_id,
        "chunk_index": chunk_index,
        "images": images,
        "bytes": images * len(body),
    }

"""Capacity settings (seed 000's formula): what derived facts are computed with, not a source."""

from __future__ import annotations

from dataclasses import dataclass

from pixcrawler_exporter.config.parsers import integer, number
from pixcrawler_exporter.config.settings import setting


@dataclass(frozen=True)
class Capacity:
    max_concurrent_chunks: int = setting(
        35,
        integer(1, 100),
        env=("PIXCRAWLER_MAX_CONCURRENT_CHUNKS", "PIXCRAWLER_RESOURCE_MAX_CONCURRENT_CHUNKS"),
        by_environment={"azure_functions": 10},
        help="Chunks allowed to run at once (azure_functions: 10).",
    )
    max_temp_storage_mb: float = setting(
        20000.0,
        number(1, 10**9),
        env=("PIXCRAWLER_MAX_TEMP_STORAGE_MB", "PIXCRAWLER_RESOURCE_MAX_TEMP_STORAGE_MB"),
        by_environment={"azure_app_service": 8000.0, "azure_functions": 400.0},
        help="Temp storage quota in MB of 1024 x 1024 bytes (azure_app_service: 8000, "
        "azure_functions: 400).",
    )
    chunk_size_images: int = setting(
        500,
        integer(1, 10**6),
        env=("PIXCRAWLER_CHUNK_SIZE_IMAGES", "PIXCRAWLER_RESOURCE_CHUNK_SIZE_IMAGES"),
        help="Images per processing chunk.",
    )
    estimated_image_size_mb: float = setting(
        0.5,
        number(0.001, 10**4),
        env=("PIXCRAWLER_ESTIMATED_IMAGE_SIZE_MB", "PIXCRAWLER_RESOURCE_ESTIMATED_IMAGE_SIZE_MB"),
        help="Expected size of one downloaded image in MB, for storage-bound capacity.",
    )

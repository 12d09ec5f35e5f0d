"""Prometheus exporter for PixCrawler: container-correct resources, temp storage, chunk capacity."""

__version__ = "0.1.0"

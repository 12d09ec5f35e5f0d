"""Temp storage: bytes and files of the crawler's temp files, from a background scan."""

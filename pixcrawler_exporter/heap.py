"""Give the memory that start-up freed back to the system."""

from __future__ import annotations


def trim() -> None:
    """Return glibc's free heap pages to the system (``malloc_trim``); nothing elsewhere.

    Start-up reads the bytecode of some 300 modules and loads the configuration, which leaves
    about 1 MB of freed blocks between live ones in glibc's heap; glibc gives back on its own
    only what is free at the top of the heap. Once, when serving starts: what a scrape frees
    is reused by the next one.
    """
    try:
        import ctypes  # loaded already where temp storage watches (inotify_simple uses it)

        release = ctypes.CDLL(None).malloc_trim
    except (ImportError, OSError, AttributeError):  # no ctypes, or not glibc (musl has none)
        return
    release(0)

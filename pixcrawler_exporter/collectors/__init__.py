"""One module or small package per source; each registers itself (collect/registration.py)."""

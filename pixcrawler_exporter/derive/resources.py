"""The resources a status is evaluated for: one name shared by config, derive and the artifacts.

Kept free of imports so that config (which declares a threshold pair per resource) and derive
(which evaluates them) can both import it without a cycle."""

from __future__ import annotations

from typing import Literal, get_args

Resource = Literal["disk", "memory", "cpu", "temp_storage", "chunks"]

# In the order statuses, metrics and --print-config list them.
RESOURCES: tuple[Resource, ...] = get_args(Resource)

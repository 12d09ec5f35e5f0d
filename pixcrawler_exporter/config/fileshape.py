"""What a reload must still find in the config file: content, and the sections it had.

``> exporter.yml``, an editor's in-place write caught half-way or a truncated copy all parse: as
nothing, or as the sections before the cut. Loaded as they are, they turn collectors off and
thresholds back to their defaults, and the reload reports success. So a reload refuses an empty
file (unless it was empty at the last load that succeeded too), and one that has lost a top-level
section (``database:``, ``thresholds:`` ...) that had settings in it at that load. A section
removed on purpose is left empty for the reload that removes it (``database: {}``), or the
exporter is restarted. A start has nothing to keep: an empty file there means the defaults, with
a warning.
"""

from __future__ import annotations

from collections.abc import Callable

from pixcrawler_exporter.config.parsers import ConfigError


def _read(path: str) -> dict[object, object]:
    from pixcrawler_exporter.config.yamlfile import read_yaml_mapping  # PyYAML: with a file

    return read_yaml_mapping(path, "config file")


class FileShape:
    def __init__(self, path: str) -> None:
        self.path = path
        doc = _read(path)
        self.empty = not doc
        self._sections = _sections(doc)

    def prepare(self) -> Callable[[], None]:
        """Check the file as it is now against the last load that succeeded (ConfigError when
        it lost its content); the result records it, once the whole reload has succeeded."""
        doc = _read(self.path)
        if not doc and not self.empty:
            raise ConfigError(
                f"config file {self.path} is empty (a truncated file?); to run on the defaults, "
                "restart"
            )
        lost = sorted(self._sections - {str(key) for key in doc})
        if lost:
            raise ConfigError(
                f"config file {self.path}: {', '.join(lost)} had settings at the last successful "
                f"load and is missing now (a file cut short?); to remove a section, leave it "
                f"empty for one reload ({lost[0]}: {{}}), or restart"
            )

        def record() -> None:
            self.empty = not doc
            self._sections = _sections(doc)

        return record


def _sections(doc: dict[object, object]) -> frozenset[str]:
    """The top-level sections with settings in them: an empty one is as good as none."""
    return frozenset(str(key) for key, value in doc.items() if isinstance(value, dict) and value)

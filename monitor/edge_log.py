"""Log a condition when it starts and when it ends, not on every sample.

A monitor sampling every 5 s with a dead backend would otherwise write 17,000 identical
lines a day and bury the one line that says when it died.
"""

from __future__ import annotations

import logging
import threading


class EdgeLog:
    def __init__(self, logger: logging.Logger) -> None:
        self._logger = logger
        self._problems: dict[str, str] = {}
        self._lock = threading.Lock()

    def problem(self, key: str, message: str, level: int = logging.WARNING) -> bool:
        """Log `message` if `key` was fine (or had another problem) until now; True if logged."""
        with self._lock:
            if self._problems.get(key) == message:
                return False
            self._problems[key] = message
        self._logger.log(level, "%s: %s", key, message)
        return True

    def recovered(self, key: str, message: str = "recovered") -> bool:
        """Log `message` if `key` had a problem; True if logged."""
        with self._lock:
            if self._problems.pop(key, None) is None:
                return False
        self._logger.info("%s: %s", key, message)
        return True

    def has_problem(self, key: str) -> bool:
        with self._lock:
            return key in self._problems

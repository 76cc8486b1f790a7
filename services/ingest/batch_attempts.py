"""How many times each drop-zone batch failed unexpectedly: ingest gives a batch up after HANDLER_MAX_ATTEMPTS.

A batch that fails for a reason of its own kind (a part that vanished while it was read, a bug its content
triggers) must neither hold up the batches after it nor be re-read whole at every scan for ever: it is tried
again at the next scans, then rejected (moved to ``rejected/`` with the reason, reported ``failed``, counted).
Counted in memory: a scanner that restarts tries each batch afresh, which is what an operator's fix needs.
"""

from __future__ import annotations


class BatchAttempts:
    def __init__(self, max_attempts: int) -> None:
        self._max = max_attempts
        self._failures: dict[str, int] = {}

    def failed(self, root: str) -> int:
        """Count one more failure of the batch ``root``; returns its failures so far."""
        self._failures[root] = self._failures.get(root, 0) + 1
        return self._failures[root]

    def exhausted(self, failures: int) -> bool:
        return failures >= self._max

    def pending(self, root: str) -> bool:
        """Whether the batch ``root`` failed before and is to be tried again."""
        return root in self._failures

    def forget(self, root: str) -> None:
        """The batch went through (or was given up): its count goes."""
        self._failures.pop(root, None)

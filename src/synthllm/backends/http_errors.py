"""What the online HTTP path and the Batch API path share about failures: which HTTP statuses are
worth retrying, and the exception one failed attempt raises. Kept apart so that neither transport
module imports the other."""

from __future__ import annotations

RETRYABLE_STATUS = frozenset({408, 409, 429})


class Failure(Exception):
    """One failed attempt: what to record, and whether another attempt may succeed."""

    def __init__(self, reason: str, retryable: bool, retry_after: float | None = None, status: int = 0):
        super().__init__(reason)
        self.reason, self.retryable, self.retry_after, self.status = reason, retryable, retry_after, status


def is_retryable(status: int) -> bool:
    return status in RETRYABLE_STATUS or status >= 500

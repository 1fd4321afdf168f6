"""Rate limits on submissions: a token bucket per principal.

OWNER: helper "auth" (issue 7).
"""

from __future__ import annotations

from alicorn.web.model import Principal


class SubmissionLimiter:
    def __init__(self, per_minute: int):
        """``per_minute`` submissions a minute per token, in bursts of up to that many;
        0 turns submissions off."""
        raise NotImplementedError

    def take(self, who: Principal) -> None:
        """Count one submission; RateLimited (with retry_after) when over the limit."""
        raise NotImplementedError

"""The pure selection core: candidates -> filters -> scorers -> choice, ladder and reason."""

from router.selection.selector import select
from router.selection.types import (
    BackendView,
    Candidate,
    Estimate,
    Need,
    Rejection,
    Scored,
    Selection,
    Verdict,
)

__all__ = [
    "BackendView",
    "Candidate",
    "Estimate",
    "Need",
    "Rejection",
    "Scored",
    "Selection",
    "Verdict",
    "select",
]

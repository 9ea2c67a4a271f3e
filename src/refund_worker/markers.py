"""The marker every credit memo of a refund carries, and the check that no caller can write one.

Magento has no idempotency key, so the worker writes ``[refund-worker:<refund id>:<token>]`` at
the end of each credit memo's comment, in the same Magento transaction as the credit memo
(docs/magento.md §10). After an attempt whose outcome is unknown, reconciliation looks for it in
the order's credit memos before anything is sent again.

The token is 128 random bits made at intake and kept only in the refund's row: the API and the
CLI never show it, so no producer (nor anyone editing a comment in Magento's admin) can write
the marker of a refund whose credit memo does not exist yet. Callers' comments that contain or
imitate a marker are refused at intake all the same. Rows attempted before tokens existed carry
the legacy marker ``[refund-worker:<refund id>]``; reconciliation accepts it only on a credit
memo that fits the refund (see ``reconcile``), as it does every marker.

Imports nothing from the package.
"""

from __future__ import annotations

import re
import secrets
import unicodedata

#: Anything that reads like the start of a marker: "refund-worker:", "REFUND_WORKER :", its
#: full-width twin (after NFKC), with up to three separators around "worker".
_IMITATION = re.compile(r"refund[\W_]{0,3}worker[\W_]{0,3}:")


def new_marker_token() -> str:
    """A fresh token: 128 random bits as 32 hex digits."""
    return secrets.token_hex(16)


def marker_for(refund_id: str, token: str | None) -> str:
    """The marker of ``refund_id``: with its token, or the legacy form for rows without one."""
    return f"refund-worker:{refund_id}:{token}" if token else f"refund-worker:{refund_id}"


def comment_with_marker(marker: str, comment: str | None) -> str:
    """The credit memo's comment: the caller's text followed by the marker, always present."""
    text = comment.strip() if comment else ""
    return f"{text} [{marker}]" if text else f"[{marker}]"


def carries_marker(comment: str, marker: str) -> bool:
    """Whether a credit memo comment carries exactly this marker (brackets included)."""
    return f"[{marker}]" in comment


def imitates_marker(text: str) -> bool:
    """Whether a caller's text contains or imitates a marker (case and width folded)."""
    return _IMITATION.search(unicodedata.normalize("NFKC", text).casefold()) is not None

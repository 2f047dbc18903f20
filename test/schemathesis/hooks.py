"""schemathesis hooks for test/integration/schemathesis.test.ts (loaded through SCHEMATHESIS_HOOKS).

A list cursor is opaque: valid only as the API returned it in next_cursor, which no JSON Schema can state.
Generated requests carry no cursor; hostile-input.test.ts sends cursors of every bad shape (400). Nor can a
schema say that a snooze's `until` lies in the next 366 days: bodies with another one are not generated. Nor
that a push subscription's `p256dh` is a point of the P-256 curve (its pattern says only the shape): a generated
one is replaced by a real key, so positive data stays positive (hostile-input and notifications-hostile tests
send keys off the curve: 400).
"""

import re
from datetime import datetime, timedelta, timezone

import schemathesis


@schemathesis.hook
def filter_query(ctx, query):
    return not query or "cursor" not in query


@schemathesis.hook
def filter_body(ctx, body):
    """A snooze's until must be in the next 366 days (else 400): no JSON Schema rule says "from now"."""
    if not isinstance(body, dict) or not isinstance(body.get("until"), str):
        return True
    try:
        at = datetime.fromisoformat(body["until"].replace("Z", "+00:00"))
    except ValueError:
        return True
    now = datetime.now(timezone.utc)
    return at.tzinfo is None or now < at < now + timedelta(days=365)


# The documented shape of p256dh (src/domain/notifications.ts PUSH_KEY_PATTERNS), and a browser's P-256 public key
# (an uncompressed point), as PushSubscription.toJSON() gives it.
P256DH_SHAPE = re.compile(r"^B[A-Za-z0-9_-]{86}=?$")
P256_KEY = "BNcRdreALRFXTkOOUHK1EtK2wtaz5Ry4YfYCA_0QTpQtUbVlUls0VJXg7A8u-Ts1XbjhazAkj7I99e8QcYP7DkM"


@schemathesis.hook
def before_call(ctx, case, kwargs):
    """A generated key of the documented shape is not a point of the curve: a real one instead (others stay).

    Before the call, not as a generation hook: the coverage phase builds its cases without those."""
    keys = case.body.get("keys") if isinstance(case.body, dict) else None
    if isinstance(keys, dict) and isinstance(keys.get("p256dh"), str) and P256DH_SHAPE.match(keys["p256dh"]):
        keys["p256dh"] = P256_KEY

"""schemathesis hooks for test/integration/schemathesis.test.ts (loaded through SCHEMATHESIS_HOOKS).

A list cursor is opaque: valid only as the API returned it in next_cursor, which no JSON Schema can state.
Generated requests carry no cursor; hostile-input.test.ts sends cursors of every bad shape (400). Nor can a
schema say that a snooze's `until` lies in the next 366 days: bodies with another one are not generated.
"""

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

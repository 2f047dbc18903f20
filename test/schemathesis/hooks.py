"""schemathesis hooks for test/integration/schemathesis.test.ts (loaded through SCHEMATHESIS_HOOKS).

A list cursor is opaque: valid only as the API returned it in next_cursor, which no JSON Schema can state.
Generated requests carry no cursor; hostile-input.test.ts sends cursors of every bad shape (400).
"""

import schemathesis


@schemathesis.hook
def filter_query(ctx, query):
    return not query or "cursor" not in query

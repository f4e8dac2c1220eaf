"""Schemathesis hooks for the API's contract test (tests/it/api.rs runs schemathesis with them).

Schemathesis' own `positive_data_acceptance` check fails any schema-valid request that gets a 4xx.
The API has four rules that relate parameters to each other, which an OpenAPI document cannot
express and which the operations' descriptions state instead: a range whose start is after its
end, a range of more than 10,000 points or buckets, a gaps range longer than 400 days, and the
movers' days (start_day and end_day together, the first before the second, not with a window). This
check is the same check with those four rules, and only them, allowed; a 404 for an influencer that was never tracked or a
watchlist that does not exist is allowed too (the document promises the shape of an id, not that it exists), and so is a
409 for a watchlist name taken already or a list full (the shape of a name, not that it is free).
A webhook's URL must name a public address unless WEBHOOK_ALLOW_PRIVATE (the operation says so):
that is about where a host is, not the URL's shape, so its 400 ("Invalid webhook URL") is allowed.
"""

import json

import schemathesis

CROSS_PARAMETER_RULES = {
    "Invalid time range",
    "Too many points",
    "Range too long",
    "Invalid day range",
    "Invalid webhook URL",
}


@schemathesis.check
def schema_valid_requests_are_accepted(ctx, response, case):
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive:
        return None
    status = response.status_code
    if status < 400 or status in (404, 409) or status >= 500:
        return None  # 5xx are the `not_a_server_error` check's
    try:
        title = json.loads(response.text).get("title")
    except ValueError:
        title = None
    if status == 400 and title in CROSS_PARAMETER_RULES:
        return None
    raise AssertionError(
        f"a request the OpenAPI document calls valid was rejected with {status}: {response.text}"
    )

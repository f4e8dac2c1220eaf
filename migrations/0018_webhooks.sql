-- Webhooks (issue 40): endpoints that are sent the events they subscribe to, signed as the
-- Standard Webhooks specification says. Each endpoint reads the event log in id order from
-- its own cursor (`delivered_through`), so one slow or dead endpoint never delays another and
-- a returning endpoint drains its backlog from the log. A delivering process holds an
-- endpoint for a while (`lease_owner`, `lease_until`) and renews it; another takes it over
-- when the lease runs out.
create table webhooks (
    id                bigint generated always as identity primary key,
    url               text not null,
    -- The event types sent (every type when empty).
    event_types       text[] not null default '{}',
    -- Only events about this watchlist's members (any influencer when null). A watchlist with
    -- webhooks cannot be deleted before them.
    watchlist         text references watchlists (name) on delete restrict,
    -- The signing key, "whsec_" and base64 (Standard Webhooks).
    secret            text not null,
    created_at        timestamptz not null default now(),
    -- Every event with an id up to this one was delivered (or was not for this endpoint).
    delivered_through bigint not null,
    -- Attempts in a row that failed, and since when; the next attempt's time.
    failures          integer not null default 0,
    failing_since     timestamptz,
    next_attempt_at   timestamptz,
    -- Set when deliveries failed for WEBHOOK_RETRY_FOR: nothing more is sent until enabled.
    disabled_at       timestamptz,
    disabled_reason   text,
    lease_owner       text,
    lease_until       timestamptz
);

-- Each attempt to deliver an event to an endpoint, for GET /webhooks/{id}/deliveries; kept as
-- long as the event log.
create table webhook_attempts (
    id           bigint generated always as identity primary key,
    webhook_id   bigint not null references webhooks (id) on delete cascade,
    event_id     bigint not null,
    -- 1 for the first attempt of this event at this endpoint.
    attempt      integer not null,
    attempted_at timestamptz not null default now(),
    delivered    boolean not null,
    -- The receiver's status code, when it answered.
    status_code  integer,
    -- Why it failed, when it did.
    error        text,
    duration_ms  integer not null
);

create index webhook_attempts_by_webhook on webhook_attempts (webhook_id, id);
create index webhook_attempts_by_time on webhook_attempts (attempted_at);

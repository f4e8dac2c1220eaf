-- Spikes found as the data arrives (issue 40): the cheap screen of the spike rule runs in the
-- sink's upsert of each influencer's newest value, so it sees every point within the write
-- that stores it, whichever sink wrote it, and remembers its state across restarts.
--
-- Each count's change is taken per minute as a random walk moves (the change over dt divided
-- by the square root of dt in minutes) and compared with the influencer's mean absolute change
-- (a plain mean of the first ten changes, then exponentially weighted: 1/30, about half an hour
-- of minutes; a change counts at most 4 times the mean, so one jump does not hide the next). A
-- change over 5 times the mean (never below 1 nor a ten-thousandth of the value), after 10
-- changes, is a candidate: noted in spike_candidates in the same transaction, and decided by
-- the `spikes` role on the influencer's stored last two hours (src/jobs/spikes.rs).
alter table influencer_latest
    add column screen_followers real not null default 0,
    add column screen_following real not null default 0,
    add column screen_changes smallint not null default 0,
    -- Which counts the newest value's change let through: 1 followers, 2 following.
    add column screen_hit smallint not null default 0;

-- The change from one value to the next, per minute of random walk. (Every function here is
-- a single expression over its arguments, immutable all through, so the planner inlines it
-- into the sink's statement: a function call per row would cost more than the upsert.)
create function spike_screen_change(from_value integer, to_value integer,
                                    from_slot timestamptz, to_slot timestamptz)
    returns float8 language sql immutable parallel safe
    return abs(to_value::float8 - from_value)
           / sqrt(greatest(date_part('epoch', to_slot - from_slot), 1.0::float8) / 60);

-- The least mean a change is compared with.
create function spike_screen_floor(value integer)
    returns float8 language sql immutable parallel safe
    return greatest(1.0::float8, abs(value::float8) * 1e-4);

-- The mean absolute change after the change from `from_value` to `to_value`. The first ten
-- count in full (a mean that starts on a count held still, at the upstream's floor, must be
-- able to learn its real moves); after them a change counts at most four times the mean.
create function spike_screen_mean(mean real, changes smallint, from_value integer, to_value integer,
                                  from_slot timestamptz, to_slot timestamptz)
    returns real language sql immutable parallel safe
    return (case when changes < 10
                 then mean + (spike_screen_change(from_value, to_value, from_slot, to_slot) - mean)
                             / (changes + 1)
                 else mean + (1.0::float8 / 30)
                             * (least(spike_screen_change(from_value, to_value, from_slot, to_slot),
                                      4 * greatest(mean, spike_screen_floor(to_value))) - mean)
            end)::real;

-- Whether the change from `from_value` to `to_value` is a candidate against the mean before it.
create function spike_screen_hit(mean real, changes smallint, from_value integer, to_value integer,
                                 from_slot timestamptz, to_slot timestamptz)
    returns boolean language sql immutable parallel safe
    return changes >= 10
           and spike_screen_change(from_value, to_value, from_slot, to_slot)
               > 5 * greatest(mean, spike_screen_floor(to_value));

-- Changes the screen let through, until the `spikes` role decides them (a few a minute on a
-- plain walk: about four standard deviations). `metrics` as screen_hit.
create table spike_candidates (
    influencer_id bigint not null,
    slot          timestamptz not null,
    metrics       smallint not null,
    noted_at      timestamptz not null default now(),
    primary key (influencer_id, slot)
);
create index spike_candidates_noted on spike_candidates (noted_at);

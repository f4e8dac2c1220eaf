-- `top_n` events (issue 40) are detected for several sizes of the top (10, 100, 1,000 and
-- each webhook's own); a webhook is sent those of its own size.
alter table webhooks add column top_n integer not null default 100 check (top_n between 1 and 10000);

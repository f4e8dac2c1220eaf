-- The daily pass's third classifier (issue 40): `churn`, the follow/unfollow seesaw of the
-- following count.
alter table suspicious_classifications drop constraint suspicious_classifications_source_check;
alter table suspicious_classifications
    add constraint suspicious_classifications_source_check
    check (source in ('mockstagram', 'spike', 'churn'));
alter table current_verdicts drop constraint current_verdicts_source_check;
alter table current_verdicts
    add constraint current_verdicts_source_check check (source in ('mockstagram', 'spike', 'churn'));

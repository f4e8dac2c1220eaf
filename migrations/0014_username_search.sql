-- Finding an influencer by the start of its username (issue 39: the dashboard's search box),
-- case-insensitive, at 1,000,000 influencers: a b-tree of the lowered names in byte order (the
-- "C" collation), which a prefix reads as a range, already in the answer's order, so a page
-- stops after its first rows (0.2 ms at 1,000,000; a text_pattern_ops index answered the same
-- range but had to sort it, and the planner sent that to parallel workers: 8 ms).
create index influencers_username_prefix
    on influencers ((lower(username) collate "C"), influencer_id);

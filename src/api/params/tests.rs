use super::*;

#[test]
fn ids_are_positive_whole_numbers() {
    assert_eq!(parse_id("1000001").unwrap(), 1_000_001);
    for bad in [
        "abc",
        "-5",
        "0",
        "1.5",
        "+7",
        "",
        "99999999999999999999",
        " 5",
    ] {
        assert!(parse_id(bad).is_err(), "{bad}");
    }
}

#[test]
fn steps_take_seconds_or_units() {
    assert_eq!(parse_step("60"), Some(60));
    assert_eq!(parse_step("5m"), Some(300));
    assert_eq!(parse_step("1h"), Some(3600));
    assert_eq!(parse_step("1d"), Some(86_400));
    for bad in [
        "",
        "m",
        "5x",
        "30",
        "1.5h",
        "-1h",
        "9999999999999999999d",
        "400d",
    ] {
        assert_eq!(parse_step(bad), None, "{bad}");
    }
}

fn bad_request(result: Result<impl std::fmt::Debug, ApiError>) -> (&'static str, String) {
    match result {
        Err(ApiError::BadRequest { title, detail }) => (title, detail),
        other => panic!("expected a 400, got {other:?}"),
    }
}

#[test]
fn unknown_and_repeated_parameters_are_refused() {
    let q: RangeQuery = parse_query("start_time=1&end_time=2").unwrap();
    assert_eq!((q.start_time, q.end_time), (Some(Epoch(1)), Some(Epoch(2))));
    let (title, detail) = bad_request(parse_query::<RangeQuery>("start=1"));
    assert_eq!(title, "Unknown query parameter");
    assert!(
        detail.contains("start_time, end_time, step"),
        "names the known ones: {detail}"
    );
    let (title, _) = bad_request(parse_query::<RangeQuery>("start_time=1&start_time=2"));
    assert_eq!(title, "Repeated query parameter");
    let (_, detail) = bad_request(parse_query::<NoQuery>("x=1"));
    assert!(detail.contains("takes no query parameters"), "{detail}");
}

#[test]
fn a_bad_value_is_a_400_naming_the_parameter_and_what_was_expected() {
    let (title, detail) = bad_request(parse_query::<RangeQuery>("end_time=1.5"));
    assert_eq!(title, "Invalid time");
    assert_eq!(
        detail,
        format!("end_time must be whole epoch seconds from 0 to {MAX_EPOCH}, got \"1.5\"")
    );
    let (title, detail) = bad_request(parse_query::<RangeQuery>("step=7x"));
    assert_eq!(title, "Invalid step");
    assert!(detail.starts_with("step must be seconds"), "{detail}");
    let (title, detail) = bad_request(parse_query::<TopQuery>("limit=0"));
    assert_eq!(
        (title, detail.as_str()),
        (
            "Invalid limit",
            "limit must be a whole number from 1 to 1000, got \"0\""
        )
    );
    let (title, _) = bad_request(parse_query::<TopQuery>("cursor=5"));
    assert_eq!(title, "Invalid cursor", "two numbers expected");
    let page: TopQuery = parse_query("limit=7&cursor=3.1000001").unwrap();
    assert_eq!(page.limit, Some(Limit(7)));
    assert_eq!(page.cursor, Some(Cursor([3, 1_000_001])));
}

#[test]
fn epochs_are_whole_seconds_within_reason() {
    let q: RangeQuery = parse_query("start_time=1763800000").unwrap();
    assert_eq!(q.start_time, Some(Epoch(1_763_800_000)));
    for bad in ["1.5", "-1", "99999999999", "%2B5", ""] {
        assert!(
            parse_query::<RangeQuery>(&format!("start_time={bad}")).is_err(),
            "{bad}"
        );
    }
}

#[test]
fn a_range_without_start_time_always_fits_in_one_answer() {
    let now = 1_800_000_000;
    let day = TimeRange::from_query(&RangeQuery::default(), now, 60).unwrap();
    assert_eq!(day.end - day.start, DEFAULT_RANGE_SECONDS, "a day at 60 s");
    // At a 2 s poll interval a day is 43,200 points: the default shrinks to what fits.
    let short = TimeRange::from_query(&RangeQuery::default(), now, 2).unwrap();
    assert_eq!(short.end - short.start, (MAX_POINTS - 1) * 2);
    let with_step = RangeQuery {
        step: Some(Step(300)),
        ..RangeQuery::default()
    };
    let bucketed = TimeRange::from_query(&with_step, now, 2).unwrap();
    assert_eq!(bucketed.end - bucketed.start, DEFAULT_RANGE_SECONDS);
}

fn range(start: i64, end: i64, step: Option<i64>) -> RangeQuery {
    RangeQuery {
        start_time: Some(Epoch(start)),
        end_time: Some(Epoch(end)),
        step: step.map(Step),
        format: None,
    }
}

#[test]
fn an_unaligned_range_is_refused_when_it_touches_more_buckets_than_an_answer_holds() {
    // 599,999 s at 60 s a bucket, starting one second before a bucket ends: 10,001
    // buckets (the span alone says 10,000).
    let start = 60 * 29_000_000 + 59;
    let query = range(start, start + 599_999, Some(60));
    let (title, detail) = bad_request(TimeRange::from_query(&query, start + 10_000_000, 60));
    assert_eq!(title, "Too many points");
    assert!(detail.contains("use step=5m"), "{detail}");
    // Aligned, the same span fits.
    let aligned = range(start - 59, start - 59 + 599_999, Some(60));
    assert!(TimeRange::from_query(&aligned, start + 10_000_000, 60).is_ok());
}

proptest::proptest! {
    /// Whatever the range and step, an accepted range touches at most MAX_POINTS buckets,
    /// and the step a refusal suggests is accepted for the same range.
    #[test]
    fn an_accepted_range_never_answers_more_buckets_than_the_cap(
        start in 0i64..4_000_000_000,
        span in 0i64..40_000_000,
        step in proptest::sample::select(vec![60i64, 300, 420, 900, 3600, 21_600, 86_400, 604_800]),
    ) {
        let now = start + span;
        match TimeRange::from_query(&range(start, start + span, Some(step)), now, 60) {
            Ok(r) => {
                let (start_ms, end_ms) = r.window_ms();
                proptest::prop_assert!(
                    crate::series::buckets_touched(start_ms, end_ms, step * 1000) <= MAX_POINTS
                );
            }
            Err(_) => {
                let suggested = parse_step(suggest_step(span, MAX_POINTS)).unwrap();
                let again = range(start, start + span, Some(suggested));
                proptest::prop_assert!(TimeRange::from_query(&again, now, 60).is_ok());
            }
        }
    }
}

#[test]
fn the_suggested_step_fits_the_cap() {
    assert_eq!(suggest_step(86_400, 10_000), "60");
    assert_eq!(suggest_step(30 * 86_400, 10_000), "5m");
    assert_eq!(suggest_step(365 * 86_400, 10_000), "1h");
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct IdsOnly {
    #[param(value_type = String)]
    ids: IdList,
}

#[test]
fn days_are_one_to_four_hundred_and_say_so() {
    #[derive(Debug, Deserialize, IntoParams)]
    #[into_params(parameter_in = Query)]
    struct DaysOnly {
        #[allow(dead_code)]
        #[param(value_type = i64)]
        days: Days,
    }
    assert!(parse_query::<DaysOnly>("days=400").is_ok());
    let (title, detail) = bad_request(parse_query::<DaysOnly>("days=401"));
    assert_eq!(title, "Invalid days");
    assert_eq!(
        detail,
        "days must be a whole number of days from 1 to 400, got \"401\""
    );
}

#[test]
fn an_id_list_counts_each_id_once_and_holds_at_most_twenty() {
    let parse = |raw: &str| parse_query::<IdsOnly>(&format!("ids={raw}")).map(|q| q.ids);
    assert_eq!(parse("3,1,3").unwrap(), IdList(vec![3, 1]));
    let twenty: Vec<String> = (1..=20).map(|i| i.to_string()).collect();
    assert_eq!(parse(&twenty.join(",")).unwrap().0.len(), 20);
    let (title, detail) = bad_request(parse(&format!("{},21", twenty.join(","))));
    assert_eq!(title, "Invalid ids");
    assert_eq!(detail, "ids at most 20 influencers, got 21");
    for bad in ["1,,2", "0", "", "1,x"] {
        assert_eq!(bad_request(parse(bad)).0, "Invalid ids", "{bad:?}");
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct MoversParams {
    #[param(value_type = Option<String>)]
    day: Option<Day>,
    #[param(value_type = Option<i64>)]
    min_followers: Option<MinFollowers>,
    #[param(value_type = Option<String>)]
    cursor: Option<KeyCursor>,
}

#[test]
fn days_are_utc_dates_and_say_so() {
    let day = |raw: &str| parse_query::<MoversParams>(&format!("day={raw}")).map(|q| q.day);
    assert_eq!(day("2026-12-01").unwrap(), Some(Day(1_796_083_200_000)));
    assert_eq!(Day(1_796_083_200_000).name(), "2026-12-01");
    assert_eq!(day("1970-01-01").unwrap(), Some(Day(0)));
    assert!(day("1969-12-31").unwrap().unwrap().0 < 0);
    assert!(day("9999-12-31").is_ok());
    for bad in [
        "2026-02-30",
        "2026-12-1",
        "26-12-01",
        "2026-12-01T00",
        "+2026-12-01",
        "x",
        "",
    ] {
        let (title, detail) = bad_request(day(bad));
        assert_eq!(title, "Invalid day", "{bad:?}");
        assert!(
            detail.starts_with("day must be a UTC date, YYYY-MM-DD"),
            "{detail}"
        );
    }
}

#[test]
fn min_followers_is_a_count_and_cursors_carry_a_value_and_an_id() {
    let q = |raw: &str| parse_query::<MoversParams>(raw);
    assert_eq!(
        q("min_followers=0").unwrap().min_followers,
        Some(MinFollowers(0))
    );
    assert_eq!(
        q("min_followers=2147483647").unwrap().min_followers,
        Some(MinFollowers(i32::MAX))
    );
    for bad in ["-1", "2147483648", "1e3", "+5"] {
        assert_eq!(
            bad_request(q(&format!("min_followers={bad}"))).0,
            "Invalid min_followers",
            "{bad:?}"
        );
    }
    for (key, id) in [(-12.5, 42), (0.1 + 0.2, 7), (1e15, 1), (3.0, 9)] {
        let text = KeyCursor::text(key, id);
        assert_eq!(
            q(&format!("cursor={text}")).unwrap().cursor,
            Some(KeyCursor(key, id)),
            "{text}"
        );
    }
    for bad in ["12", "_3", "1.5_", "1.5_-3", "inf_3", "NaN_3", "x_1"] {
        assert_eq!(
            bad_request(q(&format!("cursor={bad}"))).0,
            "Invalid cursor",
            "{bad:?}"
        );
    }
}

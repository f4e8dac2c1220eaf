//! The periodic jobs run once across processes: two runners at once, one does the work.

use influencer_analytics::jobs::{JobOutcome, average, ranking};

use influencer_analytics::testing::TestDb;

async fn some_influencers(db: &TestDb) {
    for (pk, followers) in [(1_000_001i64, 100), (1_000_002, 300)] {
        sqlx::query("insert into influencers (influencer_id, username) values ($1, $2)")
            .bind(pk)
            .bind(format!("influencer-{pk}"))
            .execute(&db.pool)
            .await
            .unwrap();
        sqlx::query(
            "insert into influencer_latest (influencer_id, slot, fetched_at, follower_count, following_count)
             values ($1, now(), now(), $2, 1)",
        )
        .bind(pk)
        .bind(followers)
        .execute(&db.pool)
        .await
        .unwrap();
    }
}

/// The current minute, from the database's clock.
async fn minute(db: &TestDb) -> chrono::DateTime<chrono::Utc> {
    sqlx::query_scalar("select date_trunc('minute', now())")
        .fetch_one(&db.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn two_processes_asking_for_the_ranking_at_once_rank_once_per_minute() {
    let db = TestDb::new().await;
    some_influencers(&db).await;
    loop {
        let before = minute(&db).await;
        let (a, b) = tokio::join!(
            ranking::refresh_if_due(&db.pool),
            ranking::refresh_if_due(&db.pool)
        );
        let again = ranking::refresh_if_due(&db.pool).await.unwrap();
        if minute(&db).await != before {
            continue; // a minute boundary fell in between: each minute may rank once
        }
        let outcomes = [a.unwrap(), b.unwrap()];
        let done = outcomes
            .iter()
            .filter(|o| matches!(o, JobOutcome::Done(2)))
            .count();
        assert_eq!(done, 1, "exactly one runner ranked: {outcomes:?}");
        assert!(
            outcomes
                .iter()
                .any(|o| matches!(o, JobOutcome::Busy | JobOutcome::AlreadyDone)),
            "{outcomes:?}"
        );
        assert_eq!(again, JobOutcome::AlreadyDone, "this minute is ranked");
        break;
    }
}

#[tokio::test]
async fn the_average_is_stored_once_per_minute_however_many_ask() {
    let db = TestDb::new().await;
    some_influencers(&db).await;
    loop {
        let before = minute(&db).await;
        let (a, b) = tokio::join!(
            average::record_if_due(&db.pool),
            average::record_if_due(&db.pool)
        );
        let again = average::record_if_due(&db.pool).await.unwrap();
        if minute(&db).await != before {
            continue;
        }
        let outcomes = [a.unwrap(), b.unwrap()];
        let stored: Vec<_> = outcomes
            .iter()
            .filter_map(|o| match o {
                JobOutcome::Done(Some(average)) => Some(*average),
                _ => None,
            })
            .collect();
        assert_eq!(stored.len(), 1, "{outcomes:?}");
        assert_eq!(stored[0].follower_count, 200.0);
        assert_eq!(stored[0].influencers, 2);
        assert_eq!(again, JobOutcome::AlreadyDone);
        break;
    }
}

/// A lock released by one process can be taken by the next at once: the release unlocks
/// before it closes its connection (closing alone frees the lock only when the server has
/// ended the session, which a next pass asking at once could race: CI saw a daily pass told
/// "already running" right after the previous one ended).
#[tokio::test]
async fn a_released_session_lock_can_be_taken_again_at_once() {
    use influencer_analytics::db::SessionLock;
    let db = TestDb::new().await;
    let mut observer = db.pool.acquire().await.unwrap();
    for round in 0..200 {
        let lock = SessionLock::try_take(&db.pool, 42)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("round {round}: the lock released before is still held"));
        assert!(
            SessionLock::try_take(&db.pool, 42).await.unwrap().is_none(),
            "held: nobody else takes it"
        );
        lock.release().await;
        // Asked on a connection already open, the moment release() returns.
        let held: i64 = sqlx::query_scalar(
            "select count(*) from pg_locks where locktype = 'advisory' and objid = 42 and granted",
        )
        .fetch_one(&mut *observer)
        .await
        .unwrap();
        assert_eq!(held, 0, "round {round}: still held after release()");
    }
}

#[tokio::test]
async fn movers_marks_are_kept_an_hour_each_minute_and_a_day_each_ten_minutes() {
    use chrono::{DateTime, Duration, Utc};
    use influencer_analytics::{jobs::movers, series::Snapshot};
    let db = TestDb::new().await;
    some_influencers(&db).await;
    let (now, bin): (DateTime<Utc>, DateTime<Utc>) =
        sqlx::query_as("select now(), date_bin('10 minutes', now() - interval '2 hours', 'epoch')")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    let minutes = Duration::minutes;
    // Within the hour; two in one ten minutes two hours ago and one in the next; past a day.
    let marks = [
        ("1 min ago", now - minutes(1)),
        ("30 min ago", now - minutes(30)),
        ("first of its ten minutes", bin + minutes(1)),
        ("second of its ten minutes", bin + minutes(3)),
        ("alone in the next ten minutes", bin + minutes(12)),
        ("a day and 30 min ago", now - minutes(24 * 60 + 30)),
    ];
    for (_, at) in marks {
        sqlx::query("insert into movers_marks (marked_at, influencers, data) values ($1, 0, $2)")
            .bind(at)
            .bind(Snapshot::default().encode())
            .execute(&db.pool)
            .await
            .unwrap();
    }
    // Two takers at once: one mark.
    let (a, b) = tokio::join!(movers::mark_if_due(&db.pool), movers::mark_if_due(&db.pool));
    let outcomes = [a.unwrap(), b.unwrap()];
    assert!(outcomes.contains(&JobOutcome::Done(2)), "{outcomes:?}");
    assert!(
        outcomes.contains(&JobOutcome::Busy) || outcomes.contains(&JobOutcome::AlreadyDone),
        "{outcomes:?}"
    );
    let kept: Vec<DateTime<Utc>> =
        sqlx::query_scalar("select marked_at from movers_marks where marked_at < $1")
            .bind(now)
            .fetch_all(&db.pool)
            .await
            .unwrap();
    let kept: Vec<&str> = marks
        .iter()
        .filter(|(_, at)| kept.contains(at))
        .map(|(name, _)| *name)
        .collect();
    assert_eq!(
        kept,
        vec![
            "1 min ago",
            "30 min ago",
            "first of its ten minutes",
            "alone in the next ten minutes"
        ]
    );
    let newest = movers::read(&db.pool, movers::newest(&db.pool).await.unwrap().unwrap())
        .await
        .unwrap();
    assert_eq!(newest.ids, vec![1_000_001, 1_000_002]);
    assert_eq!(newest.followers, vec![100, 300]);
}

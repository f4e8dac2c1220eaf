use influencer_analytics::testing::TestDb;

#[tokio::test]
async fn migrations_create_the_hypertables() {
    let db = TestDb::new().await;
    let mut hypertables: Vec<String> = sqlx::query_scalar(
        "select hypertable_name::text from timescaledb_information.hypertables order by 1",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    hypertables.sort();
    assert_eq!(
        hypertables,
        [
            "average_followers",
            "fetch_failures",
            "influencer_hour_blocks",
            "influencer_metrics",
            "influencer_segments",
            "influencer_summary_packs",
            "suspicious_classifications"
        ]
    );
}

#[tokio::test]
async fn influencer_metrics_has_the_public_columns_and_one_hour_chunks() {
    let db = TestDb::new().await;
    let columns: Vec<(String, String)> = sqlx::query_as(
        "select column_name::text, data_type::text from information_schema.columns
         where table_name = 'influencer_metrics' order by column_name",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    let expected = [
        ("fetched_at", "timestamp with time zone"),
        ("follower_count", "integer"),
        ("following_count", "integer"),
        ("influencer_id", "bigint"),
        ("slot", "timestamp with time zone"),
    ];
    assert_eq!(
        columns,
        expected.map(|(a, b)| (a.to_string(), b.to_string()))
    );
    let interval: String = sqlx::query_scalar(
        "select time_interval::text from timescaledb_information.dimensions
         where hypertable_name = 'influencer_metrics'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(interval, "01:00:00");
}

#[tokio::test]
async fn the_unique_key_rejects_a_second_point_for_the_same_slot() {
    let db = TestDb::new().await;
    let insert = "insert into influencer_metrics
        (influencer_id, slot, fetched_at, follower_count, following_count)
        values (1000001, '2026-11-22 10:00:17+00', now(), $1, 1300)";
    sqlx::query(insert)
        .bind(57_166)
        .execute(&db.pool)
        .await
        .unwrap();
    let error = sqlx::query(insert)
        .bind(57_200)
        .execute(&db.pool)
        .await
        .unwrap_err();
    let code = error.as_database_error().and_then(|e| e.code()).unwrap();
    assert_eq!(code, "23505", "unique_violation, got {error}");
    // The next slot of the same influencer is a new point.
    sqlx::query(
        "insert into influencer_metrics
         (influencer_id, slot, fetched_at, follower_count, following_count)
         values (1000001, '2026-11-22 10:01:17+00', now(), 1, 1)",
    )
    .execute(&db.pool)
    .await
    .unwrap();
}

#[tokio::test]
async fn negative_counts_are_refused_by_the_schema() {
    let db = TestDb::new().await;
    let error = sqlx::query(
        "insert into influencer_metrics
         (influencer_id, slot, fetched_at, follower_count, following_count)
         values (1000001, now(), now(), -1, 10)",
    )
    .execute(&db.pool)
    .await
    .unwrap_err();
    assert_eq!(
        error.as_database_error().and_then(|e| e.code()).unwrap(),
        "23514"
    );
}

#[tokio::test]
async fn an_untracked_influencer_must_say_why() {
    let db = TestDb::new().await;
    let error = sqlx::query(
        "insert into influencers (influencer_id, username, tracked) values (5, 'x', false)",
    )
    .execute(&db.pool)
    .await
    .unwrap_err();
    assert_eq!(
        error.as_database_error().and_then(|e| e.code()).unwrap(),
        "23514"
    );
}

/// Every column, index, constraint and hypertable dimension of the public schema, and the
/// migrations recorded, as sorted text.
async fn schema_snapshot(db: &TestDb) -> Vec<String> {
    sqlx::query_scalar(
        "select format('column %s.%s %s null=%s default=%s', table_name, column_name, data_type,
                       is_nullable, column_default)
         from information_schema.columns where table_schema = 'public'
         union all
         select format('index %s', indexdef) from pg_indexes where schemaname = 'public'
         union all
         select format('constraint %s %s', conrelid::regclass, pg_get_constraintdef(oid))
         from pg_constraint where connamespace = 'public'::regnamespace
         union all
         select format('hypertable %s.%s %s', hypertable_name, column_name, time_interval)
         from timescaledb_information.dimensions
         union all
         select format('migration %s %s', version, description) from _sqlx_migrations
         order by 1",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn migrating_twice_is_harmless() {
    let db = TestDb::new().await;
    let before = schema_snapshot(&db).await;
    assert!(
        before
            .iter()
            .any(|l| l.starts_with("index CREATE UNIQUE INDEX influencer_metrics_influencer_slot")),
        "the snapshot sees the schema: {before:?}"
    );
    influencer_analytics::db::migrate(&db.pool, &db.settings.database_url)
        .await
        .unwrap();
    assert_eq!(
        schema_snapshot(&db).await,
        before,
        "the second run changed nothing"
    );
}

#[tokio::test]
async fn a_database_with_the_pre_baseline_history_is_refused_with_what_to_do() {
    let db = TestDb::new().await;
    // The old history's migration 6 (this release has its own 6, so the versions agree and
    // the checksum does not).
    sqlx::query(
        "update _sqlx_migrations set description = 'sink speed and storage', checksum = '\\x00'
         where version = 6",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let error = influencer_analytics::db::migrate(&db.pool, &db.settings.database_url)
        .await
        .unwrap_err();
    let message = format!("{error:#}");
    assert!(message.contains("folded into one baseline"), "{message}");
    assert!(message.contains("drop it"), "{message}");
}

/// A new database migrated by a runtime migrator over copies of the migrations numbered below
/// `before` only, as a database last migrated by an older release has them: (a connection to
/// `postgres`, its name, a pool).
async fn database_migrated_before(before: u32) -> (sqlx::PgConnection, String, sqlx::PgPool) {
    use sqlx::Connection;
    let server = influencer_analytics::testing::shared_db_server();
    let name = format!("ia_test_{:016x}", rand::random::<u64>());
    let mut admin = sqlx::PgConnection::connect(&format!("{server}/postgres"))
        .await
        .unwrap();
    sqlx::query(&format!("create database {name}"))
        .execute(&mut admin)
        .await
        .unwrap();
    let pool = sqlx::PgPool::connect(&format!("{server}/{name}"))
        .await
        .unwrap();
    let older = tempfile::tempdir().unwrap();
    let migrations = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
    let mut copied = 0;
    for entry in std::fs::read_dir(&migrations).unwrap() {
        let file = entry.unwrap().file_name();
        let number: u32 = file.to_str().unwrap()[..4].parse().unwrap();
        if number < before {
            std::fs::copy(migrations.join(&file), older.path().join(&file)).unwrap();
            copied += 1;
        }
    }
    assert_eq!(copied, before - 1, "migrations 1 to {} exist", before - 1);
    sqlx::migrate::Migrator::new(older.path())
        .await
        .unwrap()
        .run(&pool)
        .await
        .unwrap();
    (admin, name, pool)
}

/// Hour segments stored one row per influencer and hour (migration 0004) are carried into
/// block rows of 64 influencers (0005): each member at its place, with its lateness, in blocks
/// with members missing, an influencer missing from one hour, and a negative id.
#[tokio::test]
async fn hour_segments_stored_before_migration_0005_are_carried_into_blocks() {
    use influencer_analytics::series::{self, SeriesPoint, codec};
    let (mut admin, name, pool) = database_migrated_before(5).await;
    let hour = 1_764_547_200_000i64; // 2025-12-01 00:00 UTC
    let at = |ms: i64| chrono::DateTime::from_timestamp_millis(ms).unwrap();
    let ids = [1i64, 2, 63, 64, 130, -3];
    let points_of = |id: i64, h: i64| -> Vec<SeriesPoint> {
        let start = hour + h * 3_600_000;
        (0..60 - id.rem_euclid(5))
            .map(|i| SeriesPoint {
                slot_ms: start + 17_000 + i * 60_000,
                follower_count: (1_000_000 + id * 1_000 + (i * 7_919) % 5_000) as i32,
                following_count: (300 + h + i % 7) as i32,
            })
            .collect()
    };
    let stored = |id: i64, h: i64| !(id == 2 && h == 1);
    for id in ids {
        for h in 0..2 {
            if !stored(id, h) {
                continue;
            }
            let points = points_of(id, h);
            sqlx::query(
                "insert into influencer_hour_segments (influencer_id, period_start, points,
                     lateness_max_ms, lateness_p99_ms, data)
                 values ($1, $2, $3, $4, $5, $6)",
            )
            .bind(id)
            .bind(at(hour + h * 3_600_000))
            .bind(points.len() as i32)
            .bind((id * 10 + h) as i32)
            .bind((id + h) as i32)
            .bind(codec::encode(&points).unwrap())
            .execute(&pool)
            .await
            .unwrap();
        }
    }

    influencer_analytics::db::MIGRATOR.run(&pool).await.unwrap();
    // Blocks -1, 0, 1 and 2, in each of the two hours.
    let rows: i64 = sqlx::query_scalar("select count(*) from influencer_hour_blocks")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(rows, 8);
    for id in ids {
        let lateness: Vec<(i32, i32, i32)> = sqlx::query_as(
            "select points, lateness_max_ms, lateness_p99_ms from all_segments
             where influencer_id = $1 order by period_start",
        )
        .bind(id)
        .fetch_all(&pool)
        .await
        .unwrap();
        let want: Vec<(i32, i32, i32)> = (0..2)
            .filter(|&h| stored(id, h))
            .map(|h| {
                (
                    points_of(id, h).len() as i32,
                    (id * 10 + h) as i32,
                    (id + h) as i32,
                )
            })
            .collect();
        assert_eq!(lateness, want, "influencer {id}");
        let read = series::read::points(&pool, id, hour, hour + 2 * 3_600_000)
            .await
            .unwrap();
        let want: Vec<SeriesPoint> = (0..2)
            .filter(|&h| stored(id, h))
            .flat_map(|h| points_of(id, h))
            .collect();
        assert_eq!(read, want, "influencer {id}");
    }
    pool.close().await;
    sqlx::query(&format!("drop database {name} with (force)"))
        .execute(&mut admin)
        .await
        .unwrap();
}

/// Hour segments stored before migration 0004 (with a summary, the points in two parts) are
/// carried into the table without a summary: the same points, read through the one read path.
#[tokio::test]
async fn hour_segments_stored_before_migration_0004_are_carried_over() {
    use influencer_analytics::series::{self, SeriesPoint};
    let (mut admin, name, pool) = database_migrated_before(4).await;
    let hour = 1_764_547_200_000i64; // 2025-12-01 00:00 UTC
    let points: Vec<SeriesPoint> = (0..60)
        .map(|i| SeriesPoint {
            slot_ms: hour + 17_000 + i * 60_000,
            follower_count: 1_000_000 + (i as i32 * 7_919) % 5_000,
            following_count: 300 + i as i32 % 7,
        })
        .collect();
    insert_segment_with_summary(
        &pool,
        "influencer_hour_segments",
        42,
        (hour, hour + 3_600_000),
        &points,
    )
    .await;

    influencer_analytics::db::MIGRATOR.run(&pool).await.unwrap();
    let carried: (i32, i32, i32) = sqlx::query_as(
        "select points, lateness_max_ms, lateness_p99_ms from all_segments
         where influencer_id = 42",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(carried, (60, 900, 800));
    let read = series::read::points(&pool, 42, hour, hour + 3_600_000)
        .await
        .unwrap();
    assert_eq!(read, points);
    let buckets =
        series::read::buckets(&pool, 42, hour - 86_400_000, hour + 86_400_000, 86_400_000)
            .await
            .unwrap();
    assert_eq!(
        buckets,
        series::read::fold_buckets(
            points,
            Vec::new(),
            &[],
            hour - 86_400_000,
            hour + 86_400_000,
            86_400_000
        )
    );
    pool.close().await;
    sqlx::query(&format!("drop database {name} with (force)"))
        .execute(&mut admin)
        .await
        .unwrap();
}

/// Day segments stored before migration 0006 (their summaries in their rows) are carried into
/// summary packs, one per influencer and 28-day span: a long bucketed range answers as from
/// their points, and the packs hold each day's summary.
#[tokio::test]
async fn day_summaries_stored_before_migration_0006_move_into_packs() {
    use influencer_analytics::series::{self, DAY_MS, SeriesPoint, Summary, pack};
    let (mut admin, name, pool) = database_migrated_before(6).await;
    // Three days across a span's bound (2025-01-16 starts a 28-day chunk).
    let first_day = 1_736_899_200_000i64; // 2025-01-15 00:00 UTC
    let mut all = Vec::new();
    for d in 0..3 {
        let day = first_day + d * DAY_MS;
        let points: Vec<SeriesPoint> = (0..1440)
            .map(|i| SeriesPoint {
                slot_ms: day + 17_000 + i * 60_000,
                follower_count: 1_000_000 + ((d * 1440 + i) as i32 * 7_919) % 5_000,
                following_count: (300 + i as i32 % 7) * i32::from(d != 1),
            })
            .collect();
        let s = Summary::of(&points);
        insert_segment_with_summary(
            &pool,
            "influencer_segments",
            42,
            (day, day + DAY_MS),
            &points,
        )
        .await;
        all.push(((day, day + DAY_MS), s, points));
    }

    influencer_analytics::db::MIGRATOR.run(&pool).await.unwrap();
    let packs: Vec<(chrono::DateTime<chrono::Utc>, Vec<u8>)> = sqlx::query_as(
        "select period_start, days from influencer_summary_packs where influencer_id = 42
         order by period_start",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(packs.len(), 2, "the first day's span and the next one's");
    let mut carried = Vec::new();
    for (start, bytes) in &packs {
        carried.extend(pack::decode(start.timestamp_millis(), bytes).unwrap());
    }
    let want: Vec<_> = all.iter().map(|(period, s, _)| (*period, *s)).collect();
    assert_eq!(carried, want);
    assert_eq!(
        want[1].1.ratio_points, 0,
        "a day without a ratio is carried too"
    );
    // The whole days are answered from the packs, as from the points.
    let points: Vec<SeriesPoint> = all.into_iter().flat_map(|(_, _, p)| p).collect();
    let (start, end) = (first_day, first_day + 3 * DAY_MS - 1);
    let buckets = series::read::buckets(&pool, 42, start, end, DAY_MS)
        .await
        .unwrap();
    assert_eq!(buckets.len(), 3);
    assert_eq!(
        buckets,
        series::read::fold_buckets(points, Vec::new(), &[], start, end, DAY_MS)
    );
    pool.close().await;
    sqlx::query(&format!("drop database {name} with (force)"))
        .execute(&mut admin)
        .await
        .unwrap();
}

/// Stores a segment of `points` as releases before migrations 0004 (hour segments) and 0006
/// (day segments) stored one: its summary in its row, its encoded points in `data_tail`,
/// lateness 900 and 800 ms.
async fn insert_segment_with_summary(
    pool: &sqlx::PgPool,
    table: &str,
    influencer_id: i64,
    (start_ms, end_ms): (i64, i64),
    points: &[influencer_analytics::series::SeriesPoint],
) {
    use influencer_analytics::series::{Summary, codec};
    let s = Summary::of(points);
    let at = |ms: i64| chrono::DateTime::from_timestamp_millis(ms).unwrap();
    sqlx::query(&format!(
        "insert into {table} (influencer_id, period_start, period_end, first_slot, last_slot,
             follower_sum, following_sum, ratio_min, ratio_max, ratio_sum, points, ratio_points,
             follower_min, follower_max, follower_last, following_min, following_max,
             following_last, lateness_max_ms, lateness_p99_ms, data_head, data_tail)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17,
                 $18, 900, 800, '', $19)"
    ))
    .bind(influencer_id)
    .bind(at(start_ms))
    .bind(at(end_ms))
    .bind(at(s.first_slot_ms))
    .bind(at(s.last_slot_ms))
    .bind(s.follower_sum)
    .bind(s.following_sum)
    .bind(s.ratio_min)
    .bind(s.ratio_max)
    .bind(s.ratio_sum)
    .bind(s.points)
    .bind(s.ratio_points)
    .bind(s.follower_min)
    .bind(s.follower_max)
    .bind(s.follower_last)
    .bind(s.following_min)
    .bind(s.following_max)
    .bind(s.following_last)
    .bind(codec::encode(points).unwrap())
    .execute(pool)
    .await
    .unwrap();
}

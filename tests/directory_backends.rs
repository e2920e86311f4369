//! The same behaviour suite against real SQLite and real PostgreSQL: found,
//! unknown, NULL column, arrays and typed columns, backend down (cached entries
//! keep serving, uncached lookups fail — never "unknown"), backend back up,
//! eviction and tombstones; and coalescing: 500 concurrent lookups of one
//! uncached subject cause exactly one query, counted by the database itself.

mod support;

use portcullis::directory::{DirectoryConfig, Lookup, OnUnknown, Source, UserDirectory};
use portcullis::metrics::Metrics;
use serde_json::json;
use sqlx::{Connection, Executor};
use std::sync::Arc;
use std::time::Duration;
use support::proxy::Proxy;
use tokio::net::TcpListener;

const PG_ADMIN: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// A backend under test, with a way to break and repair it.
enum Fixture {
    Sqlite {
        _dir: tempfile::TempDir,
        path: std::path::PathBuf,
    },
    Postgres {
        database: String,
        proxy: Proxy,
    },
}

impl Fixture {
    async fn sqlite() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.db");
        let url = format!("sqlite://{}?mode=rwc", path.display());
        let mut db = sqlx::SqliteConnection::connect(&url).await.unwrap();
        db.execute(
            "CREATE TABLE users (id TEXT, clerk_id TEXT, role TEXT, channel_id TEXT, permissions TEXT, logins INTEGER, active BOOLEAN);
             INSERT INTO users VALUES ('1', 'user_a', 'USER', 'ch_1', '[\"videos:read\",\"videos:write\"]', 42, 1);
             INSERT INTO users VALUES ('2', 'user_b', 'ADMIN', NULL, '[]', 0, 0);
             CREATE TABLE lookups (n INTEGER);",
        )
        .await
        .unwrap();
        Fixture::Sqlite { _dir: dir, path }
    }

    async fn postgres() -> Self {
        let database = format!("portcullis_dir_{:016x}", rand::random::<u64>());
        let mut admin = sqlx::PgConnection::connect(PG_ADMIN)
            .await
            .expect("PostgreSQL on 127.0.0.1:5432 (scripts/test checks it)");
        admin
            .execute(format!("CREATE DATABASE {database}").as_str())
            .await
            .unwrap();
        let mut db =
            sqlx::PgConnection::connect(&format!("postgres://postgres@127.0.0.1:5432/{database}"))
                .await
                .unwrap();
        db.execute(
            "CREATE TABLE users (id TEXT, clerk_id TEXT, role TEXT, channel_id TEXT, permissions TEXT[], logins INT4, active BOOL);
             INSERT INTO users VALUES ('1', 'user_a', 'USER', 'ch_1', ARRAY['videos:read','videos:write'], 42, true);
             INSERT INTO users VALUES ('2', 'user_b', 'ADMIN', NULL, ARRAY[]::TEXT[], 0, false);
             CREATE TABLE lookups (n INT);
             -- The lookup the directory runs: it counts itself, so the test counts
             -- queries at the database, not in portcullis.
             CREATE FUNCTION find_user(sub TEXT) RETURNS SETOF users LANGUAGE plpgsql AS $$
             BEGIN
               INSERT INTO lookups VALUES (1);
               RETURN QUERY SELECT * FROM users WHERE clerk_id = sub;
             END $$;",
        )
        .await
        .unwrap();
        let proxy = Proxy::start("127.0.0.1:5432".parse().unwrap()).await;
        Fixture::Postgres { database, proxy }
    }

    fn config(&self) -> DirectoryConfig {
        let (source, query) = match self {
            Fixture::Sqlite { path, .. } => (
                Source::Sqlite(path.clone()),
                "SELECT id, role, channel_id, permissions, logins, active FROM users WHERE clerk_id = $1",
            ),
            Fixture::Postgres { database, proxy } => (
                Source::Postgres(format!("postgres://postgres@{}/{database}", proxy.addr)),
                "SELECT id, role, channel_id, permissions, logins, active FROM find_user($1)",
            ),
        };
        DirectoryConfig {
            source,
            query: Some(query.into()),
            ttl: Duration::from_secs(300),
            negative_ttl: Duration::from_secs(300),
            max_entries: 1000,
            on_unknown: OnUnknown::Deny,
            timeout: Duration::from_secs(2),
        }
    }

    async fn break_backend(&mut self) {
        match self {
            Fixture::Sqlite { path, .. } => {
                self::sqlite_exec(path, "ALTER TABLE users RENAME TO users_away").await
            }
            Fixture::Postgres { proxy, .. } => proxy.stop(),
        }
    }

    async fn repair_backend(&mut self) {
        match self {
            Fixture::Sqlite { path, .. } => {
                self::sqlite_exec(path, "ALTER TABLE users_away RENAME TO users").await
            }
            Fixture::Postgres { proxy, .. } => proxy.restart().await,
        }
    }

    async fn set_role(&self, clerk_id: &str, role: &str) {
        let sql = format!("UPDATE users SET role = '{role}' WHERE clerk_id = '{clerk_id}'");
        match self {
            Fixture::Sqlite { path, .. } => sqlite_exec(path, &sql).await,
            Fixture::Postgres { database, .. } => {
                let mut db = sqlx::PgConnection::connect(&format!(
                    "postgres://postgres@127.0.0.1:5432/{database}"
                ))
                .await
                .unwrap();
                db.execute(sql.as_str()).await.unwrap();
            }
        }
    }

    /// Queries counted by the database (PostgreSQL only: `find_user` logs itself).
    async fn counted_queries(&self) -> Option<i64> {
        match self {
            Fixture::Sqlite { .. } => None,
            Fixture::Postgres { database, .. } => {
                let mut db = sqlx::PgConnection::connect(&format!(
                    "postgres://postgres@127.0.0.1:5432/{database}"
                ))
                .await
                .unwrap();
                let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM lookups")
                    .fetch_one(&mut db)
                    .await
                    .unwrap();
                Some(n)
            }
        }
    }

    async fn drop_database(self) {
        if let Fixture::Postgres {
            database,
            mut proxy,
        } = self
        {
            proxy.stop();
            let mut admin = sqlx::PgConnection::connect(PG_ADMIN).await.unwrap();
            let _ = admin
                .execute(format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)").as_str())
                .await;
        }
    }
}

async fn sqlite_exec(path: &std::path::Path, sql: &str) {
    let mut db = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    db.execute(sql).await.unwrap();
}

async fn found(directory: &UserDirectory, subject: &str) -> serde_json::Value {
    match directory.lookup(&subject.into()).await {
        Ok(Lookup::Found(fields)) => serde_json::Value::Object(fields),
        other => panic!("{subject}: expected found, got {other:?}"),
    }
}

async fn behaviour_suite(mut fixture: Fixture, name: &str) {
    let directory = UserDirectory::open(fixture.config(), Arc::new(Metrics::default())).unwrap();
    assert!(directory.ping().await, "{name}: reachable");

    // Found, with typed columns and an array; NULL columns are absent.
    assert_eq!(
        found(&directory, "user_a").await,
        json!({"id": "1", "role": "USER", "channel_id": "ch_1", "permissions": ["videos:read", "videos:write"], "logins": 42, "active": true}),
        "{name}"
    );
    let b = found(&directory, "user_b").await;
    assert_eq!(b.get("channel_id"), None, "{name}: NULL is absent");
    assert_eq!(b["permissions"], json!([]), "{name}");
    assert_eq!(b["active"], json!(false), "{name}");
    // Unknown.
    assert_eq!(
        directory.lookup(&"user_nobody".into()).await.unwrap(),
        Lookup::Unknown,
        "{name}"
    );
    // A subject with SQL in it is a value, not SQL.
    assert_eq!(
        directory.lookup(&"' OR '1'='1".into()).await.unwrap(),
        Lookup::Unknown,
        "{name}"
    );

    // The cache serves; eviction makes the next lookup read the backend.
    fixture.set_role("user_a", "ADMIN").await;
    assert_eq!(
        found(&directory, "user_a").await["role"],
        "USER",
        "{name}: cached"
    );
    directory.evict("user_a").await;
    assert_eq!(
        found(&directory, "user_a").await["role"],
        "ADMIN",
        "{name}: evicted"
    );

    // Backend down: cached entries keep serving; an uncached subject is an error,
    // never Unknown (which could become an allow with on_unknown: claims).
    fixture.break_backend().await;
    assert_eq!(
        found(&directory, "user_b").await["role"],
        "ADMIN",
        "{name}: cached while down"
    );
    let down = directory.lookup(&"user_c".into()).await;
    assert!(
        down.is_err(),
        "{name}: uncached while down must fail, got {down:?}"
    );
    assert!(!directory.ping().await, "{name}: not reachable while down");

    // Backend back up: lookups work again (PostgreSQL: the pool reconnects).
    fixture.repair_backend().await;
    let mut back = false;
    for _ in 0..50 {
        if directory.lookup(&"user_c".into()).await.is_ok() {
            back = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        back,
        "{name}: the directory recovers when the backend returns"
    );

    // Tombstones: refused while the backend still has the user; once the backend
    // no longer has it, plain unknown.
    directory.tombstone("user_b").await;
    assert_eq!(
        directory.lookup(&"user_b".into()).await.unwrap(),
        Lookup::Deleted,
        "{name}"
    );
    fixture.set_role("user_b", "GONE").await;
    match &fixture {
        Fixture::Sqlite { path, .. } => {
            sqlite_exec(path, "DELETE FROM users WHERE clerk_id = 'user_b'").await
        }
        Fixture::Postgres { database, .. } => {
            let mut db = sqlx::PgConnection::connect(&format!(
                "postgres://postgres@127.0.0.1:5432/{database}"
            ))
            .await
            .unwrap();
            db.execute("DELETE FROM users WHERE clerk_id = 'user_b'")
                .await
                .unwrap();
        }
    }
    directory.evict("user_b").await;
    assert_eq!(
        directory.lookup(&"user_b".into()).await.unwrap(),
        Lookup::Unknown,
        "{name}"
    );
    fixture.drop_database().await;
}

#[tokio::test]
async fn sqlite_behaviour() {
    behaviour_suite(Fixture::sqlite().await, "sqlite").await;
}

#[tokio::test]
async fn postgres_behaviour() {
    behaviour_suite(Fixture::postgres().await, "postgres").await;
}

async fn coalescing(fixture: Fixture, name: &str) {
    let metrics = Arc::new(Metrics::default());
    let directory = Arc::new(UserDirectory::open(fixture.config(), Arc::clone(&metrics)).unwrap());
    let before = fixture.counted_queries().await;
    let lookups: Vec<_> = (0..500)
        .map(|_| {
            let directory = Arc::clone(&directory);
            tokio::spawn(async move { directory.lookup(&"user_a".into()).await })
        })
        .collect();
    for lookup in lookups {
        assert!(
            matches!(lookup.await.unwrap(), Ok(Lookup::Found(_))),
            "{name}"
        );
    }
    if let (Some(before), Some(after)) = (before, fixture.counted_queries().await) {
        assert_eq!(
            after - before,
            1,
            "{name}: one query at the database for 500 lookups"
        );
    }
    let text = metrics.encode();
    assert!(
        text.contains(r#"portcullis_directory_queries_total{result="success"} 1"#),
        "{name}: one query counted: {text}"
    );
    fixture.drop_database().await;
}

/// Entries live `ttl` (found) and `negative_ttl` (unknown), then the backend is
/// asked again: a changed role and a newly added user are seen, not before.
#[tokio::test]
async fn entries_expire_after_their_ttl() {
    let fixture = Fixture::sqlite().await;
    let config = DirectoryConfig {
        ttl: Duration::from_secs(300),
        negative_ttl: Duration::from_secs(30),
        ..fixture.config()
    };
    let clock = portcullis::clock::Clock::manual();
    let tombstones = Arc::new(portcullis::directory::Tombstones::new(16, clock.clone()));
    let directory = UserDirectory::open_with(
        config,
        Arc::new(Metrics::default()),
        tombstones,
        clock.clone(),
    )
    .unwrap();
    assert_eq!(found(&directory, "user_a").await["role"], "USER");
    assert_eq!(
        directory.lookup(&"user_new".into()).await.unwrap(),
        Lookup::Unknown
    );
    fixture.set_role("user_a", "ADMIN").await;
    let Fixture::Sqlite { path, .. } = &fixture else {
        unreachable!()
    };
    sqlite_exec(
        path,
        "INSERT INTO users VALUES ('3', 'user_new', 'USER', NULL, '[]', 0, 1)",
    )
    .await;
    assert_eq!(
        found(&directory, "user_a").await["role"],
        "USER",
        "within ttl the cached row serves"
    );
    assert_eq!(
        directory.lookup(&"user_new".into()).await.unwrap(),
        Lookup::Unknown,
        "within negative_ttl the cached miss serves"
    );
    clock.advance(Duration::from_secs(30));
    assert_eq!(
        found(&directory, "user_new").await["id"],
        "3",
        "a miss is asked again after negative_ttl"
    );
    assert_eq!(
        found(&directory, "user_a").await["role"],
        "USER",
        "a row is not, before ttl"
    );
    clock.advance(Duration::from_secs(270));
    assert_eq!(found(&directory, "user_a").await["role"], "ADMIN");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_coalesces_concurrent_lookups() {
    coalescing(Fixture::postgres().await, "postgres").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_coalesces_concurrent_lookups() {
    coalescing(Fixture::sqlite().await, "sqlite").await;
}

/// The HTTP users service backend: 200 → fields (nulls dropped), 404 → unknown,
/// 500 / not an object / too slow → an error (never unknown); the subject is
/// encoded as one path segment.
#[tokio::test]
async fn http_users_service() {
    use axum::{
        extract::Path, http::StatusCode, response::IntoResponse, routing::get, Json, Router,
    };
    async fn user(Path(sub): Path<String>) -> axum::response::Response {
        match sub.as_str() {
            "user_a" => {
                Json(json!({"id": "1", "role": "USER", "channel_id": null, "permissions": ["a"]}))
                    .into_response()
            }
            "broken" => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
            "list" => Json(json!([1, 2])).into_response(),
            "slow" => {
                tokio::time::sleep(Duration::from_secs(5)).await;
                StatusCode::OK.into_response()
            }
            "../admin" => Json(json!({"id": "encoded-ok"})).into_response(),
            _ => StatusCode::NOT_FOUND.into_response(),
        }
    }
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, Router::new().route("/users/{sub}", get(user))).await
    });
    let config = DirectoryConfig {
        source: Source::Http(format!("http://{addr}/users/{{sub}}")),
        timeout: Duration::from_millis(500),
        ..DirectoryConfig::default()
    };
    let directory = UserDirectory::open(config, Arc::new(Metrics::default())).unwrap();
    assert_eq!(
        found(&directory, "user_a").await,
        json!({"id": "1", "role": "USER", "permissions": ["a"]})
    );
    assert_eq!(
        directory.lookup(&"user_z".into()).await.unwrap(),
        Lookup::Unknown
    );
    assert_eq!(found(&directory, "../admin").await["id"], "encoded-ok");
    for bad in ["broken", "list", "slow"] {
        assert!(
            directory.lookup(&bad.into()).await.is_err(),
            "{bad} must be an error"
        );
    }
}

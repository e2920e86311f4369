//! SQL backends: SQLite and PostgreSQL through sqlx pools. The configured query
//! takes the subject as its one parameter; the first row's columns become the
//! user's fields by name (text, integers, floats, booleans, JSON, arrays; NULL
//! means absent).

use super::{DirectoryConfig, DirectoryError, Row, Source};
use serde_json::{Map, Value};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions, SqliteRow};
use sqlx::{Column, Row as _, TypeInfo, ValueRef};
use std::str::FromStr;

enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// A SQL directory: a pool and the query.
pub struct SqlBackend {
    pool: Pool,
    query: String,
}

impl SqlBackend {
    /// Builds a lazily connecting pool for the configured source.
    pub fn open(config: &DirectoryConfig) -> Result<Self, DirectoryError> {
        let query = config
            .query
            .clone()
            .ok_or_else(|| DirectoryError("a SQL directory needs `users.query`".into()))?;
        let pool = match &config.source {
            Source::Sqlite(path) => {
                let options = SqliteConnectOptions::new()
                    .filename(path)
                    .create_if_missing(false)
                    .busy_timeout(config.timeout)
                    // Point lookups by subject touch a few pages each and the OS
                    // caches the file: 256 KiB of page cache per connection, not
                    // SQLite's default 2 MiB (BENCHMARKS.md's memory budget).
                    .pragma("cache_size", "-256");
                Pool::Sqlite(
                    SqlitePoolOptions::new()
                        .max_connections(4)
                        .acquire_timeout(config.timeout)
                        .connect_lazy_with(options),
                )
            }
            Source::Postgres(url) => {
                let statement_timeout = config.timeout.as_millis().to_string();
                let options = PgConnectOptions::from_str(url)
                    .map_err(|e| DirectoryError(format!("invalid PostgreSQL URL: {e}")))?
                    // The server cancels a query that outlives our own timeout.
                    .options([("statement_timeout", statement_timeout.as_str())]);
                Pool::Postgres(
                    PgPoolOptions::new()
                        .max_connections(8)
                        .acquire_timeout(config.timeout)
                        // A connection broken by a server restart is replaced.
                        .test_before_acquire(true)
                        .connect_lazy_with(options),
                )
            }
            _ => return Err(DirectoryError("not a SQL source".into())),
        };
        Ok(Self { pool, query })
    }

    pub async fn query(&self, subject: &str) -> Result<Row, DirectoryError> {
        let failed = |e: sqlx::Error| DirectoryError(format!("query failed: {e}"));
        match &self.pool {
            Pool::Sqlite(pool) => {
                let row = sqlx::query(&self.query)
                    .bind(subject)
                    .fetch_optional(pool)
                    .await
                    .map_err(failed)?;
                row.map(|r| sqlite_fields(&r)).transpose()
            }
            Pool::Postgres(pool) => {
                let row = sqlx::query(&self.query)
                    .bind(subject)
                    .fetch_optional(pool)
                    .await
                    .map_err(failed)?;
                row.map(|r| pg_fields(&r)).transpose()
            }
        }
    }

    /// Runs the configured query for an empty subject: the database answers and
    /// the query is valid (its table exists, its columns are readable).
    pub async fn ping(&self) -> bool {
        self.query("").await.is_ok()
    }
}

fn unsupported(column: &str, type_name: &str) -> DirectoryError {
    DirectoryError(format!(
        "column {column:?} has type {type_name}, which portcullis cannot read: cast it in the query (e.g. {column}::text)"
    ))
}

fn sqlite_fields(row: &SqliteRow) -> Result<Map<String, Value>, DirectoryError> {
    let mut fields = Map::new();
    for (i, column) in row.columns().iter().enumerate() {
        let name = column.name();
        let raw = row
            .try_get_raw(i)
            .map_err(|e| DirectoryError(e.to_string()))?;
        if raw.is_null() {
            continue;
        }
        let declared = column.type_info().name().to_ascii_uppercase();
        let actual = raw.type_info().name().to_ascii_uppercase();
        let err = |e: sqlx::Error| DirectoryError(format!("column {name:?}: {e}"));
        let value = match (declared.as_str(), actual.as_str()) {
            ("BOOLEAN" | "BOOL", _) => Value::Bool(row.try_get::<bool, _>(i).map_err(err)?),
            (_, "INTEGER") => Value::from(row.try_get::<i64, _>(i).map_err(err)?),
            (_, "REAL") => Value::from(row.try_get::<f64, _>(i).map_err(err)?),
            (_, "TEXT") => {
                let text: String = row.try_get(i).map_err(err)?;
                // SQLite has no arrays: a JSON array in a text column is one
                // (e.g. permissions stored as '["a","b"]').
                match serde_json::from_str::<Value>(&text) {
                    Ok(array @ Value::Array(_)) if text.trim_start().starts_with('[') => array,
                    _ => Value::String(text),
                }
            }
            (_, other) => return Err(unsupported(name, other)),
        };
        fields.insert(name.to_owned(), value);
    }
    Ok(fields)
}

fn pg_fields(row: &PgRow) -> Result<Map<String, Value>, DirectoryError> {
    let mut fields = Map::new();
    for (i, column) in row.columns().iter().enumerate() {
        let name = column.name();
        let raw = row
            .try_get_raw(i)
            .map_err(|e| DirectoryError(e.to_string()))?;
        if raw.is_null() {
            continue;
        }
        let type_name = column.type_info().name().to_owned();
        let err = |e: sqlx::Error| DirectoryError(format!("column {name:?}: {e}"));
        let value = match type_name.as_str() {
            "TEXT" | "VARCHAR" | "BPCHAR" | "NAME" | "CHAR" | "CITEXT" => {
                Value::String(row.try_get::<String, _>(i).map_err(err)?)
            }
            "INT2" => Value::from(row.try_get::<i16, _>(i).map_err(err)?),
            "INT4" => Value::from(row.try_get::<i32, _>(i).map_err(err)?),
            "INT8" => Value::from(row.try_get::<i64, _>(i).map_err(err)?),
            "FLOAT4" => Value::from(row.try_get::<f32, _>(i).map_err(err)?),
            "FLOAT8" => Value::from(row.try_get::<f64, _>(i).map_err(err)?),
            "BOOL" => Value::Bool(row.try_get::<bool, _>(i).map_err(err)?),
            "JSON" | "JSONB" => row.try_get::<Value, _>(i).map_err(err)?,
            "TEXT[]" | "VARCHAR[]" | "NAME[]" => {
                Value::from(row.try_get::<Vec<String>, _>(i).map_err(err)?)
            }
            "INT4[]" => Value::from(row.try_get::<Vec<i32>, _>(i).map_err(err)?),
            "INT8[]" => Value::from(row.try_get::<Vec<i64>, _>(i).map_err(err)?),
            "BOOL[]" => Value::from(row.try_get::<Vec<bool>, _>(i).map_err(err)?),
            other => return Err(unsupported(name, other)),
        };
        fields.insert(name.to_owned(), value);
    }
    Ok(fields)
}

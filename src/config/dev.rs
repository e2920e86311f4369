//! The embedded dev defaults (docs/configuration.md): `portcullis serve` with no `--config`.
//! Listeners on 127.0.0.1, an HS256 dev issuer whose secret lives in
//! `.portcullis-dev/secret` (created once, printed at start), a SQLite user
//! directory `.portcullis-dev/portcullis-dev.db` seeded with two demo users (a
//! USER and an ADMIN), a demo token for each, and the quick-start policy.

use super::{Config, Error};
use jsonwebtoken::{encode, EncodingKey, Header};
use std::fs;
use std::path::{Path, PathBuf};

/// The quick-start policy, embedded.
pub const POLICY: &str = include_str!("../../mesh/quickstart/policy.yaml");

/// The dev issuer's `iss`.
pub const DEV_ISSUER: &str = "portcullis-dev";

const CONFIG: &str = "\
server:
  grpc_listen: 127.0.0.1:9191
  http_listen: 127.0.0.1:8181
issuers:
  - name: dev
    kind: user
    issuer: portcullis-dev
    secret_file: secret
    algorithms: [HS256]
    leeway: 30s
    credentials: [{ header: authorization }, { cookie: __session }]
users:
  source: sqlite://portcullis-dev.db
  query: SELECT id, role, channel_id FROM users WHERE clerk_id = $1
  cache: { ttl: 5m, negative_ttl: 30s, max_entries: 100000 }
  on_unknown: deny
headers:
  strip_prefixes: [x-user-, x-service-, x-portcullis-]
  user: { x-user-id: user.id, x-user-role: user.role, x-user-channel-id: user.channel_id, x-user-clerk-id: token.sub }
";

/// The demo users: (clerk_id = token subject, id, role, channel_id).
pub const DEMO_USERS: [(&str, &str, &str, &str); 2] = [
    ("demo-user", "1", "USER", "channel-1"),
    ("demo-admin", "2", "ADMIN", "channel-2"),
];

/// A demo user and a token for it.
pub struct DemoToken {
    pub subject: &'static str,
    pub role: &'static str,
    pub token: String,
}

/// Everything `serve` prints and uses in dev mode.
pub struct DevSetup {
    pub config: Config,
    pub dir: PathBuf,
    pub secret: String,
    pub tokens: Vec<DemoToken>,
}

/// Builds the dev setup in `dir` (created if missing): reuses the secret found
/// there so tokens survive restarts, mints fresh 24 h demo tokens, and writes
/// them to `dir/tokens.env` for scripts.
pub fn setup(dir: &Path) -> Result<DevSetup, Error> {
    let io = |e: std::io::Error| Error::Read {
        file: dir.display().to_string(),
        reason: e.to_string(),
    };
    fs::create_dir_all(dir).map_err(io)?;
    let secret_path = dir.join("secret");
    let secret = match fs::read_to_string(&secret_path) {
        Ok(s) if s.trim().len() >= 32 => s.trim().to_owned(),
        _ => {
            let bytes: [u8; 32] = rand::random();
            let secret: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            write_private(&secret_path, &secret).map_err(io)?;
            secret
        }
    };
    seed_directory(&dir.join("portcullis-dev.db")).map_err(|e| Error::Read {
        file: dir.join("portcullis-dev.db").display().to_string(),
        reason: e,
    })?;
    let config = Config::parse("<embedded dev config>", CONFIG, dir, Some(POLICY))?;
    let now = crate::identity::token_cache::unix_now();
    let key = EncodingKey::from_secret(secret.as_bytes());
    let tokens: Vec<DemoToken> = DEMO_USERS
        .into_iter()
        .map(|(subject, _, role, _)| {
            let claims = serde_json::json!({
                "iss": DEV_ISSUER, "sub": subject, "role": role,
                "iat": now, "nbf": now, "exp": now + 24 * 3600,
            });
            let token = encode(&Header::default(), &claims, &key)
                .map_err(|e| Error::Invalid(vec![format!("cannot mint the demo token: {e}")]))?;
            Ok(DemoToken {
                subject,
                role,
                token,
            })
        })
        .collect::<Result<_, Error>>()?;
    let env: String = tokens
        .iter()
        .map(|t| format!("{}_TOKEN={}\n", t.role, t.token))
        .collect();
    write_private(&dir.join("tokens.env"), &env).map_err(io)?;
    Ok(DevSetup {
        config,
        dir: dir.to_owned(),
        secret,
        tokens,
    })
}

/// Creates the demo SQLite directory if it is missing (an existing one is kept,
/// with whatever the developer changed in it).
fn seed_directory(path: &Path) -> Result<(), String> {
    use sqlx::sqlite::SqliteConnectOptions;
    use sqlx::ConnectOptions;
    if path.exists() {
        return Ok(());
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(async {
        let mut db = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .connect()
            .await
            .map_err(|e| e.to_string())?;
        sqlx::query(
            "CREATE TABLE users (id TEXT PRIMARY KEY, clerk_id TEXT UNIQUE NOT NULL, role TEXT NOT NULL, channel_id TEXT)",
        )
        .execute(&mut db)
        .await
        .map_err(|e| e.to_string())?;
        for (clerk_id, id, role, channel) in DEMO_USERS {
            sqlx::query("INSERT INTO users (id, clerk_id, role, channel_id) VALUES ($1, $2, $3, $4)")
                .bind(id)
                .bind(clerk_id)
                .bind(role)
                .bind(channel)
                .execute(&mut db)
                .await
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    })
}

fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    options.mode(0o600);
    options.open(path)?.write_all(contents.as_bytes())
}

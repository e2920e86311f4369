//! The embedded dev defaults (SPEC §3): `portcullis serve` with no `--config`.
//! Listeners on 127.0.0.1, an HS256 dev issuer whose secret lives in
//! `.portcullis-dev/secret` (created once, printed at start), demo tokens for a
//! USER and an ADMIN, and the quick-start policy.

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
  source: claims
headers:
  strip_prefixes: [x-user-, x-service-, x-portcullis-]
  user: { x-user-id: user.id, x-user-role: user.role }
";

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
    let config = Config::parse("<embedded dev config>", CONFIG, dir, Some(POLICY))?;
    let now = crate::identity::token_cache::unix_now();
    let key = EncodingKey::from_secret(secret.as_bytes());
    let tokens: Vec<DemoToken> = [("demo-user", "USER"), ("demo-admin", "ADMIN")]
        .into_iter()
        .map(|(subject, role)| {
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

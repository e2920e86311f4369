//! The headers the upstream receives on allow (`headers:` of the config): which
//! client-sent ones are stripped, which context fields are set under which names.
//! Neutral types: `config` produces them, the answer, identity and mint read them.

/// What to put in the upstream request (`headers:`, docs/answers.md).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeadersConfig {
    /// Client-sent headers under these prefixes are always removed.
    pub strip_prefixes: Vec<String>,
    /// Header name → context field, set on requests with a user principal.
    pub user: Vec<(String, ContextField)>,
    /// Header name → caller field, set on requests with a service principal.
    pub service: Vec<(String, ServiceField)>,
    pub request_id: String,
    /// Also forward the context as a signed JWT, and accept it as the
    /// user context on east-west calls instead of `x-user-*` headers.
    pub internal_token: bool,
}

impl Default for HeadersConfig {
    /// The defaults: strip `x-user-`, `x-service-`, `x-portcullis-`; set
    /// `x-user-id` and `x-user-role`; keep or make `x-request-id`.
    fn default() -> Self {
        Self {
            strip_prefixes: ["x-user-", "x-service-", "x-portcullis-"]
                .map(String::from)
                .to_vec(),
            user: vec![
                ("x-user-id".into(), ContextField::User("id".into())),
                ("x-user-role".into(), ContextField::User("role".into())),
            ],
            service: vec![
                ("x-service-name".into(), ServiceField::Name),
                ("x-caller-spiffe-id".into(), ServiceField::SpiffeId),
            ],
            request_id: "x-request-id".into(),
            internal_token: false,
        }
    }
}

/// A value of the verified context, named in `headers.user` as `user.<field>` or
/// `token.<claim>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContextField {
    User(String),
    Token(String),
}

impl ContextField {
    pub fn parse(s: &str) -> Option<Self> {
        let (scope, name) = s.split_once('.')?;
        let valid = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        match scope {
            "user" if valid => Some(ContextField::User(name.to_owned())),
            "token" if valid => Some(ContextField::Token(name.to_owned())),
            _ => None,
        }
    }
}

/// A value of the caller's identity, named in `headers.service` as `service.<field>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServiceField {
    /// `service.name`: `NAME` of `/ns/NS/sa/NAME`.
    Name,
    /// `service.namespace`.
    Namespace,
    /// `service.spiffe_id`: the whole ID.
    SpiffeId,
}

impl ServiceField {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "service.name" => Some(ServiceField::Name),
            "service.namespace" => Some(ServiceField::Namespace),
            "service.spiffe_id" => Some(ServiceField::SpiffeId),
            _ => None,
        }
    }
}

//! The `x-forwarded-client-cert` header (XFCC) as Envoy writes it: elements
//! separated by `,`, each a `;`-separated list of `Key=Value` pairs, a value
//! double-quoted when it contains `,`, `;` or `=` (a `\"` inside quotes is a
//! literal quote). Keys: `By` (the URI SAN of the proxy that added the element),
//! `Hash` (SHA-256 of the client certificate, hex), `Cert` and `Chain` (URL-encoded
//! PEM), `Subject`, and `URI`/`DNS` (one pair per SAN, so they repeat).
//!
//! Parsing only: whether an XFCC header is believed at all is decided in
//! [`super::mtls`], by the hop that sent it. Pure, no I/O. A header that does not
//! parse is never half-believed: the whole header is an error.

/// One element: what one proxy said about the client certificate it saw.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct XfccElement {
    /// `By`: the URI SAN of the proxy that added this element.
    pub by: Option<String>,
    /// `Hash`: hex SHA-256 of the client certificate.
    pub hash: Option<String>,
    /// `Cert`: the client certificate, URL-encoded PEM.
    pub cert: Option<String>,
    /// `Chain`: the client certificate chain, URL-encoded PEM.
    pub chain: Option<String>,
    /// `Subject`: the client certificate's subject DN.
    pub subject: Option<String>,
    /// `URI`: the client certificate's URI SANs, in order.
    pub uris: Vec<String>,
    /// `DNS`: the client certificate's DNS SANs, in order.
    pub dns: Vec<String>,
}

/// Why an XFCC header does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum XfccError {
    /// A `"` that is never closed.
    #[error("x-forwarded-client-cert: unterminated quoted value")]
    Unterminated,
    /// A pair without `=`, or with an empty key.
    #[error("x-forwarded-client-cert: a pair is not Key=Value")]
    NotAPair,
    /// A key Envoy never writes.
    #[error("x-forwarded-client-cert: unknown key {0:?}")]
    UnknownKey(String),
    /// `By`, `Hash`, `Cert`, `Chain` or `Subject` twice in one element.
    #[error("x-forwarded-client-cert: {0} appears twice in one element")]
    Duplicate(&'static str),
    /// An element with no pair at all (`a,,b`).
    #[error("x-forwarded-client-cert: an element is empty")]
    EmptyElement,
    /// Characters after a closing quote, before the next `;` or `,`.
    #[error("x-forwarded-client-cert: text after a quoted value")]
    AfterQuote,
}

/// Parses a whole XFCC header: one element per proxy, oldest first.
pub fn parse(header: &str) -> Result<Vec<XfccElement>, XfccError> {
    let mut elements = Vec::new();
    let mut element = XfccElement::default();
    let mut pairs_in_element = 0usize;
    let mut rest = header;
    loop {
        let (key, value, separator, tail) = next_pair(rest)?;
        match (key.is_empty(), value) {
            (true, None) if separator != Some(';') => {}
            (false, Some(value)) => {
                add(&mut element, &key, value)?;
                pairs_in_element += 1;
            }
            _ => return Err(XfccError::NotAPair),
        }
        match separator {
            Some(';') => {}
            Some(_) | None => {
                if pairs_in_element == 0 {
                    return Err(XfccError::EmptyElement);
                }
                elements.push(std::mem::take(&mut element));
                pairs_in_element = 0;
                if separator.is_none() {
                    return Ok(elements);
                }
            }
        }
        rest = tail;
    }
}

/// One `Key=Value` as read: the key (trimmed), the value (unquoted) if there was a
/// `=`, the separator that ended it (`None` at the end), and the text after it.
type Pair<'a> = (String, Option<String>, Option<char>, &'a str);

/// Reads one `Key=Value` up to an unquoted `;` or `,`.
fn next_pair(text: &str) -> Result<Pair<'_>, XfccError> {
    let mut key = String::new();
    let mut value: Option<String> = None;
    let mut chars = text.char_indices();
    let mut quoted_done = false;
    while let Some((at, c)) = chars.next() {
        match c {
            ';' | ',' => {
                return Ok((key.trim().to_owned(), value, Some(c), &text[at + 1..]));
            }
            '=' if value.is_none() => value = Some(String::new()),
            '"' if value.as_ref().is_some_and(|v| v.trim().is_empty()) && !quoted_done => {
                let v = value.as_mut().expect("checked above");
                v.clear();
                loop {
                    match chars.next() {
                        None => return Err(XfccError::Unterminated),
                        Some((_, '\\')) => match chars.next() {
                            Some((_, escaped)) => v.push(escaped),
                            None => return Err(XfccError::Unterminated),
                        },
                        Some((_, '"')) => break,
                        Some((_, other)) => v.push(other),
                    }
                }
                quoted_done = true;
            }
            _ if quoted_done => {
                if !c.is_whitespace() {
                    return Err(XfccError::AfterQuote);
                }
            }
            _ => match value.as_mut() {
                Some(v) => v.push(c),
                None => key.push(c),
            },
        }
    }
    Ok((key.trim().to_owned(), value, None, ""))
}

fn add(element: &mut XfccElement, key: &str, value: String) -> Result<(), XfccError> {
    let once = |slot: &mut Option<String>, name: &'static str| {
        if slot.is_some() {
            return Err(XfccError::Duplicate(name));
        }
        *slot = Some(value.clone());
        Ok(())
    };
    match key.to_ascii_lowercase().as_str() {
        "by" => once(&mut element.by, "By"),
        "hash" => once(&mut element.hash, "Hash"),
        "cert" => once(&mut element.cert, "Cert"),
        "chain" => once(&mut element.chain, "Chain"),
        "subject" => once(&mut element.subject, "Subject"),
        "uri" => {
            element.uris.push(value);
            Ok(())
        }
        "dns" => {
            element.dns.push(value);
            Ok(())
        }
        _ => Err(XfccError::UnknownKey(key.to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn el(f: impl FnOnce(&mut XfccElement)) -> XfccElement {
        let mut e = XfccElement::default();
        f(&mut e);
        e
    }

    #[test]
    fn parses_what_envoy_writes() {
        let hash = "468ed33be74eee6556d90c0149c1309e9ba61d6425303443c0748a02dd8de688";
        let cases: Vec<(String, Vec<XfccElement>)> = vec![
            // Envoy's documentation example: By, Hash, a quoted Subject, URI.
            (
                format!(r#"By=http://frontend.lyft.com;Hash={hash};Subject="/C=US/ST=CA/L=San Francisco/OU=Lyft/CN=Test Client";URI=http://testclient.lyft.com"#),
                vec![el(|e| {
                    e.by = Some("http://frontend.lyft.com".into());
                    e.hash = Some(hash.into());
                    e.subject = Some("/C=US/ST=CA/L=San Francisco/OU=Lyft/CN=Test Client".into());
                    e.uris = vec!["http://testclient.lyft.com".into()];
                })],
            ),
            // Two elements (a proxy appended its own), several SANs of each type.
            (
                format!("By=spiffe://example.org/ns/istio-system/sa/gw;Hash={hash};URI=spiffe://example.org/ns/default/sa/videos;DNS=a.example;DNS=b.example,By=spiffe://example.org/ns/default/sa/channels;URI=spiffe://example.org/ns/istio-system/sa/gw"),
                vec![
                    el(|e| {
                        e.by = Some("spiffe://example.org/ns/istio-system/sa/gw".into());
                        e.hash = Some(hash.into());
                        e.uris = vec!["spiffe://example.org/ns/default/sa/videos".into()];
                        e.dns = vec!["a.example".into(), "b.example".into()];
                    }),
                    el(|e| {
                        e.by = Some("spiffe://example.org/ns/default/sa/channels".into());
                        e.uris = vec!["spiffe://example.org/ns/istio-system/sa/gw".into()];
                    }),
                ],
            ),
            // Quoted values with `,`, `;`, `=` and an escaped quote inside; case-
            // insensitive keys; only the URI SAN (SANITIZE_SET with uri: true).
            (
                r#"subject="CN=a,O=b;c=\"d\"";uri=spiffe://example.org/x, URI="spiffe://example.org/y""#.into(),
                vec![
                    el(|e| {
                        e.subject = Some(r#"CN=a,O=b;c="d""#.into());
                        e.uris = vec!["spiffe://example.org/x".into()];
                    }),
                    el(|e| e.uris = vec!["spiffe://example.org/y".into()]),
                ],
            ),
            // Cert and Chain are URL-encoded PEM, kept as they are.
            (
                "Cert=\"-----BEGIN%20CERTIFICATE-----%0AMIIB\";Chain=-----BEGIN%20CERTIFICATE-----".into(),
                vec![el(|e| {
                    e.cert = Some("-----BEGIN%20CERTIFICATE-----%0AMIIB".into());
                    e.chain = Some("-----BEGIN%20CERTIFICATE-----".into());
                })],
            ),
            // An empty value is a value.
            ("URI=".into(), vec![el(|e| e.uris = vec![String::new()])]),
        ];
        for (header, want) in cases {
            assert_eq!(parse(&header), Ok(want), "{header}");
        }
    }

    #[test]
    fn refuses_what_envoy_never_writes() {
        for (header, want) in [
            ("", XfccError::EmptyElement),
            ("URI=a,,URI=b", XfccError::EmptyElement),
            ("URI=a,", XfccError::EmptyElement),
            (r#"Subject="CN=a"#, XfccError::Unterminated),
            (r#"Subject="CN=a\"#, XfccError::Unterminated),
            ("URI", XfccError::NotAPair),
            ("=x", XfccError::NotAPair),
            ("URI=a;;DNS=b", XfccError::NotAPair),
            ("Foo=bar", XfccError::UnknownKey("Foo".into())),
            ("By=a;By=b", XfccError::Duplicate("By")),
            ("Hash=a;hash=b", XfccError::Duplicate("Hash")),
            (r#"Subject="a"b;URI=x"#, XfccError::AfterQuote),
        ] {
            assert_eq!(parse(header), Err(want), "{header:?}");
        }
    }
}

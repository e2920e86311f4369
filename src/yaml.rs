//! YAML helpers shared by the config and policy loaders: finding the line of a
//! key path, so that errors found after parsing still say `file:line`.
//!
//! serde's YAML parser reports positions for syntax and type errors but keeps no
//! spans on the parsed values; semantic errors (found later, all at once) carry a
//! key path instead, which [`line_of`] maps back to a line of block-style YAML.

/// One step of a key path: a mapping key or a sequence index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Key {
    Field(String),
    Index(usize),
}

impl Key {
    pub fn field(name: &str) -> Self {
        Key::Field(name.to_owned())
    }
}

/// Renders a key path as `issuers[1].jwks_uri`.
pub fn render(path: &[Key]) -> String {
    let mut out = String::new();
    for key in path {
        match key {
            Key::Field(name) if out.is_empty() => out.push_str(name),
            Key::Field(name) => {
                out.push('.');
                out.push_str(name);
            }
            Key::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

/// The key path of a key `serde_ignored` reports as unknown.
pub fn keys_of(path: &serde_ignored::Path) -> Vec<Key> {
    use serde_ignored::Path;
    match path {
        Path::Root => Vec::new(),
        Path::Seq { parent, index } => {
            let mut keys = keys_of(parent);
            keys.push(Key::Index(*index));
            keys
        }
        Path::Map { parent, key } => {
            let mut keys = keys_of(parent);
            keys.push(Key::Field(key.clone()));
            keys
        }
        // `Option`s and newtypes are not steps of the YAML.
        Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => keys_of(parent),
    }
}

/// The 1-based line where `path` is written, or the closest enclosing line found.
pub fn line_of(text: &str, path: &[Key]) -> Option<usize> {
    let lines: Vec<&str> = text.lines().collect();
    // The block we search in: [start, end) line indices, and its minimum indent.
    let (mut start, mut end, mut min_indent) = (0usize, lines.len(), 0usize);
    let mut found = None;
    for key in path {
        let hit = match key {
            Key::Field(name) => find_key(&lines[start..end], name, min_indent),
            Key::Index(i) => find_item(&lines[start..end], *i, min_indent),
        };
        let Some((offset, indent)) = hit else { break };
        let at = start + offset;
        found = Some(at + 1);
        // The value's block: following lines indented deeper than this key.
        let block_end = (at + 1..end)
            .find(|&j| {
                let l = lines[j];
                !is_blank(l) && indent_of(l) <= indent
            })
            .unwrap_or(end);
        start = match key {
            Key::Index(_) => at, // an item's first key sits on the `- ` line itself
            Key::Field(_) => at + 1,
        };
        end = block_end;
        min_indent = indent + 1;
    }
    found
}

fn is_blank(line: &str) -> bool {
    let t = line.trim_start();
    t.is_empty() || t.starts_with('#')
}

fn indent_of(line: &str) -> usize {
    line.len() - line.trim_start().len()
}

/// Finds `name:` at the shallowest indent >= min_indent; returns (offset, indent of
/// the key itself).
fn find_key(lines: &[&str], name: &str, min_indent: usize) -> Option<(usize, usize)> {
    let mut best: Option<(usize, usize)> = None;
    for (i, line) in lines.iter().enumerate() {
        if is_blank(line) {
            continue;
        }
        let mut rest = line.trim_start();
        let mut indent = indent_of(line);
        while let Some(after) = rest.strip_prefix("- ") {
            indent += 2 + (after.len() - after.trim_start().len());
            rest = after.trim_start();
        }
        if indent < min_indent {
            continue;
        }
        let key_matches = rest
            .strip_prefix(name)
            .is_some_and(|after| after.starts_with(':'))
            || rest
                .strip_prefix(&format!("\"{name}\""))
                .is_some_and(|after| after.starts_with(':'));
        if key_matches && best.is_none_or(|(_, best_indent)| indent < best_indent) {
            best = Some((i, indent));
        }
    }
    best
}

/// Finds the `index`-th `- ` item at the shallowest item indent >= min_indent.
fn find_item(lines: &[&str], index: usize, min_indent: usize) -> Option<(usize, usize)> {
    let item_indent = lines
        .iter()
        .filter(|l| !is_blank(l) && l.trim_start().starts_with('-'))
        .map(|l| indent_of(l))
        .filter(|&i| i + 1 >= min_indent)
        .min()?;
    lines
        .iter()
        .enumerate()
        .filter(|(_, l)| {
            !is_blank(l) && indent_of(l) == item_indent && l.trim_start().starts_with('-')
        })
        .nth(index)
        .map(|(i, _)| (i, item_indent))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "\
server:
  grpc_listen: 127.0.0.1:9191
issuers:
  - name: clerk
    kind: user
    jwks_uri: https://a/jwks.json
  - name: app
    kind: user
    # a comment
    secret_env: APP
    algorithms: [HS256]
headers:
  user: { x-user-id: user.id }
";

    fn path(keys: &[Key]) -> Option<usize> {
        line_of(DOC, keys)
    }

    #[test]
    fn finds_lines_of_key_paths() {
        use Key::*;
        assert_eq!(path(&[Key::field("server")]), Some(1));
        assert_eq!(
            path(&[Key::field("server"), Key::field("grpc_listen")]),
            Some(2)
        );
        assert_eq!(path(&[Key::field("issuers"), Index(0)]), Some(4));
        assert_eq!(path(&[Key::field("issuers"), Index(1)]), Some(7));
        assert_eq!(
            path(&[Key::field("issuers"), Index(1), Key::field("algorithms")]),
            Some(11)
        );
        assert_eq!(
            path(&[Key::field("issuers"), Index(0), Key::field("jwks_uri")]),
            Some(6)
        );
        assert_eq!(
            path(&[Key::field("issuers"), Index(0), Key::field("name")]),
            Some(4)
        );
        // Missing keys fall back to the closest enclosing line.
        assert_eq!(
            path(&[Key::field("issuers"), Index(1), Key::field("nope")]),
            Some(7)
        );
        assert_eq!(
            render(&[Key::field("issuers"), Index(1), Key::field("kind")]),
            "issuers[1].kind"
        );
    }
}

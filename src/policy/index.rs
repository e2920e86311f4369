//! The rule index: which rules can possibly match a request, found without
//! looking at the others. Rules whose every path starts with a literal segment
//! are filed under those literals; all others are always candidates. Candidates
//! come out in file order, so the reported allow rule does not depend on the index.

use super::{NormalizedPath, Rule};
use std::collections::HashMap;

#[derive(Debug, Default)]
pub struct RuleIndex {
    by_first_segment: HashMap<String, Vec<usize>>,
    always: Vec<usize>,
}

impl RuleIndex {
    pub fn build(rules: &[Rule]) -> Self {
        let mut index = RuleIndex::default();
        for (i, rule) in rules.iter().enumerate() {
            match first_literals(rule) {
                Some(literals) => {
                    for literal in literals {
                        let slot = index.by_first_segment.entry(literal).or_default();
                        if slot.last() != Some(&i) {
                            slot.push(i);
                        }
                    }
                }
                None => index.always.push(i),
            }
        }
        index
    }

    /// Indices of the rules that may match `path`, ascending.
    pub fn candidates<'a>(&'a self, path: &NormalizedPath) -> impl Iterator<Item = usize> + 'a {
        let filed: &[usize] = path
            .segments()
            .first()
            .and_then(|s| self.by_first_segment.get(s))
            .map_or(&[], Vec::as_slice);
        merge(filed, &self.always)
    }
}

/// The first literal segment of every path of every `to`, or `None` if any `to`
/// could match a path without one.
fn first_literals(rule: &Rule) -> Option<Vec<String>> {
    if rule.to.is_empty() {
        return None;
    }
    let mut literals = Vec::new();
    for target in &rule.to {
        if target.paths.is_empty() {
            return None;
        }
        for path in &target.paths {
            literals.push(path.first_literal()?.to_owned());
        }
    }
    Some(literals)
}

fn merge<'a>(a: &'a [usize], b: &'a [usize]) -> impl Iterator<Item = usize> + 'a {
    let (mut i, mut j) = (0, 0);
    std::iter::from_fn(move || {
        let next = match (a.get(i), b.get(j)) {
            (Some(&x), Some(&y)) if x <= y => {
                i += 1;
                x
            }
            (_, Some(&y)) => {
                j += 1;
                y
            }
            (Some(&x), None) => {
                i += 1;
                x
            }
            (None, None) => return None,
        };
        Some(next)
    })
}

#[cfg(test)]
mod tests {
    use super::merge;

    #[test]
    fn merges_in_order() {
        assert_eq!(
            merge(&[1, 4, 9], &[0, 5]).collect::<Vec<_>>(),
            vec![0, 1, 4, 5, 9]
        );
        assert_eq!(merge(&[], &[2]).collect::<Vec<_>>(), vec![2]);
        assert_eq!(merge(&[3], &[]).collect::<Vec<_>>(), vec![3]);
    }
}

//! Token roles: a name for every position of a prompt that means the same thing
//! across the pairs of a concept, so that pairs of different lengths aggregate.
//!
//! - `BOS`: the prepended beginning-of-sequence token.
//! - `end`: the final position, where the answer is read out (it wins over any other
//!   role the last token would have).
//! - `{span}.first`, `{span}.mid`, `{span}.last`: the tokens of a named span (a
//!   template's slot, a dataset's `subject`, or `diff` for the differing tokens of a
//!   free pair). A span of one token is `{span}.last` (the *last subject token* of
//!   Meng et al. 2022, where causal tracing finds facts recalled); two tokens are
//!   `.first` and `.last`; every token between is `.mid`.
//! - For Gaussian-noise causal tracing ([`after_span_roles`]): the tokens after the
//!   subject as ROME groups them, `after.first` (the first subsequent token) and
//!   `after.mid` (every further token before `end`).
//! - Any other token keeps its text, trimmed (`" is"` → `is`); a text seen earlier in
//!   the same prompt gets `#2`, `#3`, … so roles stay unique within a prompt.

/// One token of a prompt: its text and the byte range of the prompt it covers (BOS
/// covers nothing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenText {
    pub text: String,
    pub start: usize,
    pub end: usize,
}

/// A named byte range of a prompt (a template slot's fill, a subject).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Span {
    pub name: String,
    pub start: usize,
    pub end: usize,
}

pub const BOS: &str = "BOS";
pub const END: &str = "end";
/// The span name of a free pair's differing tokens.
pub const DIFF: &str = "diff";

/// The role of each token of a prompt whose named `spans` are byte ranges of the
/// prompt; `bos`: the first token is a prepended BOS.
pub fn roles_from_spans(tokens: &[TokenText], spans: &[Span], bos: bool) -> Vec<String> {
    let members = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| {
            if (bos && i == 0) || i + 1 == tokens.len() {
                return None; // BOS and `end` are never part of a span
            }
            spans
                .iter()
                .position(|s| t.start < s.end && t.end > s.start && t.end > t.start)
        })
        .collect::<Vec<_>>();
    let mut by_span: Vec<Vec<usize>> = vec![Vec::new(); spans.len()];
    for (i, member) in members.iter().enumerate() {
        if let Some(s) = member {
            by_span[*s].push(i);
        }
    }
    let mut named: Vec<Option<String>> = vec![None; tokens.len()];
    for (span, positions) in spans.iter().zip(&by_span) {
        for (k, position) in positions.iter().enumerate() {
            named[*position] = Some(format!("{}.{}", span.name, part(k, positions.len())));
        }
    }
    finish(tokens.iter().map(|t| t.text.as_str()), named, bos)
}

/// `first`, `mid` or `last` for token `k` of a span of `n` tokens.
fn part(k: usize, n: usize) -> &'static str {
    match k {
        _ if k + 1 == n => "last",
        0 => "first",
        _ => "mid",
    }
}

/// Roles of both prompts of a free pair from their alignment: the shared prefix and
/// suffix tokens by their text, the differing tokens in between as `diff.first`,
/// `diff.mid`, `diff.last`. Returns (clean roles, corrupted roles).
pub fn roles_from_diff(
    clean: (&[u32], &[String]),
    corrupted: (&[u32], &[String]),
    bos: bool,
) -> (Vec<String>, Vec<String>) {
    let (clean_ids, corrupted_ids) = (clean.0, corrupted.0);
    let shortest = clean_ids.len().min(corrupted_ids.len());
    let prefix = (0..shortest)
        .take_while(|i| clean_ids[*i] == corrupted_ids[*i])
        .count();
    let suffix = (0..shortest - prefix)
        .take_while(|k| {
            clean_ids[clean_ids.len() - 1 - k] == corrupted_ids[corrupted_ids.len() - 1 - k]
        })
        .count();
    let side = |(ids, texts): (&[u32], &[String])| {
        // The final token is `end`, never part of the differing span.
        let diff = prefix
            ..(ids.len() - suffix)
                .min(ids.len().saturating_sub(1))
                .max(prefix);
        let named = (0..ids.len())
            .map(|i| {
                diff.contains(&i).then(|| {
                    let part = part(i - diff.start, diff.len());
                    format!("{DIFF}.{part}")
                })
            })
            .collect();
        finish(texts.iter().map(String::as_str), named, bos)
    };
    (side(clean), side(corrupted))
}

/// Fills in BOS, `end` and the text roles around the `named` (span) roles.
fn finish<'a>(
    texts: impl Iterator<Item = &'a str>,
    named: Vec<Option<String>>,
    bos: bool,
) -> Vec<String> {
    let n = named.len();
    let mut seen: Vec<String> = Vec::new();
    texts
        .zip(named)
        .enumerate()
        .map(|(i, (text, named))| {
            if bos && i == 0 {
                return BOS.to_string();
            }
            if i + 1 == n {
                return END.to_string();
            }
            if let Some(role) = named {
                return role;
            }
            let word = match text.trim() {
                "" => format!("{text:?}"),
                trimmed => trimmed.to_string(),
            };
            let count = seen.iter().filter(|w| **w == word).count();
            seen.push(word.clone());
            match count {
                0 => word,
                _ => format!("{word}#{}", count + 1),
            }
        })
        .collect()
}

/// The span name of the tokens after the subject, in Gaussian-noise traces.
pub const AFTER: &str = "after";

/// `roles` with the tokens between the last token of span `span` and `end` renamed as
/// ROME's causal-tracing figures group them: `after.first` (the first subsequent
/// token) and `after.mid` (the further tokens). Facts phrased differently ("… is
/// located in the city of", "… was a composer from") then line up. Unchanged when the
/// span is absent.
pub fn after_span_roles(roles: &[String], span: &str) -> Vec<String> {
    let prefix = format!("{span}.");
    let Some(last) = roles.iter().rposition(|r| r.starts_with(&prefix)) else {
        return roles.to_vec();
    };
    (roles.iter().enumerate())
        .map(|(i, role)| match i {
            _ if i <= last || role == END => role.clone(),
            _ if i == last + 1 => format!("{AFTER}.first"),
            _ => format!("{AFTER}.mid"),
        })
        .collect()
}

/// The roles of several prompts in one prompt order: each role at the mean of its
/// relative positions (0 = first token, 1 = last) over the prompts it occurs in, ties
/// by first appearance. Pairs of different templates interleave sensibly: `BOS`
/// first, `end` last, a subject before the words that follow it.
pub fn order_roles<'a>(prompts: impl IntoIterator<Item = &'a [String]>) -> Vec<String> {
    let mut places: Vec<(String, f64, usize)> = Vec::new(); // role, sum, count
    for roles in prompts {
        let last = roles.len().saturating_sub(1).max(1) as f64;
        for (i, role) in roles.iter().enumerate() {
            let place = i as f64 / last;
            match places.iter_mut().find(|(r, _, _)| r == role) {
                Some((_, sum, count)) => {
                    *sum += place;
                    *count += 1;
                }
                None => places.push((role.clone(), place, 1)),
            }
        }
    }
    let mut ordered: Vec<(usize, String, f64)> = (places.into_iter().enumerate())
        .map(|(first, (role, sum, count))| (first, role, sum / count as f64))
        .collect();
    ordered.sort_by(|a, b| a.2.total_cmp(&b.2).then(a.0.cmp(&b.0)));
    ordered.into_iter().map(|(_, role, _)| role).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_after_the_subject_are_grouped_as_rome() {
        let roles = |list: &[&str]| list.iter().map(|r| r.to_string()).collect::<Vec<_>>();
        let traced = after_span_roles(
            &roles(&[
                "BOS",
                "subject.first",
                "subject.last",
                "is",
                "located",
                "in",
                "end",
            ]),
            "subject",
        );
        assert_eq!(
            traced,
            roles(&[
                "BOS",
                "subject.first",
                "subject.last",
                "after.first",
                "after.mid",
                "after.mid",
                "end"
            ])
        );
        // The subject last but one: only `end` follows. No subject: unchanged.
        let short = roles(&["BOS", "The", "subject.last", "end"]);
        assert_eq!(after_span_roles(&short, "subject"), short);
        let none = roles(&["BOS", "The", "end"]);
        assert_eq!(after_span_roles(&none, "subject"), none);
    }

    /// Tokens of `pieces` laid end to end, BOS first.
    fn tokens(pieces: &[&str]) -> Vec<TokenText> {
        let mut at = 0;
        let mut out = vec![TokenText {
            text: "<bos>".into(),
            start: 0,
            end: 0,
        }];
        for piece in pieces {
            out.push(TokenText {
                text: piece.to_string(),
                start: at,
                end: at + piece.len(),
            });
            at += piece.len();
        }
        out
    }

    fn span(name: &str, start: usize, end: usize) -> Span {
        Span {
            name: name.into(),
            start,
            end,
        }
    }

    #[test]
    fn template_slot_of_several_tokens() {
        // "The Eiffel Tower is in": the slot `subject` is "Eiffel Tower", bytes 4..16;
        // its first token " Eiffel" starts with the space before the slot.
        let t = tokens(&["The", " Eiff", "el", " Tower", " is", " in"]);
        let roles = roles_from_spans(&t, &[span("subject", 4, 16)], true);
        assert_eq!(
            roles,
            [
                "BOS",
                "The",
                "subject.first",
                "subject.mid",
                "subject.last",
                "is",
                "end"
            ]
        );
    }

    #[test]
    fn one_token_slot_is_last_and_end_wins() {
        let t = tokens(&["The", " Colosseum", " is", " in"]);
        let roles = roles_from_spans(&t, &[span("subject", 4, 13)], true);
        assert_eq!(roles, ["BOS", "The", "subject.last", "is", "end"]);
        // A slot at the very end keeps `end` there.
        let t = tokens(&["I", " like", " Rome"]);
        let roles = roles_from_spans(&t, &[span("x", 7, 11)], true);
        assert_eq!(roles, ["BOS", "I", "like", "end"]);
    }

    #[test]
    fn two_slots_and_repeated_words() {
        // "When Mary and John went to the store, the" with slots name1, name2.
        let t = tokens(&[
            "When", " Mary", " and", " John", " went", " the", " store", ",", " the", " end",
        ]);
        let roles = roles_from_spans(&t, &[span("name1", 5, 9), span("name2", 14, 18)], true);
        assert_eq!(
            roles,
            [
                "BOS",
                "When",
                "name1.last",
                "and",
                "name2.last",
                "went",
                "the",
                "store",
                ",",
                "the#2",
                "end"
            ]
        );
    }

    #[test]
    fn free_pair_prefix_diff_suffix() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        // clean: BOS The Eiffel Tower is in ; corrupted: BOS The Colosseum is in
        let clean = (
            [0, 1, 2, 3, 4, 5],
            s(&["<b>", "The", " Eiffel", " Tower", " is", " in"]),
        );
        let corrupted = (
            [0, 1, 9, 4, 5],
            s(&["<b>", "The", " Colosseum", " is", " in"]),
        );
        let (c, k) = roles_from_diff((&clean.0, &clean.1), (&corrupted.0, &corrupted.1), true);
        assert_eq!(c, ["BOS", "The", "diff.first", "diff.last", "is", "end"]);
        assert_eq!(k, ["BOS", "The", "diff.last", "is", "end"]);
        // Only the last token differs: it is `end`, the rest keep their text.
        let (c, _) = roles_from_diff(
            (&[0, 1, 2], &s(&["<b>", "a", "b"])),
            (&[0, 1, 3], &s(&["<b>", "a", "c"])),
            true,
        );
        assert_eq!(c, ["BOS", "a", "end"]);
    }

    #[test]
    fn roles_ordered_across_templates() {
        let a: Vec<String> = [
            "BOS",
            "The",
            "subject.first",
            "subject.last",
            "is",
            "in",
            "end",
        ]
        .map(String::from)
        .to_vec();
        let b: Vec<String> = ["BOS", "subject.last", "is", "located", "in", "end"]
            .map(String::from)
            .to_vec();
        let order = order_roles([a.as_slice(), b.as_slice()]);
        assert_eq!(order.first().map(String::as_str), Some("BOS"));
        assert_eq!(order.last().map(String::as_str), Some("end"));
        let at = |r: &str| order.iter().position(|o| o == r).unwrap();
        assert!(at("subject.first") < at("subject.last"));
        assert!(at("subject.last") < at("is"));
        assert!(at("is") < at("in"));
    }
}

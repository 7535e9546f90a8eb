//! `[[templates]]`: a text with named slots and a list of fills, each giving the
//! clean and corrupted value of every slot and the two answers. Every text × fill is
//! one pair; both prompts of a pair come from the same text, so a slot's tokens sit
//! where the template puts them and get the roles `{slot}.first` … `{slot}.last`.
//!
//! ```toml
//! [[templates]]
//! concept = "landmarks"
//! text = ["The {subject} is in", "{subject} is located in the city of"]
//! fills = [
//!   { subject = ["Colosseum", "Eiffel Tower"], correct = " Rome", incorrect = " Paris" },
//! ]
//! ```

use std::collections::BTreeMap;

use actpatch_concepts::roles::Span;
use serde::Deserialize;

use crate::experiment::{PairSpec, SlotSpans};

/// One `[[templates]]` entry.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TemplateSpec {
    /// Prefix of the pair names (default: the concept).
    pub name: Option<String>,
    pub concept: String,
    /// One text or several; each `{slot}` is filled from the fills.
    pub text: OneOrMany,
    pub fills: Vec<Fill>,
}

/// A string or a list of strings.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(
    untagged,
    expecting = "a template text such as \"The {subject} is in\", or a list of them"
)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    pub fn items(&self) -> &[String] {
        match self {
            OneOrMany::One(one) => std::slice::from_ref(one),
            OneOrMany::Many(many) => many,
        }
    }
}

/// One fill: the answers, and per slot a value for both prompts or `[clean, corrupted]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct Fill {
    pub name: Option<String>,
    pub correct: String,
    pub incorrect: String,
    #[serde(flatten)]
    pub slots: BTreeMap<String, SlotValue>,
}

/// A slot's value in a fill.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(
    untagged,
    expecting = "a slot value: a string (the same in both prompts) or [clean, corrupted]"
)]
pub enum SlotValue {
    Same(String),
    Pair([String; 2]),
}

impl SlotValue {
    fn side(&self, corrupted: bool) -> &str {
        match self {
            SlotValue::Same(v) => v,
            SlotValue::Pair([clean, other]) => match corrupted {
                false => clean,
                true => other,
            },
        }
    }
}

/// A template text cut at its slots.
#[derive(Debug, Clone, PartialEq)]
enum Piece {
    Literal(String),
    Slot(String),
}

/// Splits `text` into literals and `{slot}`s; `{{` and `}}` are literal braces.
fn pieces(text: &str) -> Result<Vec<Piece>, String> {
    let mut out = Vec::new();
    let mut literal = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '{' if chars.peek() == Some(&'{') => {
                chars.next();
                literal.push('{');
            }
            '}' if chars.peek() == Some(&'}') => {
                chars.next();
                literal.push('}');
            }
            '{' => {
                let name: String = chars.by_ref().take_while(|c| *c != '}').collect();
                let valid =
                    !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
                if !valid {
                    return Err(format!("template {text:?}: `{{{name}` is not a slot name: slots are letters, digits and `_` in braces, e.g. {{subject}}; write a literal brace as {{{{ or }}}}"));
                }
                out.push(Piece::Literal(std::mem::take(&mut literal)));
                out.push(Piece::Slot(name));
            }
            '}' => {
                return Err(format!(
                    "template {text:?}: a lone `}}`: write a literal brace as }}}}"
                ))
            }
            c => literal.push(c),
        }
    }
    out.push(Piece::Literal(literal));
    Ok(out)
}

/// The prompt `pieces` make with `fill`, and where each slot's value sits in it.
fn fill_in(pieces: &[Piece], fill: &Fill, corrupted: bool) -> (String, Vec<Span>) {
    let mut prompt = String::new();
    let mut spans = Vec::new();
    for piece in pieces {
        match piece {
            Piece::Literal(text) => prompt.push_str(text),
            Piece::Slot(name) => {
                let value = fill
                    .slots
                    .get(name)
                    .map(|v| v.side(corrupted))
                    .unwrap_or("");
                let start = prompt.len();
                prompt.push_str(value);
                spans.push(Span {
                    name: name.clone(),
                    start,
                    end: prompt.len(),
                });
            }
        }
    }
    (prompt, spans)
}

impl TemplateSpec {
    /// Every text × fill as a pair, in order (texts outer); an error names the
    /// template, the fill and what is wrong.
    pub fn pairs(&self, index: usize) -> Result<Vec<PairSpec>, String> {
        let label = format!("[[templates]] #{} ({})", index + 1, self.concept);
        if self.fills.is_empty() {
            return Err(format!("{label}: `fills` is empty: give at least one fill, e.g. {{ subject = [\"Colosseum\", \"Eiffel Tower\"], correct = \" Rome\", incorrect = \" Paris\" }}"));
        }
        let prefix = self.name.clone().unwrap_or_else(|| self.concept.clone());
        let mut pairs = Vec::new();
        for (t, text) in self.text.items().iter().enumerate() {
            let pieces = pieces(text).map_err(|e| format!("{label}: {e}"))?;
            let slots: Vec<&String> = (pieces.iter())
                .filter_map(|p| match p {
                    Piece::Slot(name) => Some(name),
                    Piece::Literal(_) => None,
                })
                .collect();
            if slots.is_empty() {
                return Err(format!("{label}: template {text:?} has no slot: mark the words that change in braces, e.g. \"The {{subject}} is in\""));
            }
            for (f, fill) in self.fills.iter().enumerate() {
                let fill_label = format!("{label}, fill #{}", f + 1);
                check_fill(fill, &slots, &fill_label)?;
                let (clean, clean_spans) = fill_in(&pieces, fill, false);
                let (corrupted, corrupted_spans) = fill_in(&pieces, fill, true);
                let stem = fill.name.clone().unwrap_or_else(|| format!("{}", f + 1));
                pairs.push(PairSpec {
                    name: Some(format!("{prefix}-t{}-{stem}", t + 1)),
                    concept: self.concept.clone(),
                    clean,
                    corrupted,
                    correct: fill.correct.clone(),
                    incorrect: fill.incorrect.clone(),
                    slots: Some(SlotSpans {
                        clean: clean_spans,
                        corrupted: corrupted_spans,
                    }),
                    group: Some(text.clone()),
                    source: Some(fill_label),
                    ..PairSpec::default()
                });
            }
        }
        Ok(pairs)
    }
}

/// Every slot of the text filled, nothing filled that the text lacks.
fn check_fill(fill: &Fill, slots: &[&String], label: &str) -> Result<(), String> {
    if let Some(missing) = slots.iter().find(|s| !fill.slots.contains_key(s.as_str())) {
        return Err(format!(
            "{label}: no value for slot `{missing}`: add {missing} = [\"clean value\", \"corrupted value\"]"
        ));
    }
    if let Some(extra) = fill.slots.keys().find(|k| !slots.iter().any(|s| s == k)) {
        let names: Vec<&str> = slots.iter().map(|s| s.as_str()).collect();
        return Err(format!(
            "{label}: `{extra}` is not a slot of this template (its slots: {}); a fill holds the slots plus `correct`, `incorrect` and an optional `name`",
            names.join(", ")
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template(text: &str) -> TemplateSpec {
        let fill = Fill {
            name: None,
            correct: " Rome".into(),
            incorrect: " Paris".into(),
            slots: BTreeMap::from([(
                "subject".to_string(),
                SlotValue::Pair(["Colosseum".into(), "Eiffel Tower".into()]),
            )]),
        };
        TemplateSpec {
            name: None,
            concept: "landmarks".into(),
            text: OneOrMany::One(text.into()),
            fills: vec![fill],
        }
    }

    #[test]
    fn fills_and_spans() {
        let pairs = template("The {subject} is in").pairs(0).unwrap();
        let pair = &pairs[0];
        assert_eq!(pair.clean, "The Colosseum is in");
        assert_eq!(pair.corrupted, "The Eiffel Tower is in");
        assert_eq!(pair.name.as_deref(), Some("landmarks-t1-1"));
        let slots = pair.slots.as_ref().unwrap();
        assert_eq!((slots.clean[0].start, slots.clean[0].end), (4, 13));
        assert_eq!(
            &pair.corrupted[slots.corrupted[0].start..slots.corrupted[0].end],
            "Eiffel Tower"
        );
    }

    #[test]
    fn braces_and_errors() {
        let pairs = template("{{x}} {subject}").pairs(0).unwrap();
        assert_eq!(pairs[0].clean, "{x} Colosseum");
        assert!(template("The {sub ject} is")
            .pairs(0)
            .unwrap_err()
            .contains("not a slot name"));
        assert!(template("The {place} is")
            .pairs(0)
            .unwrap_err()
            .contains("no value for slot `place`"));
        assert!(template("no slot")
            .pairs(0)
            .unwrap_err()
            .contains("has no slot"));
    }
}

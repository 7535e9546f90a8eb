//! The token roles of a pair's two prompts (see [`actpatch_concepts::roles`]): from
//! its template's slots, from its `subject` span, or from where the prompts differ.

use actpatch_concepts::roles::{roles_from_diff, roles_from_spans, Span, TokenText};
use actpatch_model::{HookedTransformer, ModelError};

use crate::experiment::PairSpec;

/// One prompt: its text, token ids and token texts.
pub struct Prompt<'a> {
    pub text: &'a str,
    pub tokens: &'a [u32],
    pub str_tokens: &'a [String],
}

/// The roles of the clean and the corrupted prompt of `spec`.
pub fn pair_roles(
    model: &HookedTransformer,
    spec: &PairSpec,
    clean: Prompt,
    corrupted: Prompt,
    bos: bool,
) -> Result<(Vec<String>, Vec<String>), ModelError> {
    let bos = bos && model.tokenizer().bos_id().is_some();
    let of_spans = |prompt: &Prompt, spans: &[Span]| -> Result<Vec<String>, ModelError> {
        let tokens = token_texts(model, prompt, bos)?;
        Ok(roles_from_spans(&tokens, spans, bos))
    };
    if let Some(slots) = &spec.slots {
        return Ok((
            of_spans(&clean, &slots.clean)?,
            of_spans(&corrupted, &slots.corrupted)?,
        ));
    }
    if let Some(subject) = spec.subject.as_deref().and_then(|s| span_of(clean.text, s)) {
        let clean_roles = of_spans(&clean, &[subject])?;
        let corrupted_span = spec.subject_corrupted.as_deref();
        return match corrupted_span.and_then(|s| span_of(corrupted.text, s)) {
            Some(span) => Ok((clean_roles, of_spans(&corrupted, &[span])?)),
            // The subject at the same positions: the same roles.
            None if clean.tokens.len() == corrupted.tokens.len() => {
                Ok((clean_roles.clone(), clean_roles))
            }
            None => Ok(diff_roles(&clean, &corrupted, bos)),
        };
    }
    Ok(diff_roles(&clean, &corrupted, bos))
}

fn diff_roles(clean: &Prompt, corrupted: &Prompt, bos: bool) -> (Vec<String>, Vec<String>) {
    roles_from_diff(
        (clean.tokens, clean.str_tokens),
        (corrupted.tokens, corrupted.str_tokens),
        bos,
    )
}

/// The first occurrence of `part` in `text`, as the span `subject`.
fn span_of(text: &str, part: &str) -> Option<Span> {
    let start = text.find(part).filter(|_| !part.is_empty())?;
    Some(Span {
        name: "subject".into(),
        start,
        end: start + part.len(),
    })
}

fn token_texts(
    model: &HookedTransformer,
    prompt: &Prompt,
    bos: bool,
) -> Result<Vec<TokenText>, ModelError> {
    let spans = model.token_byte_spans(prompt.text, bos)?;
    Ok((prompt.str_tokens.iter().zip(spans))
        .map(|(text, (start, end))| TokenText {
            text: text.clone(),
            start,
            end,
        })
        .collect())
}

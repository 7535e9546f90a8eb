//! Partial passes of several spans at once (see [`crate::partial`]): the rows of
//! every span one after another as one row, so that everything but attention runs as
//! one matrix product for all of them, and attention per span
//! ([`crate::attention::Frame::spans`]).

use actpatch_hooks::Hooks;
use candle_core::Tensor;

use crate::attention::{Frame, FrameSpan, KvPrefix};
use crate::{HookedTransformer, Result, Span};

impl HookedTransformer {
    /// Block `layer` on several spans at once: each part's rows `[rows, len, d_model]`
    /// hold the positions of its span → the same shape, the numbers
    /// [`HookedTransformer::run_block`] gives them. The parts run as one pass (one
    /// matrix product for all their positions, attention per span), in which hook
    /// points see the parts one after another as one row: `[1, Σ rows · len, …]`
    /// (attention scores and patterns cannot be hooked).
    pub fn run_block_spans(
        &self,
        layer: usize,
        parts: Vec<(Tensor, &Span)>,
        hooks: &mut Hooks,
    ) -> Result<Vec<Tensor>> {
        for (rows, span) in &parts {
            self.check_rows(layer, rows, span)?;
        }
        let mut frames = Vec::with_capacity(parts.len());
        for (rows, span) in &parts {
            let frame_span = FrameSpan {
                rows: rows.dim(0)?,
                start: span.start,
                len: span.len,
                prefix: span.base.prefix(layer, span.start)?,
            };
            frames.push((frame_span, &span.frame));
        }
        let frame = Frame::spans(frames)?;
        let rows: Vec<Tensor> = parts.into_iter().map(|(rows, _)| rows).collect();
        let out = self.arch.block_forward(
            layer,
            flatten(&rows)?, // [1, Σ rows · len, d_model]
            &frame,
            None,
            hooks,
        )?;
        unflatten(&out, &rows)
    }

    /// [`HookedTransformer::run_block_final`] on several spans at once, no hooks: each
    /// part's rows `[rows, len, d_model]` → `[rows, 1, d_model]`, as
    /// [`HookedTransformer::run_block_spans`] runs them.
    pub fn run_block_final_spans(
        &self,
        layer: usize,
        parts: Vec<(Tensor, &Span)>,
    ) -> Result<Vec<Tensor>> {
        for (rows, span) in &parts {
            self.check_rows(layer, rows, span)?;
        }
        let mut computed = self.earlier_keys_values(layer, &parts)?.into_iter();
        let mut last = Vec::with_capacity(parts.len());
        let mut last_frames = Vec::with_capacity(parts.len());
        let mut prefixes = Vec::with_capacity(parts.len());
        for (rows, span) in &parts {
            last.push(rows.narrow(1, span.len - 1, 1)?);
            last_frames.push(
                self.arch
                    .frame(span.start + span.len - 1, 1, &self.device)?,
            );
            let cached = span.base.prefix(layer, span.start)?;
            prefixes.push(match (computed.next().flatten(), cached) {
                (None, cached) => cached,
                (Some((k, v)), Some(cached)) => Some(cached.then(&k, &v)),
                (Some((k, v)), None) => Some(KvPrefix::new(k, v)),
            });
        }
        let spans = (parts.iter().zip(&last_frames).zip(prefixes))
            .map(|(((rows, span), frame), prefix)| {
                let start = span.start + span.len - 1;
                let rows = rows.dim(0)?;
                Ok((
                    FrameSpan {
                        rows,
                        start,
                        len: 1,
                        prefix,
                    },
                    frame,
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        let frame = Frame::spans(spans)?;
        let out =
            self.arch
                .block_forward(layer, flatten(&last)?, &frame, None, &mut Hooks::none())?;
        unflatten(&out, &last)
    }

    /// For each part, block `layer`'s keys and values at every position of its span but
    /// the last, in one pass (`[rows, len − 1, kv_head, d_head]` each; `None` for a
    /// span of one position).
    fn earlier_keys_values(
        &self,
        layer: usize,
        parts: &[(Tensor, &Span)],
    ) -> Result<Vec<Option<(Tensor, Tensor)>>> {
        let longer: Vec<&(Tensor, &Span)> = parts.iter().filter(|(_, s)| s.len > 1).collect();
        if longer.is_empty() {
            return Ok(parts.iter().map(|_| None).collect());
        }
        let mut earlier = Vec::with_capacity(longer.len());
        let mut frames = Vec::with_capacity(longer.len());
        for (rows, span) in &longer {
            earlier.push(rows.narrow(1, 0, span.len - 1)?);
            frames.push(self.arch.frame(span.start, span.len - 1, &self.device)?);
        }
        let spans = (longer.iter().zip(&frames))
            .map(|((rows, span), frame)| {
                let (start, len) = (span.start, span.len - 1);
                let rows = rows.dim(0)?;
                Ok((
                    FrameSpan {
                        rows,
                        start,
                        len,
                        prefix: None,
                    },
                    frame,
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        let frame = Frame::spans(spans)?;
        let (k, v) = (self.arch).block_keys_values(layer, &flatten(&earlier)?, &frame)?; // [1, Σ rows · (len − 1), kv_head, d_head]
        let mut computed = unflatten(&k, &earlier)?
            .into_iter()
            .zip(unflatten(&v, &earlier)?);
        Ok((parts.iter())
            .map(|(_, span)| match span.len > 1 {
                true => computed.next(),
                false => None,
            })
            .collect())
    }
}

/// Parts `[rows, len, width…]` one after another as one row: `[1, Σ rows · len, width…]`.
fn flatten(parts: &[Tensor]) -> Result<Tensor> {
    let flat = (parts.iter())
        .map(|p| {
            let mut shape = p.dims()[1..].to_vec();
            shape[0] *= p.dim(0)?;
            Ok(p.reshape(shape)?)
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Tensor::cat(&flat, 0)?.unsqueeze(0)?)
}

/// `flat` `[1, Σ rows · len, width…]` cut back into the shapes of `parts`' rows and
/// positions: `[rows, len, width…]` each (the trailing axes are `flat`'s).
fn unflatten(flat: &Tensor, parts: &[Tensor]) -> Result<Vec<Tensor>> {
    let flat = flat.squeeze(0)?;
    let mut offset = 0;
    let mut out = Vec::with_capacity(parts.len());
    for part in parts {
        let (rows, len) = (part.dim(0)?, part.dim(1)?);
        let mut shape = vec![rows, len];
        shape.extend_from_slice(&flat.dims()[1..]);
        out.push(flat.narrow(0, offset, rows * len)?.reshape(shape)?);
        offset += rows * len;
    }
    Ok(out)
}

//! Gaussian-noise corruption and causal tracing (Meng et al. 2022, ROME, §2.1): for a
//! prompt with no natural counterfactual, the corrupted run adds noise to the input
//! embeddings (`hook_embed`) of the subject's tokens, and each cell restores the clean
//! activation of one (kind, layer, position) in the noised run.
//!
//! - The noise is independent N(0, ν²) per entry, ν = `noise_multiplier` (3, as ROME)
//!   × the standard deviation of the entries of the token embedding matrix `W_E`
//!   ([`embedding_noise_scale`]).
//! - `samples` draws (default 10) from ChaCha8 seeded with `seed`, by Box–Muller;
//!   the same draws for the corrupted baseline and every cell.
//! - The metric is the probability of the clean answer, averaged over the draws, and
//!   normalized as everywhere else: (p − p_corrupted) / (p_clean − p_corrupted), so the
//!   clean run is 1 and the noised run 0.
//! - `window` restores that many consecutive layers centred on the cell's layer,
//!   layers `l − ⌊w/2⌋ .. l + ⌈w/2⌉` clipped to the model (ROME uses 10 for MLP and
//!   attention); 1 restores the cell's layer only.

use std::ops::Range;

use actpatch_hooks::{ActivationCache, CacheFilter, Cell, HookPoint, Patch, PatchValue};
use actpatch_model::{HookedTransformer, Readout};
use candle_core::{DType, Tensor, D};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::{PatchKind, Result};

/// How the noise is drawn and cells restored.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GaussianSpec {
    pub samples: usize,
    pub seed: u64,
    /// ν = `noise_multiplier` × std(W_E).
    pub noise_multiplier: f64,
    pub window: usize,
}

impl Default for GaussianSpec {
    fn default() -> Self {
        GaussianSpec {
            samples: 10,
            seed: 0,
            noise_multiplier: 3.0,
            window: 1,
        }
    }
}

/// The standard deviation of the entries of the token embedding matrix (population,
/// over all `d_vocab × d_model` entries), as the rows enter the residual stream
/// (times [`HookedTransformer::embedding_scale`], √d_model for Gemma).
pub fn embedding_std(model: &HookedTransformer) -> Result<f64> {
    let w_e = model.token_embeddings().to_dtype(DType::F64)?; // [d_vocab, d_model]
    let n = w_e.elem_count() as f64;
    let mean = w_e.sum_all()?.to_scalar::<f64>()? / n;
    let var = w_e
        .affine(1.0, -mean)?
        .sqr()?
        .sum_all()?
        .to_scalar::<f64>()?
        / n;
    Ok(var.sqrt() * model.embedding_scale())
}

/// ν: `spec.noise_multiplier` × [`embedding_std`].
pub fn embedding_noise_scale(model: &HookedTransformer, spec: &GaussianSpec) -> Result<f64> {
    Ok(spec.noise_multiplier * embedding_std(model)?)
}

/// One restored cell: its mean probability of the answer and the normalized value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TraceCell {
    pub kind: PatchKind,
    pub layer: usize,
    pub position: usize,
    pub prob: f64,
    pub normalized: f64,
}

/// A prompt with its subject noised: the clean run's activations, the noised
/// embeddings of every draw, and both baselines.
pub struct NoisedPrompt {
    pub tokens: Vec<u32>,
    pub subject: Range<usize>,
    pub answer: u32,
    pub spec: GaussianSpec,
    /// ν, the noise's standard deviation.
    pub scale: f64,
    /// p(answer) on the clean run.
    pub p_clean: f64,
    /// p(answer) on the noised run, mean over the draws.
    pub p_corrupted: f64,
    /// The clean embeddings plus each draw's noise: `[samples, pos, d_model]`.
    noised_embed: Tensor,
    clean: ActivationCache,
}

impl NoisedPrompt {
    /// Runs the clean prompt (caching the sites of `kinds`) and the noised one.
    pub fn new(
        model: &HookedTransformer,
        tokens: &[u32],
        subject: Range<usize>,
        answer: u32,
        kinds: &[PatchKind],
        spec: GaussianSpec,
    ) -> Result<Self> {
        let n_layers = model.dims().n_layers;
        let mut points = vec![HookPoint::Embed];
        for kind in kinds {
            points.extend((0..n_layers).map(|l| HookPoint::block(l, kind.site())));
        }
        let (logits, clean) =
            model.run_with_cache(&[tokens.to_vec()], CacheFilter::only(points))?;
        let n_pos = tokens.len();
        let last = logits.narrow(1, n_pos - 1, 1)?.squeeze(1)?; // [1, d_vocab]
        let p_clean = answer_probs(&last, answer)?[0];
        let scale = embedding_noise_scale(model, &spec)?;
        let embed = clean.get(HookPoint::Embed)?; // [1, pos, d_model]
        let noise = draw_noise(
            &spec,
            scale,
            n_pos,
            model.dims().d_model,
            &subject,
            embed.device(),
        )?;
        let noised_embed = noise.broadcast_add(&embed.to_dtype(noise.dtype())?)?;
        let mut prompt = NoisedPrompt {
            tokens: tokens.to_vec(),
            subject,
            answer,
            spec,
            scale,
            p_clean,
            p_corrupted: 0.0,
            noised_embed,
            clean,
        };
        prompt.p_corrupted = prompt.mean_prob(model, &[])?[0];
        Ok(prompt)
    }

    /// The layers a cell at `layer` restores.
    pub fn window(&self, layer: usize, n_layers: usize) -> Range<usize> {
        let w = self.spec.window.max(1);
        layer.saturating_sub(w / 2)..(layer + w.div_ceil(2)).min(n_layers)
    }

    /// Restores each of `cells` (kind, layer, position), `max_cells` per forward pass.
    pub fn trace(
        &self,
        model: &HookedTransformer,
        cells: &[(PatchKind, usize, usize)],
        max_cells: usize,
    ) -> Result<Vec<TraceCell>> {
        let gap = self.p_clean - self.p_corrupted;
        let mut out = Vec::with_capacity(cells.len());
        for chunk in cells.chunks(max_cells.max(1)) {
            let probs = self.mean_prob(model, chunk)?;
            out.extend(
                chunk
                    .iter()
                    .zip(probs)
                    .map(|((kind, layer, position), prob)| TraceCell {
                        kind: *kind,
                        layer: *layer,
                        position: *position,
                        prob,
                        normalized: (prob - self.p_corrupted) / gap,
                    }),
            );
        }
        Ok(out)
    }

    /// Mean p(answer) over the draws with each of `cells` restored (one value per cell;
    /// no cell: the noised run itself).
    fn mean_prob(
        &self,
        model: &HookedTransformer,
        cells: &[(PatchKind, usize, usize)],
    ) -> Result<Vec<f64>> {
        let samples = self.spec.samples.max(1);
        let n_cells = cells.len().max(1);
        let rows = vec![self.tokens.clone(); samples * n_cells];
        // Row r = cell r / samples, draw r % samples.
        let embed = Tensor::cat(&vec![self.noised_embed.clone(); n_cells], 0)?;
        let mut patches = vec![Patch::new(HookPoint::Embed, PatchValue::Replace(embed))];
        let n_layers = model.dims().n_layers;
        for (c, (kind, layer, position)) in cells.iter().enumerate() {
            for l in self.window(*layer, n_layers) {
                let point = HookPoint::block(l, kind.site());
                let cells = (0..samples)
                    .map(|s| Cell {
                        row: c * samples + s,
                        position: Some(*position),
                        head: None,
                        key: None,
                    })
                    .collect();
                let source = self.clean.get(point)?.clone();
                patches.push(Patch::at_cells(point, PatchValue::Replace(source), cells));
            }
        }
        let logits = model.run_with_patches(&rows, &patches, Readout::LastPosition)?; // [rows, d_vocab]
        let probs = answer_probs(&logits, self.answer)?;
        Ok(probs
            .chunks(samples)
            .map(|draws| draws.iter().sum::<f64>() / draws.len() as f64)
            .collect())
    }
}

/// p(answer) per row of `[rows, d_vocab]` logits, in f64.
fn answer_probs(logits: &Tensor, answer: u32) -> Result<Vec<f64>> {
    let logits = logits.to_dtype(DType::F64)?;
    let shifted = logits.broadcast_sub(&logits.max_keepdim(D::Minus1)?)?;
    let log_z = shifted.exp()?.sum_keepdim(D::Minus1)?.log()?; // [rows, 1]
    let picked = shifted.narrow(D::Minus1, answer as usize, 1)?;
    let log_p = (picked - log_z)?.squeeze(D::Minus1)?;
    Ok(log_p.exp()?.to_vec1::<f64>()?)
}

/// `[samples, pos, d_model]`: N(0, scale²) at the `subject` positions, 0 elsewhere.
fn draw_noise(
    spec: &GaussianSpec,
    scale: f64,
    n_pos: usize,
    d_model: usize,
    subject: &Range<usize>,
    device: &candle_core::Device,
) -> Result<Tensor> {
    let mut rng = ChaCha8Rng::seed_from_u64(spec.seed);
    let samples = spec.samples.max(1);
    let mut values = vec![0f32; samples * n_pos * d_model];
    for s in 0..samples {
        for p in subject.clone().filter(|p| *p < n_pos) {
            for d in 0..d_model {
                values[(s * n_pos + p) * d_model + d] = (scale * standard_normal(&mut rng)) as f32;
            }
        }
    }
    Ok(Tensor::from_vec(values, (samples, n_pos, d_model), device)?)
}

/// One N(0, 1) draw by Box–Muller (the cosine half).
fn standard_normal(rng: &mut ChaCha8Rng) -> f64 {
    let u: f64 = rng.gen::<f64>().max(f64::MIN_POSITIVE);
    let v: f64 = rng.gen();
    (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
}

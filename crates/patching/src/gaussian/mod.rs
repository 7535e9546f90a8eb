//! Gaussian-noise corruption and causal tracing (Meng et al. 2022, ROME, §2.1): for a
//! prompt with no natural counterfactual, the corrupted run adds noise to the input
//! embeddings (`hook_embed`) of the subject's tokens, and each cell restores the clean
//! activation of one (kind, layer, position) in the noised run.
//!
//! - The noise is independent N(0, ν²) per entry, ν = 3 (ROME's multiplier) × the
//!   standard deviation of the entries of the token embedding matrix `W_E`
//!   ([`embedding_std`]), or a given ν ([`NoiseLevel`]).
//! - `samples` draws (default 10) from ChaCha8 seeded with `seed`, by Box–Muller;
//!   the same draws for the corrupted baseline and every cell. Like ROME's code (which
//!   seeds `RandomState(1)` for every prompt), every prompt draws from the same seed.
//! - The metric is the probability of the clean answer (or its logit,
//!   [`TraceMetric`]), averaged over the draws, and normalized as everywhere else:
//!   (p − p_corrupted) / (p_clean − p_corrupted), so the clean run is 1 and the noised
//!   run 0.
//! - `window` W: a cell of `attn_out` or `mlp_out` at layer l restores layers
//!   `max(0, l − ⌊W/2⌋) .. min(L, l + ⌈W/2⌉)` (end exclusive), ROME's
//!   `range(max(0, l - W // 2), min(L, l - (-W // 2)))`; residual-stream kinds restore
//!   their own layer only, as ROME's hidden-state trace ([`GaussianSpec::layers`]).
//! - Directions: denoising restores the clean activation in each noised run (ROME's
//!   causal tracing: is the component sufficient?); noising patches each draw's noised
//!   activation into the clean run (is it necessary?), averaged over the draws.
//!
//! [`NoisedPrompt::trace`] computes cells with one full patched pass per cell and draw
//! ([`Execution::Naive`]) or with partial passes from each draw's cached run
//! ([`Execution::Fast`], `fast.rs`); the two agree within float rounding.

mod fast;
mod naive;
mod score;

use std::ops::Range;

use actpatch_hooks::{ActivationCache, CacheFilter, HookPoint, Hooks, Patch, PatchValue};
use actpatch_model::{HookedTransformer, Readout};
use candle_core::{DType, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::{Direction, Execution, PatchKind, PatchingError, Result};
pub use score::{AnswerScore, TraceMetric};

/// How the noise's standard deviation ν is set.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum NoiseLevel {
    /// ν = this multiple of the standard deviation of `W_E`'s entries (ROME: 3).
    EmbeddingStds(f64),
    /// ν given outright.
    Absolute(f64),
}

/// How the noise is drawn and cells restored.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GaussianSpec {
    pub samples: usize,
    pub seed: u64,
    pub noise: NoiseLevel,
    /// Layers restored per `attn_out` / `mlp_out` cell (1: the cell's layer only).
    pub window: usize,
    pub metric: TraceMetric,
}

impl Default for GaussianSpec {
    fn default() -> Self {
        GaussianSpec {
            samples: 10,
            seed: 0,
            noise: NoiseLevel::EmbeddingStds(3.0),
            window: 1,
            metric: TraceMetric::Prob,
        }
    }
}

impl GaussianSpec {
    /// The kinds a trace restores: a layer's residual stream or its attention or MLP
    /// output, at one position.
    pub const KINDS: [PatchKind; 5] = [
        PatchKind::ResidPre,
        PatchKind::ResidMid,
        PatchKind::ResidPost,
        PatchKind::AttnOut,
        PatchKind::MlpOut,
    ];

    /// How many layers a cell of `kind` restores: `window` for `attn_out` and
    /// `mlp_out` (ROME's MLP and attention traces), 1 for the residual stream (ROME's
    /// hidden-state trace).
    pub fn window_of(&self, kind: PatchKind) -> usize {
        match kind {
            PatchKind::AttnOut | PatchKind::MlpOut => self.window.max(1),
            _ => 1,
        }
    }

    /// The layers a cell of `kind` at `layer` restores (see [`window`]).
    pub fn layers(&self, kind: PatchKind, layer: usize, n_layers: usize) -> Range<usize> {
        window(layer, self.window_of(kind), n_layers)
    }
}

/// `w` consecutive layers centred on `layer`, clipped to `0..n_layers`:
/// `max(0, layer − ⌊w/2⌋) .. min(n_layers, layer + ⌈w/2⌉)`, as ROME's
/// `range(max(0, l - w // 2), min(L, l - (-w // 2)))`. For w = 10 at layer 12 that is
/// layers 7..17 (7 to 16); w = 1 is the layer itself.
pub fn window(layer: usize, w: usize, n_layers: usize) -> Range<usize> {
    let w = w.max(1);
    layer.saturating_sub(w / 2)..(layer + w.div_ceil(2)).min(n_layers)
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

/// ν, the noise's standard deviation under `spec`.
pub fn embedding_noise_scale(model: &HookedTransformer, spec: &GaussianSpec) -> Result<f64> {
    match spec.noise {
        NoiseLevel::EmbeddingStds(multiple) => Ok(multiple * embedding_std(model)?),
        NoiseLevel::Absolute(scale) => Ok(scale),
    }
}

/// One cell of a trace: the patch kind, its layer and the position restored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TraceIndex {
    pub kind: PatchKind,
    pub layer: usize,
    pub position: usize,
}

/// One traced cell: the mean over the draws of its scores, and the normalized value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TraceCell {
    pub index: TraceIndex,
    pub direction: Direction,
    /// Mean over the draws of the metric, the answer's probability and the KL
    /// divergence from the clean run.
    pub score: AnswerScore,
    /// (metric − corrupted) / (clean − corrupted): 0 = the noised run, 1 = the clean run.
    pub normalized: f64,
}

/// A prompt with its subject noised: the clean run's activations and scores, and the
/// noised embeddings, activations and mean scores of every draw.
pub struct NoisedPrompt {
    pub tokens: Vec<u32>,
    pub subject: Range<usize>,
    pub answer: u32,
    pub spec: GaussianSpec,
    /// ν, the noise's standard deviation.
    pub scale: f64,
    /// The clean run's scores.
    pub clean: AnswerScore,
    /// The clean run's most likely next token.
    pub clean_top: u32,
    /// The noised runs' scores, mean over the draws.
    pub corrupted: AnswerScore,
    /// Each draw's scores (`samples` of them).
    pub corrupted_draws: Vec<AnswerScore>,
    /// The clean embeddings plus each draw's noise: `[samples, pos, d_model]`.
    noised_embed: Tensor,
    /// The clean run at the swept sites and `hook_embed` (batch 1).
    clean_cache: ActivationCache,
    /// The noised runs at the swept sites (batch `samples`).
    noised_cache: ActivationCache,
    /// Clean next-token log-probabilities `[d_vocab]` (f64), for the KL divergence.
    clean_log_probs: Tensor,
}

impl NoisedPrompt {
    /// Runs the clean prompt and its `samples` noised versions, caching the sites of
    /// `kinds` (none: the baselines only).
    pub fn new(
        model: &HookedTransformer,
        tokens: &[u32],
        subject: Range<usize>,
        answer: u32,
        kinds: &[PatchKind],
        spec: GaussianSpec,
    ) -> Result<Self> {
        let n_pos = tokens.len();
        if subject.is_empty() || subject.end > n_pos {
            return Err(PatchingError::PositionOutOfRange {
                position: subject.end.max(1) - 1,
                n_pos,
            });
        }
        let n_layers = model.dims().n_layers;
        let sites: Vec<HookPoint> = (kinds.iter())
            .flat_map(|k| (0..n_layers).map(|l| HookPoint::block(l, k.site())))
            .collect();
        let clean_points = sites.iter().copied().chain([HookPoint::Embed]);
        let (clean_logits, clean_cache) = run_cached(model, &[tokens.to_vec()], &[], clean_points)?; // [1, d_vocab]
        let clean_log_probs = actpatch_metrics::log_softmax(&clean_logits)?.squeeze(0)?;
        let clean = score::scores(&clean_logits, answer, &clean_log_probs, spec.metric)?[0];
        let clean_top = clean_logits
            .argmax(candle_core::D::Minus1)?
            .flatten_all()?
            .to_vec1::<u32>()?[0];
        let scale = embedding_noise_scale(model, &spec)?;
        let embed = clean_cache.get(HookPoint::Embed)?; // [1, pos, d_model]
        let noise = draw_noise(&spec, scale, n_pos, model.dims().d_model, &subject)?;
        let noised_embed = noise
            .to_device(embed.device())?
            .to_dtype(embed.dtype())?
            .broadcast_add(embed)?; // [samples, pos, d_model]
        let samples = noised_embed.dim(0)?;
        let embed_patch = [Patch::replace(HookPoint::Embed, noised_embed.clone())];
        let rows = vec![tokens.to_vec(); samples];
        let (noised_logits, noised_cache) = run_cached(model, &rows, &embed_patch, sites)?; // [samples, d_vocab]
        let corrupted_draws = score::scores(&noised_logits, answer, &clean_log_probs, spec.metric)?;
        Ok(NoisedPrompt {
            tokens: tokens.to_vec(),
            subject,
            answer,
            spec,
            scale,
            clean,
            clean_top,
            corrupted: AnswerScore::mean(&corrupted_draws),
            corrupted_draws,
            noised_embed,
            clean_cache,
            noised_cache,
            clean_log_probs,
        })
    }

    /// How many noise draws each cell averages over.
    pub fn samples(&self) -> usize {
        self.corrupted_draws.len()
    }

    /// The clean embeddings plus each draw's noise: `[samples, pos, d_model]`.
    pub fn noised_embeddings(&self) -> &Tensor {
        &self.noised_embed
    }

    /// The normalization of a metric value: 0 = the noised run, 1 = the clean run.
    pub fn normalize(&self, value: f64) -> f64 {
        (value - self.corrupted.value) / (self.clean.value - self.corrupted.value)
    }

    /// Every cell of `cells` in `direction`, the mean over the draws of each, at most
    /// `max_rows` rows per forward pass; `progress` is told how many cells are done.
    pub fn trace(
        &self,
        model: &HookedTransformer,
        (direction, execution): (Direction, Execution),
        cells: &[TraceIndex],
        max_rows: usize,
        progress: &mut dyn FnMut(usize),
    ) -> Result<Vec<TraceCell>> {
        let n_layers = model.dims().n_layers;
        if let Some(cell) = cells.iter().find(|c| c.layer >= n_layers) {
            return Err(PatchingError::Hook(
                actpatch_hooks::HookError::LayerOutOfRange {
                    name: format!("blocks.{}", cell.layer),
                    layer: cell.layer,
                    n_layers,
                },
            ));
        }
        if let Some(cell) = cells.iter().find(|c| c.position >= self.tokens.len()) {
            return Err(PatchingError::PositionOutOfRange {
                position: cell.position,
                n_pos: self.tokens.len(),
            });
        }
        let sums = match execution {
            Execution::Naive => naive::trace(self, model, direction, cells, max_rows, progress)?,
            Execution::Fast => fast::trace(self, model, direction, cells, max_rows, progress)?,
        };
        let samples = self.samples() as f64;
        Ok((cells.iter().zip(sums))
            .map(|(index, sum)| {
                let score = sum.scaled(1.0 / samples);
                TraceCell {
                    index: *index,
                    direction,
                    score,
                    normalized: self.normalize(score.value),
                }
            })
            .collect())
    }

    /// The run patched (the target) and the one patched in (the source) of draw `draw`:
    /// the noised embeddings of the target rows (none: the clean run) and the source
    /// activation at `point` (`[1, pos, …]`).
    fn source(&self, direction: Direction, point: HookPoint, draw: usize) -> Result<Tensor> {
        Ok(match direction {
            Direction::Denoising => self.clean_cache.get(point)?.clone(),
            Direction::Noising => self.noised_cache.get(point)?.narrow(0, draw, 1)?,
        })
    }

    /// Draw `draw`'s noised embeddings `[1, pos, d_model]`.
    fn noised_embed_of(&self, draw: usize) -> Result<Tensor> {
        Ok(self.noised_embed.narrow(0, draw, 1)?)
    }

    /// Scores of next-token logits `[rows, d_vocab]`.
    fn scores(&self, logits: &Tensor) -> Result<Vec<AnswerScore>> {
        score::scores(logits, self.answer, &self.clean_log_probs, self.spec.metric)
    }
}

/// `rows` run with `patches`, caching `points`: next-token logits `[rows, d_vocab]` and
/// the cache.
fn run_cached(
    model: &HookedTransformer,
    rows: &[Vec<u32>],
    patches: &[Patch],
    points: impl IntoIterator<Item = HookPoint>,
) -> Result<(Tensor, ActivationCache)> {
    let tokens = model.tokens_tensor(rows)?;
    let mut hooks = Hooks::new(patches, CacheFilter::only(points));
    let logits = model.forward(&tokens, &mut hooks, Readout::LastPosition)?;
    Ok((logits, hooks.into_cache()))
}

/// The patch that puts each row's noised embeddings in: `rows` rows, row r of draw
/// `r % samples`.
fn embed_patch(noised_embed: &Tensor, rows: usize) -> Result<Patch> {
    let samples = noised_embed.dim(0)?;
    let tiled = Tensor::cat(&vec![noised_embed.clone(); rows / samples], 0)?;
    Ok(Patch::new(HookPoint::Embed, PatchValue::Replace(tiled)))
}

/// `[samples, pos, d_model]`: N(0, scale²) at the `subject` positions, 0 elsewhere.
fn draw_noise(
    spec: &GaussianSpec,
    scale: f64,
    n_pos: usize,
    d_model: usize,
    subject: &Range<usize>,
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
    Ok(Tensor::from_vec(
        values,
        (samples, n_pos, d_model),
        &candle_core::Device::Cpu,
    )?)
}

/// One N(0, 1) draw by Box–Muller (the cosine half).
fn standard_normal(rng: &mut ChaCha8Rng) -> f64 {
    let u: f64 = rng.gen::<f64>().max(f64::MIN_POSITIVE);
    let v: f64 = rng.gen();
    (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
}

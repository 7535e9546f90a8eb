//! `just bench`: the fast sweep against the notebook's loop, on a random-weight GPT-2
//! with gpt2-small's shapes (12 layers, d_model 768, 12 heads, vocabulary 50257).
//!
//! For `resid_pre` (layer × position) and `head_out_by_pos` (layer × head × position),
//! on an 8-token and an 11-token pair (with BOS), it times in one run:
//! (a) the naive loop: one full forward pass per cell, logits at every position, as
//!     the notebook and TransformerLens's `patching` module do;
//! (b) the fast path the runner uses by default.
//! It prints cells, seconds, cells/s, the fast/naive speed-up, the fast path's
//! achieved GFLOP/s next to a matmul peak measured in the same run, and peak memory.
//! It fails when (a) and (b) differ by more than 1e-4 on any cell.
//!
//! `cargo bench -p actpatch-runner --bench sweeps -- --quick` times the naive loop on
//! a sample of cells only (and checks those). `-- --device cuda:0` runs everything on
//! that device (a build with `--features cuda`); the matmul peak is then the GPU's, and
//! MiB stays the host process's peak.

use std::path::{Path, PathBuf};
use std::time::Instant;

use actpatch_hooks::{Hooks, Patch, PatchValue};
use actpatch_metrics::cell_metrics;
use actpatch_model::{DeviceSpec, HookedTransformer, ModelSource, Readout};
use actpatch_patching::fast::{self, SweepWork};
use actpatch_patching::{
    attribute, cells_of, Align, CellIndex, CellResult, DirectedPair, Direction, Method, MetricSet,
    Pair, PatchKind,
};
use candle_core::{DType, Device, Tensor};

const D_MODEL: usize = 768;
const N_LAYERS: usize = 12;
const N_HEADS: usize = 12;
const D_MLP: usize = 3072;
const D_VOCAB: usize = 50257;
const N_CTX: usize = 1024;

type BoxError = Box<dyn std::error::Error>;

/// Writes a random GPT-2 small (config, safetensors, the real GPT-2 tokenizer).
fn random_gpt2(dir: &Path) -> Result<(), BoxError> {
    std::fs::create_dir_all(dir)?;
    let config = serde_json::json!({
        "model_type": "gpt2", "architectures": ["GPT2LMHeadModel"],
        "vocab_size": D_VOCAB, "n_positions": N_CTX, "n_embd": D_MODEL, "n_layer": N_LAYERS,
        "n_head": N_HEADS, "n_inner": null, "activation_function": "gelu_new",
        "layer_norm_epsilon": 1e-5, "bos_token_id": 50256, "eos_token_id": 50256,
    });
    std::fs::write(
        dir.join("config.json"),
        serde_json::to_string_pretty(&config)?,
    )?;
    std::fs::copy(fixture_tokenizer()?, dir.join("tokenizer.json"))?;
    let dev = Device::Cpu;
    let randn = |shape: &[usize]| Tensor::randn(0f32, 0.02, shape, &dev);
    let mut tensors = std::collections::HashMap::new();
    tensors.insert("wte.weight".to_string(), randn(&[D_VOCAB, D_MODEL])?);
    tensors.insert("wpe.weight".to_string(), randn(&[N_CTX, D_MODEL])?);
    for (name, value) in [("ln_f.weight", 1.0f32), ("ln_f.bias", 0.0)] {
        tensors.insert(name.to_string(), Tensor::full(value, D_MODEL, &dev)?);
    }
    for l in 0..N_LAYERS {
        let p = |s: &str| format!("h.{l}.{s}");
        for ln in ["ln_1", "ln_2"] {
            tensors.insert(
                p(&format!("{ln}.weight")),
                Tensor::ones(D_MODEL, DType::F32, &dev)?,
            );
            tensors.insert(
                p(&format!("{ln}.bias")),
                Tensor::zeros(D_MODEL, DType::F32, &dev)?,
            );
        }
        for (name, d_in, d_out) in [
            ("attn.c_attn", D_MODEL, 3 * D_MODEL),
            ("attn.c_proj", D_MODEL, D_MODEL),
            ("mlp.c_fc", D_MODEL, D_MLP),
            ("mlp.c_proj", D_MLP, D_MODEL),
        ] {
            tensors.insert(p(&format!("{name}.weight")), randn(&[d_in, d_out])?);
            tensors.insert(p(&format!("{name}.bias")), randn(&[d_out])?);
        }
    }
    candle_core::safetensors::save(&tensors, dir.join("model.safetensors"))?;
    Ok(())
}

/// The real GPT-2 tokenizer of the tiny fixture: under the source tree this bench was
/// built from, else under the current folder (a bench executable carried to another
/// machine, run from a checkout's root).
fn fixture_tokenizer() -> Result<PathBuf, BoxError> {
    let relative = "tests/fixtures/tiny-gpt2/tokenizer.json";
    let candidates = [
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../..")
            .join(relative),
        PathBuf::from(relative),
    ];
    candidates.into_iter().find(|p| p.is_file()).ok_or_else(|| {
        format!("{relative} not found: run the bench from the repository's root").into()
    })
}

/// Peak resident memory of this process so far, in MiB.
fn peak_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .map(String::from)
        })
        .and_then(|l| {
            l.split_whitespace()
                .nth(1)
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

/// GFLOP/s of a large f32 matmul on `device`, best of a few.
fn matmul_peak(device: &Device) -> Result<f64, BoxError> {
    let (m, k, n) = (1024, 768, 3072);
    let a = Tensor::randn(0f32, 1.0, (m, k), device)?;
    let b = Tensor::randn(0f32, 1.0, (k, n), device)?;
    let mut best = 0.0f64;
    for _ in 0..8 {
        let t = Instant::now();
        let c = a.matmul(&b)?;
        let _ = c.sum_all()?.to_scalar::<f32>()?;
        best = best.max(2.0 * (m * k * n) as f64 / t.elapsed().as_secs_f64() / 1e9);
    }
    Ok(best)
}

/// FLOPs of the fast path's work (matmuls; element-wise work not counted).
fn flops(work: &SweepWork) -> f64 {
    let per_row_position = 2.0 * (4 * D_MODEL * D_MODEL + 2 * D_MODEL * D_MLP) as f64;
    let attention = 2.0 * 2.0 * D_MODEL as f64; // scores and weighted values, per key
    let unembed = 2.0 * (D_MODEL * D_VOCAB) as f64;
    let keys_values = 2.0 * (3 * D_MODEL * D_MODEL) as f64; // GPT-2's c_attn
    work.block_row_positions as f64 * per_row_position
        + work.kv_row_positions as f64 * keys_values
        + work.attention_row_position_keys as f64 * attention
        + work.rows_unembedded as f64 * unembed
}

/// Resets the peak-memory counter (Linux), so each phase reports its own peak.
fn reset_peak() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn main() -> Result<(), BoxError> {
    let args: Vec<String> = std::env::args().collect();
    // The weights are generated by a child process, so their construction does not
    // count in this process's peak memory.
    if let Some(i) = args.iter().position(|a| a == "--write-model") {
        return random_gpt2(Path::new(args.get(i + 1).ok_or("--write-model DIR")?));
    }
    let quick = args.iter().any(|a| a == "--quick");
    // For profiling: the fast path alone, naive loop skipped (no ratios, no check).
    let fast_only = args.iter().any(|a| a == "--fast-only");
    let device: DeviceSpec = match args.iter().position(|a| a == "--device") {
        Some(i) => args.get(i + 1).ok_or("--device cpu|cuda:N")?.parse()?,
        None => DeviceSpec::Cpu,
    };
    let dir =
        std::env::temp_dir().join(format!("actpatch-bench-gpt2-small-{}", std::process::id()));
    println!(
        "building a random-weight GPT-2 small in {} …",
        dir.display()
    );
    let status = std::process::Command::new(&args[0])
        .arg("--write-model")
        .arg(&dir)
        .status()?;
    if !status.success() {
        return Err("could not write the random model".into());
    }
    let model = HookedTransformer::load(&ModelSource::Local(dir.clone()), device)?;
    let peak_gflops = matmul_peak(model.device())?;
    println!(
        "device: {device}; matmul peak (1024×768 @ 768×3072, f32): {peak_gflops:.1} GFLOP/s; CPU threads: {}",
        candle_core::utils::get_num_threads()
    );

    let pairs = [
        ("8-token", "The Colosseum is in", "The Eiffel Tower is in"),
        (
            "11-token",
            "The Colosseum is in the city of",
            "The Eiffel Tower is in the city of",
        ),
    ];
    println!(
        "\n{:<9} {:<16} {:<10} {:>6} {:>9} {:>9} {:>9} {:>9} {:>8} {:>7} {:>6} {:>6}",
        "pair",
        "kind",
        "metrics",
        "cells",
        "naive s",
        "fast s",
        "cells/s",
        "speed-up",
        "GFLOP/s",
        "of peak",
        "GFLOP",
        "MiB"
    );
    let mut worst = 0.0f64;
    let mut warmed_up = device == DeviceSpec::Cpu;
    for (label, clean, corrupted) in pairs {
        let pair =
            Pair::from_prompts(&model, clean, corrupted, [" Rome", " Paris"], Align::Strict)?;
        let baselines = pair.baselines(&model)?;
        for kind in [PatchKind::ResidPre, PatchKind::HeadOutByPos] {
            let directed = |metrics| {
                DirectedPair::new(
                    &model,
                    &pair,
                    &baselines,
                    Direction::Denoising,
                    &[kind],
                    metrics,
                )
            };
            let reference = directed(MetricSet::All)?;
            let cells = cells_of(kind, model.dims(), &reference.positions(None));

            // (b) the fast path, including its target-run cache: with every metric
            // (the runner's default), and with the logit-difference metrics only.
            let mut timed = Vec::new();
            // On a GPU the first sweep also loads candle's kernels (PTX compiled by the
            // driver): it runs twice, and the second is timed.
            let warm_up = if warmed_up {
                [].as_slice()
            } else {
                [MetricSet::All].as_slice()
            };
            warmed_up = true;
            for (i, metrics) in warm_up
                .iter()
                .chain(&[MetricSet::All, MetricSet::LogitDiff])
                .copied()
                .enumerate()
            {
                let directed = directed(metrics)?;
                reset_peak();
                let t = Instant::now();
                let mut work = SweepWork::default();
                let target = fast::target_run(&model, &directed, &[kind])?;
                let results: Vec<CellResult> = fast::sweep_counted(
                    &model,
                    &directed,
                    &target,
                    (kind, &cells),
                    256,
                    &mut |_| {},
                    &mut work,
                )?;
                if i >= warm_up.len() {
                    timed.push((t.elapsed().as_secs_f64(), peak_mib(), work, results));
                }
            }
            let (fast_s, fast_peak, work, fast) = timed.remove(0);
            let (ld_s, ld_peak, ld_work, ld_fast) = timed.remove(0);

            // (a) the notebook's loop: one full forward pass per cell.
            let sample: Vec<(usize, CellIndex)> = if fast_only {
                Vec::new()
            } else if quick {
                cells
                    .iter()
                    .copied()
                    .enumerate()
                    .step_by(cells.len().div_ceil(24))
                    .collect()
            } else {
                cells.iter().copied().enumerate().collect()
            };
            let tokens = model.tokens_tensor(std::slice::from_ref(&pair.corrupted_tokens))?;
            let t = Instant::now();
            for (i, cell) in &sample {
                let source = reference
                    .source
                    .get(actpatch_hooks::HookPoint::block(cell.layer, kind.site()))?
                    .clone();
                let patch = Patch::at_cells(
                    actpatch_hooks::HookPoint::block(cell.layer, kind.site()),
                    PatchValue::Replace(source),
                    vec![actpatch_hooks::Cell {
                        row: 0,
                        position: cell.position,
                        head: cell.head,
                        key: None,
                    }],
                );
                let logits = model.forward(
                    &tokens,
                    &mut Hooks::patching(std::slice::from_ref(&patch)),
                    Readout::AllPositions,
                )?;
                let last = logits
                    .get(0)?
                    .get(pair.corrupted_tokens.len() - 1)?
                    .unsqueeze(0)?; // [1, d_vocab]
                let scorer = reference.scorer;
                let naive = cell_metrics(
                    &last,
                    scorer.answers,
                    &scorer.baseline,
                    scorer.clean_log_probs,
                )?[0];
                let gap = [&fast[*i], &ld_fast[*i]]
                    .iter()
                    .map(|f| {
                        (naive.normalized_logit_diff - f.metrics.normalized_logit_diff)
                            .abs()
                            .max((naive.logit_diff - f.metrics.logit_diff).abs())
                    })
                    .fold(0.0, f64::max);
                worst = worst.max(gap);
                if gap > 1e-4 {
                    return Err(format!(
                        "{label} {kind} {cell:?}: naive and fast differ by {gap:e}"
                    )
                    .into());
                }
            }
            let naive_s =
                t.elapsed().as_secs_f64() * cells.len() as f64 / sample.len().max(1) as f64;
            let row = |metrics: &str, secs: f64, work: &SweepWork, peak: f64| {
                println!(
                    "{:<9} {:<16} {:<10} {:>6} {:>9.2} {:>9.3} {:>9.1} {:>8.1}× {:>8.1} {:>6.0}%  {:>6.0} {:>6.0}",
                    label,
                    kind.name(),
                    metrics,
                    cells.len(),
                    naive_s,
                    secs,
                    cells.len() as f64 / secs,
                    naive_s / secs,
                    flops(work) / secs / 1e9,
                    100.0 * flops(work) / secs / 1e9 / peak_gflops,
                    flops(work) / 1e9,
                    peak,
                );
            };
            row("all", fast_s, &work, fast_peak);
            row("logit_diff", ld_s, &ld_work, ld_peak);
            if work.noop_cells > 0 {
                println!(
                    "{:<27} ({} cells answered without a pass)",
                    "", work.noop_cells
                );
            }
        }
    }
    if quick {
        println!("\n(--quick: the naive loop was timed on a sample of cells and extrapolated)");
    }
    println!("\nlargest naive/fast difference: {worst:.2e} (limit 1e-4). GFLOP counts the fast path's matrix products; MiB is the process's resident peak during the fast sweep, model weights included.");
    attribution_bench(&model, pairs[0])?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// The kinds attribution patching estimates at once in the bench.
const ATTRIBUTION_KINDS: [PatchKind; 12] = [
    PatchKind::ResidPre,
    PatchKind::ResidMid,
    PatchKind::ResidPost,
    PatchKind::AttnOut,
    PatchKind::MlpOut,
    PatchKind::HeadOut,
    PatchKind::HeadOutByPos,
    PatchKind::HeadQByPos,
    PatchKind::HeadKByPos,
    PatchKind::HeadVByPos,
    PatchKind::HeadPattern,
    PatchKind::HeadPatternByDestSrc,
];

/// Seconds of `method` over every kind of [`ATTRIBUTION_KINDS`], both directions, and
/// the cells it estimated.
fn time_method(
    model: &HookedTransformer,
    pair: &Pair,
    baselines: &actpatch_patching::Baselines,
    method: Method,
) -> Result<(f64, usize), BoxError> {
    let t = Instant::now();
    let mut n = 0;
    for direction in Direction::BOTH {
        let directed =
            DirectedPair::new(model, pair, baselines, direction, &[], MetricSet::LogitDiff)?;
        let kinds: Vec<(PatchKind, Vec<CellIndex>)> = ATTRIBUTION_KINDS
            .iter()
            .map(|k| Ok((*k, directed.cells(model, *k, None)?)))
            .collect::<Result<_, actpatch_patching::PatchingError>>()?;
        n += attribute(model, &directed, &kinds, method, 10)?
            .results
            .len();
    }
    Ok((t.elapsed().as_secs_f64(), n))
}

/// Attribution patching against the exact `head_out_by_pos` sweep, in one run: atp for
/// every kind at once in both directions, atp* (1 + L backward passes), ig (10 steps).
fn attribution_bench(
    model: &HookedTransformer,
    (label, clean, corrupted): (&str, &str, &str),
) -> Result<(), BoxError> {
    let pair = Pair::from_prompts(model, clean, corrupted, [" Rome", " Paris"], Align::Strict)?;
    let baselines = pair.baselines(model)?;
    let exact = {
        let kind = PatchKind::HeadOutByPos;
        let directed = DirectedPair::new(
            model,
            &pair,
            &baselines,
            Direction::Denoising,
            &[kind],
            MetricSet::All,
        )?;
        let cells = directed.cells(model, kind, None)?;
        let t = Instant::now();
        let target = fast::target_run(model, &directed, &[kind])?;
        fast::sweep(model, &directed, &target, kind, &cells, 256, &mut |_| {})?;
        t.elapsed().as_secs_f64()
    };
    let _ = time_method(model, &pair, &baselines, Method::Atp)?; // warm-up
    let (atp, cells) = time_method(model, &pair, &baselines, Method::Atp)?;
    let (atp_star, _) = time_method(model, &pair, &baselines, Method::AtpStar)?;
    let (ig, _) = time_method(model, &pair, &baselines, Method::Ig)?;
    let layers = model.dims().n_layers;
    println!(
        "\nattribution, {label} pair, {} kinds, both directions ({cells} cells per method):",
        ATTRIBUTION_KINDS.len()
    );
    println!("  exact head_out_by_pos, denoising only (fast path): {exact:.3} s");
    println!(
        "  atp:  {atp:.3} s — {:.1}× less time than that exact sweep",
        exact / atp
    );
    println!(
        "  atp*: {atp_star:.3} s — {:.1}× atp's time (1 + L = {} backward passes)",
        atp_star / atp,
        1 + layers
    );
    println!("  ig (10 steps): {ig:.3} s — {:.1}× atp's time", ig / atp);
    Ok(())
}

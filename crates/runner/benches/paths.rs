//! `just bench` (second part): path patching on a random-weight GPT-2 with
//! gpt2-small's shapes, 8-token pair (with BOS), denoising, every metric.
//!
//! Receivers: the logits (all 144 senders) and the q input of every head of layer 9,
//! at every position and at the final position only (the 108 senders of layers 0–8).
//! It times in one run:
//! (a) the tutorial loop: per sender, the frozen forward pass and (for head
//!     receivers) the second pass, one sender at a time ([`path::naive`] with one row
//!     per batch);
//! (b) the same passes batched, 144 senders per pass ([`path::naive`]);
//! (c) the fast path the runner uses by default ([`path::fast`]).
//! It fails when (a) and (c) differ by more than 1e-4 on any sender.
//!
//! `-- --quick` times the loop on a sample of senders only; `-- --device cuda:0` runs on
//! that device (a build with `--features cuda`).

mod common;

use std::time::Instant;

use actpatch_patching::path::{self, ReceiverHead, ReceiverInput, Receivers};
use actpatch_patching::{Align, CellResult, DirectedPair, Direction, MetricSet, Pair, PatchKind};
use common::{load_random_gpt2, peak_mib, random_gpt2, reset_peak, BenchArgs, BoxError};

fn main() -> Result<(), BoxError> {
    actpatch_model::keep_large_buffers_in_heap(); // as the actpatch binary
    let args: Vec<String> = std::env::args().collect();
    let parsed = BenchArgs::parse(&args)?;
    if let Some(dir) = &parsed.write_model {
        return random_gpt2(dir);
    }
    let (model, dir) = load_random_gpt2(&args, parsed.device)?;
    println!(
        "device: {}; CPU threads: {}",
        parsed.device,
        candle_core::utils::get_num_threads()
    );
    let pair = Pair::from_prompts(
        &model,
        "The Colosseum is in",
        "The Eiffel Tower is in",
        [" Rome", " Paris"],
        Align::Strict,
    )?;
    let baselines = pair.baselines(&model)?;
    let directed = DirectedPair::new(
        &model,
        &pair,
        &baselines,
        Direction::Denoising,
        &[PatchKind::Path],
        MetricSet::All,
    )?;
    let n_pos = pair.corrupted_tokens.len();
    let layer9_q = |positions| Receivers::Heads {
        input: ReceiverInput::Q,
        heads: (0..12)
            .map(|head| ReceiverHead { layer: 9, head })
            .collect(),
        positions,
    };
    let sets = [
        ("logits", Receivers::Logits),
        ("q of layer 9, all positions", layer9_q(None)),
        (
            "q of layer 9, final position",
            layer9_q(Some(vec![n_pos - 1])),
        ),
    ];
    println!(
        "\n{n_pos}-token pair, denoising, every metric\n{:<30} {:>7} {:>8} {:>10} {:>8} {:>9} {:>9} {:>6}",
        "receivers", "senders", "loop s", "batched s", "fast s", "vs loop", "vs batch", "MiB"
    );
    let mut worst = 0.0f64;
    for (label, receivers) in &sets {
        let kind = (PatchKind::Path, receivers);
        let senders = receivers.senders(PatchKind::Path, model.dims(), &directed.positions(None));
        reset_peak();
        let t = Instant::now();
        let target = path::fast::target_run(&model, &directed)?;
        let fast = path::fast::sweep(&model, &directed, &target, kind, &senders, 256, &mut |_| {})?;
        let fast_s = t.elapsed().as_secs_f64();
        let fast_peak = peak_mib();

        let t = Instant::now();
        let batched = path::naive::sweep(&model, &directed, kind, &senders, 256, &mut |_| {})?;
        let batched_s = t.elapsed().as_secs_f64();

        let sample: Vec<usize> = match parsed.quick {
            true => (0..senders.len())
                .step_by(senders.len().div_ceil(12))
                .collect(),
            false => (0..senders.len()).collect(),
        };
        let picked: Vec<_> = sample.iter().map(|i| senders[*i]).collect();
        let t = Instant::now();
        let looped = path::naive::sweep(&model, &directed, kind, &picked, 1, &mut |_| {})?;
        let loop_s = t.elapsed().as_secs_f64() * senders.len() as f64 / sample.len() as f64;

        let gap = |a: &CellResult, b: &CellResult| {
            (a.metrics.normalized_logit_diff - b.metrics.normalized_logit_diff).abs()
        };
        for (i, reference) in sample.iter().zip(&looped) {
            worst = worst.max(gap(&fast[*i], reference));
        }
        for (f, b) in fast.iter().zip(&batched) {
            worst = worst.max(gap(f, b));
        }
        if worst > 1e-4 {
            return Err(format!("{label}: fast and naive differ by {worst:e}").into());
        }
        println!(
            "{label:<30} {:>7} {loop_s:>8.2} {batched_s:>10.2} {fast_s:>8.3} {:>8.1}× {:>8.1}× {fast_peak:>6.0}",
            senders.len(),
            loop_s / fast_s,
            batched_s / fast_s,
        );
    }
    if parsed.quick {
        println!("\n(--quick: the loop was timed on a sample of senders and extrapolated)");
    }
    println!("\nlargest fast/naive difference: {worst:.2e} (limit 1e-4). Fast s includes its target run; MiB is the process's resident peak during the fast sweep, model weights included.");
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

//! Running a circuit: the clean run in which every edge outside the circuit carries
//! its sender's ablated output instead of the live one (the EAP-IG library's
//! `evaluate_graph`). A receiver's input is its live stream plus
//! `Σ_{s → r cut} (ablated_s − live_s)`, the live outputs being this run's own, so the
//! pass goes block by block: each block's receiver inputs from the outputs of the
//! blocks before it. Rows (circuit × pair) of one length run as one batch.
//!
//! Under patching, the positions before the first token where a pair's prompts differ
//! are the same in its clean and corrupted run, so no ablated output differs from the
//! live one there ([`PairRuns::first_position`]): a pair's rows run from that position
//! on only, attending to the clean run's keys and values before it
//! ([`HookedTransformer::block_edges_from`]).

use actpatch_hooks::{BlockSite, CacheFilter, HookPoint, Hooks};
use actpatch_model::{HookedTransformer, ReceiverInputs};
use candle_core::Tensor;

use crate::batches::batches;
use crate::gradients::readout_logit_diffs;
use crate::graph::{Graph, Sender};
use crate::prefix::CleanPrefixes;
use crate::runs::PairRuns;
use crate::{EdgePair, Result};

/// Rows × positions per batch.
const ROW_POSITIONS_PER_PASS: usize = 512;

/// The logit difference of every pair under every circuit: `[circuit][pair]`.
/// `circuits[c][edge]` is whether the edge is in circuit `c`.
pub(crate) fn evaluate_circuits(
    model: &HookedTransformer,
    graph: &Graph,
    (pairs, runs): (&[EdgePair], &[PairRuns]),
    circuits: &[Vec<bool>],
) -> Result<Vec<Vec<f32>>> {
    let mut out = vec![vec![0f32; pairs.len()]; circuits.len()];
    if circuits.is_empty() {
        return Ok(out);
    }
    let pairs_from = PairsFrom::new(pairs, runs)?;
    let mut rows: Vec<(usize, usize)> = (0..circuits.len())
        .flat_map(|c| (0..pairs.len()).map(move |p| (c, p)))
        .collect();
    let shape = |(_, p): &(usize, usize)| (pairs[*p].clean.len(), runs[*p].first_position);
    rows.sort_by_key(shape);
    let positions = |(len, start): &(usize, usize)| len - start;
    for range in batches(&rows, shape, (positions, ROW_POSITIONS_PER_PASS)) {
        let batch = &rows[range];
        let lds = run_batch(model, graph, &pairs_from, circuits, batch)?;
        for ((c, p), ld) in batch.iter().zip(lds) {
            out[*c][*p] = ld;
        }
    }
    Ok(out)
}

/// What each pair's rows start from: the position, the ablated outputs from there on,
/// and the clean run's keys and values before it.
struct PairsFrom<'a> {
    pairs: &'a [EdgePair],
    runs: &'a [PairRuns],
    /// `[sender, pos − start, d_model]` per pair.
    ablated: Vec<Tensor>,
    prefixes: CleanPrefixes,
}

impl<'a> PairsFrom<'a> {
    fn new(pairs: &'a [EdgePair], runs: &'a [PairRuns]) -> Result<Self> {
        let ablated = runs
            .iter()
            .map(|run| {
                let ablated = run.ablated()?; // [sender, pos, d_model]
                let (len, start) = (ablated.dim(1)?, run.first_position);
                Ok(ablated.narrow(1, start, len - start)?.contiguous()?)
            })
            .collect::<Result<_>>()?;
        Ok(PairsFrom {
            pairs,
            runs,
            ablated,
            prefixes: CleanPrefixes::of_pairs(runs),
        })
    }
}

/// One batch: rows `(circuit, pair)` of one length and one first position.
fn run_batch(
    model: &HookedTransformer,
    graph: &Graph,
    from: &PairsFrom,
    circuits: &[Vec<bool>],
    batch: &[(usize, usize)],
) -> Result<Vec<f32>> {
    let (pairs, start) = (from.pairs, from.runs[batch[0].1].first_position);
    let cut = cut_edges(model, graph, circuits, batch)?; // [row, receiver, sender]
    let ablated: Vec<&Tensor> = batch.iter().map(|(_, p)| &from.ablated[*p]).collect();
    let ablated = Tensor::stack(&ablated, 0)?; // [row, sender, pos, d_model] (positions from start)
    let tokens: Vec<Vec<u32>> = batch.iter().map(|(_, p)| pairs[*p].clean.clone()).collect();
    let tokens = model.tokens_tensor(&tokens)?;
    let embedded = model.embed(&tokens, &mut Hooks::none())?; // [row, len, d_model]
    let n = embedded.dim(1)? - start;
    let mut resid = embedded.narrow(1, start, n)?.contiguous()?; // [row, pos, d_model]
    let inputs: Vec<Tensor> = batch
        .iter()
        .map(|(_, p)| {
            from.runs[*p]
                .clean
                .outputs
                .narrow(0, 0, 1)?
                .narrow(1, start, n)
        })
        .collect::<std::result::Result<_, _>>()?;
    let of_rows: Vec<usize> = batch.iter().map(|(_, p)| *p).collect(); // each row's pair
    let mut diffs = SenderDiffs::new(&ablated)?;
    diffs.push(&ablated, 0, &Tensor::stack(&inputs, 0)?)?; // the input's live output: the clean embedding
    for layer in 0..graph.n_layers {
        let inputs = receiver_inputs(graph, layer, &cut, &ablated, &diffs)?;
        let (z, mlp_out) = (
            HookPoint::block(layer, BlockSite::Z),
            HookPoint::block(layer, BlockSite::MlpOut),
        );
        let mut hooks = Hooks::caching(CacheFilter::only([z, mlp_out]));
        resid = match start {
            0 => model.block_edges(layer, resid, Some(&inputs), &mut hooks)?,
            _ => {
                let (keys, values) = from.prefixes.rows(layer, start, &of_rows)?; // [row, start, kv_head, d_head]
                model.block_edges_from(
                    layer,
                    (resid, start),
                    (&keys, &values),
                    &inputs,
                    &mut hooks,
                )?
            }
        };
        let cache = hooks.into_cache();
        let results = model.head_results(layer, cache.get(z)?)?; // [row, pos, head, d_model]
        let first = graph.sender_index(Sender::Head { layer, head: 0 });
        diffs.push(&ablated, first, &results.transpose(1, 2)?)?; // the heads'
        let mlp = first + graph.n_heads;
        diffs.push(&ablated, mlp, &cache.get(mlp_out)?.unsqueeze(1)?)?;
    }
    let last = graph.receivers.len() - 1;
    let resid = (&resid + diffs.cut_sum(&cut.narrow(1, last, 1)?)?.squeeze(1)?)?; // the logits' input
    let answers: Vec<[u32; 2]> = batch.iter().map(|(_, p)| pairs[*p].answers).collect();
    readout_logit_diffs(model, &resid, &answers)
}

/// `[row, receiver, sender]`: 1 where the edge exists and is outside the row's circuit.
fn cut_edges(
    model: &HookedTransformer,
    graph: &Graph,
    circuits: &[Vec<bool>],
    batch: &[(usize, usize)],
) -> Result<Tensor> {
    let (n_senders, n_receivers, rows) = (graph.senders.len(), graph.receivers.len(), batch.len());
    let mut cut = vec![0f32; rows * n_receivers * n_senders];
    for (row, (c, _)) in batch.iter().enumerate() {
        for (edge, kept) in graph.edges.iter().zip(&circuits[*c]) {
            if !kept {
                cut[(row * n_receivers + edge.receiver) * n_senders + edge.sender] = 1.0;
            }
        }
    }
    Ok(Tensor::from_vec(
        cut,
        (rows, n_receivers, n_senders),
        model.device(),
    )?)
}

/// `ablated − live` of every sender that has run, in sender order, in one buffer
/// `[row, sender, pos · d_model]` filled group by group as the blocks run, so a receiver
/// block's cut sum is one matrix product over all the senders before it.
struct SenderDiffs {
    all: Tensor,
    filled: usize,
    pos: usize,
    d_model: usize,
}

impl SenderDiffs {
    /// Room for every sender of `ablated` `[row, sender, pos, d_model]`.
    fn new(ablated: &Tensor) -> Result<Self> {
        let (rows, senders, pos, d_model) = ablated.dims4()?;
        let all = Tensor::zeros(
            (rows, senders, pos * d_model),
            ablated.dtype(),
            ablated.device(),
        )?;
        Ok(Self {
            all,
            filled: 0,
            pos,
            d_model,
        })
    }

    /// Senders `first ..`, whose live outputs are `live` `[row, n, pos, d_model]`.
    /// (Senders that have not run stay 0, and no receiver so far reads them.)
    fn push(&mut self, ablated: &Tensor, first: usize, live: &Tensor) -> Result<()> {
        let (rows, n, pos, d_model) = live.dims4()?;
        let diff = (ablated.narrow(1, first, n)? - live)?; // [row, n, pos, d_model]
        let diff = diff.reshape((rows, n, pos * d_model))?;
        self.all.slice_set(&diff, 1, first)?;
        self.filled = self.filled.max(first + n);
        Ok(())
    }

    /// `Σ_s cut[r, s] · (ablated_s − live_s)` over the senders that have run: `cut`
    /// `[row, receivers, all senders]` → `[row, receivers, pos, d_model]`.
    fn cut_sum(&self, cut: &Tensor) -> Result<Tensor> {
        let (rows, receivers, _) = cut.dims3()?;
        let mask = cut.narrow(2, 0, self.filled)?.contiguous()?; // [row, receivers, filled]
        let sum = mask.matmul(&self.all.narrow(1, 0, self.filled)?)?; // [row, receivers, pos · d_model]
        Ok(sum.reshape((rows, receivers, self.pos, self.d_model))?)
    }
}

/// Block `layer`'s receiver inputs: each head's q, k, v and the MLP's delta from the
/// blocks before, and the cut edges from its own heads into its MLP (what they write
/// instead is added to the MLP's delta; the block takes off their live outputs).
fn receiver_inputs(
    graph: &Graph,
    layer: usize,
    cut: &Tensor,
    ablated: &Tensor,
    diffs: &SenderDiffs,
) -> Result<ReceiverInputs> {
    let heads = graph.n_heads;
    let per_layer = 3 * heads + 1;
    let first = graph.sender_index(Sender::Head { layer, head: 0 });
    let deltas = diffs.cut_sum(&cut.narrow(1, layer * per_layer, per_layer)?)?; // [row, 3·head + 1, pos, d_model]
    let head_delta = |i: usize| -> Result<Tensor> {
        // A view: the fused projection reads it where it lies.
        Ok(deltas.narrow(1, i * heads, heads)?.transpose(1, 2)?) // [row, pos, head, d_model]
    };
    let mlp = layer * per_layer + 3 * heads;
    let own_heads = cut
        .narrow(1, mlp, 1)?
        .narrow(2, first, heads)?
        .contiguous()?; // [row, 1, head]
    let (rows, _, pos, d_model) = deltas.dims4()?;
    let own_ablated = ablated
        .narrow(1, first, heads)?
        .reshape((rows, heads, pos * d_model))?;
    // What the cut heads write instead; the block takes off their live outputs.
    let own_cut = own_heads
        .matmul(&own_ablated)?
        .reshape((rows, pos, d_model))?; // [row, pos, d_model]
    let mlp_delta = (deltas.narrow(1, 3 * heads, 1)?.squeeze(1)? + own_cut)?; // [row, pos, d_model]
    Ok(ReceiverInputs {
        q: Some(head_delta(0)?),
        k: Some(head_delta(1)?),
        v: Some(head_delta(2)?),
        mlp: Some(mlp_delta),
        mlp_heads: Some(own_heads.squeeze(1)?),
        projected: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runs::pair_runs;
    use crate::Ablation;

    /// Run as circuits: every edge gives the clean run and, under patching, no edge the
    /// corrupted run (the curves take both without a run).
    #[test]
    fn the_full_and_the_empty_circuit_are_the_clean_and_the_corrupted_run() {
        for fixture in crate::test_fixtures::EVERY_FAMILY {
            let model = crate::test_fixtures::load(fixture);
            let graph = Graph::of_model(&model);
            let pair = |clean: &str, corrupted: &str| EdgePair {
                clean: model.to_tokens(clean, true).unwrap(),
                corrupted: model.to_tokens(corrupted, true).unwrap(),
                answers: [
                    model.to_single_token(" Rome").unwrap(),
                    model.to_single_token(" Paris").unwrap(),
                ],
            };
            let pairs = [
                pair("The capital of France is", "The capital of Italy is"),
                pair("The capital of Italy is", "The capital of France is"),
            ];
            let runs = pair_runs(&model, &graph, &pairs, Ablation::Patching).unwrap();
            let n = graph.edges.len();
            let circuits = [vec![true; n], vec![false; n]];
            let from = (&pairs[..], &runs[..]);
            let lds = evaluate_circuits(&model, &graph, from, &circuits).unwrap();
            for (p, run) in runs.iter().enumerate() {
                let (full, empty) = (lds[0][p], lds[1][p]);
                assert!(
                    (full - run.clean.logit_diff).abs() < 1e-4,
                    "{fixture}: {full}"
                );
                assert!(
                    (empty - run.corrupted.logit_diff).abs() < 1e-4,
                    "{fixture}: {empty} vs {}",
                    run.corrupted.logit_diff
                );
            }
        }
    }
}

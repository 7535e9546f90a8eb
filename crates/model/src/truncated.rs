//! Differentiable passes that stop early: each row of a batch runs the blocks before
//! its own depth only. What GradDrop needs (attribution's AtP*): with layer ℓ's writes
//! held constant, a row's gradient above ℓ is the plain row's, so only the blocks
//! below ℓ need a pass of their own, from the plain gradient injected at block ℓ's
//! input.

use actpatch_hooks::Hooks;
use candle_core::Tensor;

use crate::kernels::Kernels;
use crate::{HookedTransformer, ModelError, Result};

impl HookedTransformer {
    /// The differentiable pass ([`HookedTransformer::forward_differentiable`]'s ops) of
    /// `tokens` `[rows, pos]` in which row `r` stops at the input of block `depths[r]`
    /// (`depths` one per row, in non-increasing order, each at most the number of
    /// layers). Returns each row's block input there (`hook_resid_pre` of that layer,
    /// or the final residual stream for a depth of n_layers), `[1, pos, d_model]`.
    /// Hook points of a layer see the rows still running there: the first ones.
    pub fn forward_differentiable_to(
        &self,
        tokens: &Tensor,
        hooks: &mut Hooks,
        depths: &[usize],
    ) -> Result<Vec<Tensor>> {
        let (rows, pos) = tokens.dims2()?;
        let n_layers = self.dims().n_layers;
        let ordered = depths.windows(2).all(|w| w[0] >= w[1]);
        if depths.len() != rows || !ordered || depths.iter().any(|d| *d > n_layers) {
            return Err(ModelError::Depths {
                depths: depths.to_vec(),
                rows,
                n_layers,
            });
        }
        let frame =
            (self.arch.frame(0, pos, tokens.device())?).with_kernels(Kernels::Differentiable);
        let mut resid = self.arch.embed(tokens, hooks)?; // [rows, pos, d_model]
        let mut ends: Vec<Option<Tensor>> = vec![None; rows];
        let mut running = rows;
        for layer in 0..=n_layers {
            while running > 0 && depths[running - 1] == layer {
                ends[running - 1] = Some(resid.narrow(0, running - 1, 1)?);
                running -= 1;
            }
            if running == 0 {
                break;
            }
            resid = resid.narrow(0, 0, running)?; // [running, pos, d_model]
            resid = self.arch.block_forward(layer, resid, &frame, None, hooks)?;
        }
        // Every depth is at most n_layers, so every row ended in the loop.
        Ok(ends.into_iter().flatten().collect())
    }
}

#[cfg(test)]
mod tests {
    use actpatch_hooks::{BlockSite, CacheFilter, HookPoint};

    use super::*;

    #[test]
    fn rows_end_at_their_block_inputs_of_the_full_pass() {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/tiny-gpt2");
        let model = HookedTransformer::from_dir(dir).unwrap();
        let n_layers = model.dims().n_layers;
        let tokens = model.to_tokens("The Eiffel Tower is in", true).unwrap();
        let points = (0..n_layers).map(|l| HookPoint::block(l, BlockSite::ResidPost));
        let (_, cache) = model
            .run_with_cache(std::slice::from_ref(&tokens), CacheFilter::only(points))
            .unwrap();
        let depths = [n_layers, 1, 1, 0];
        let rows = model.tokens_tensor(&vec![tokens; depths.len()]).unwrap();
        let ends = (model.forward_differentiable_to(&rows, &mut Hooks::none(), &depths)).unwrap();
        assert_eq!(ends.len(), depths.len());
        for (end, depth) in ends.iter().zip(depths) {
            assert_eq!(end.dims()[0], 1);
            if depth == 0 {
                continue; // the embedding: no block ran
            }
            let want = cache
                .get(HookPoint::block(depth - 1, BlockSite::ResidPost))
                .unwrap();
            let gap = (end - want).unwrap().abs().unwrap().max_all().unwrap();
            assert!(gap.to_scalar::<f32>().unwrap() < 1e-4, "depth {depth}");
        }
        for bad in [vec![1, 2, 0, 0], vec![n_layers + 1, 0, 0, 0], vec![1, 0]] {
            assert!(matches!(
                model.forward_differentiable_to(&rows, &mut Hooks::none(), &bad),
                Err(ModelError::Depths { .. })
            ));
        }
    }
}

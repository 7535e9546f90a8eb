//! The hook runtime a model's forward pass calls at every hook point.

use candle_core::Tensor;

use crate::{ActivationCache, CacheFilter, HookError, HookPoint, Patch};

/// What happens at the hook points of one forward pass: which patches apply and
/// which activations are recorded. The model calls [`Hooks::at`] at every point.
///
/// The cache records the value that flows on, i.e. after any patch at that point.
#[derive(Debug, Default)]
pub struct Hooks<'p> {
    patches: &'p [Patch],
    filter: CacheFilter,
    cache: ActivationCache,
}

impl<'p> Hooks<'p> {
    /// No patches, no cache: a plain forward pass.
    pub fn none() -> Self {
        Hooks::default()
    }

    /// Record the activations `filter` selects.
    pub fn caching(filter: CacheFilter) -> Self {
        Hooks {
            filter,
            ..Hooks::default()
        }
    }

    /// Apply `patches` (several hook points may be patched in one pass).
    pub fn patching(patches: &'p [Patch]) -> Self {
        Hooks {
            patches,
            ..Hooks::default()
        }
    }

    /// Apply `patches` and record what `filter` selects.
    pub fn new(patches: &'p [Patch], filter: CacheFilter) -> Self {
        Hooks {
            patches,
            filter,
            cache: ActivationCache::default(),
        }
    }

    /// Passes `activation` through the hook point: applies the patches of this point in
    /// order, records the result if the filter asks for it, and returns it.
    pub fn at(&mut self, point: HookPoint, activation: Tensor) -> Result<Tensor, HookError> {
        let mut activation = activation;
        for patch in self.patches.iter().filter(|p| p.point == point) {
            activation = patch.apply(&activation)?;
        }
        if self.filter.wants(&point) {
            self.cache.insert(point, activation.clone());
        }
        Ok(activation)
    }

    pub fn cache(&self) -> &ActivationCache {
        &self.cache
    }

    pub fn into_cache(self) -> ActivationCache {
        self.cache
    }
}

//! The hook runtime a model's forward pass calls at every hook point.

use candle_core::{Tensor, Var};

use crate::{ActivationCache, CacheFilter, HookError, HookPoint, Patch};

/// What happens at the hook points of one forward pass: which patches apply and
/// which activations are recorded. The model calls [`Hooks::at`] at every point.
///
/// The cache records the value that flows on, i.e. after any patch at that point.
///
/// For gradients (attribution patching), a pass can also add a zero [`Var`] at chosen
/// points ([`Hooks::probing`]): the gradient of a loss with respect to the probe is its
/// gradient with respect to the activation there.
#[derive(Debug, Default)]
pub struct Hooks<'p> {
    patches: &'p [Patch],
    filter: CacheFilter,
    cache: ActivationCache,
    probe: CacheFilter,
    probes: ActivationCache,
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
            ..Hooks::default()
        }
    }

    /// Adds a zero variable at the points `probe` selects (after any patch there); the
    /// variables are kept in [`Hooks::probes`] for `Tensor::backward`'s gradients.
    pub fn probing(mut self, probe: CacheFilter) -> Self {
        self.probe = probe;
        self
    }

    /// The probe variables by hook point.
    pub fn probes(&self) -> &ActivationCache {
        &self.probes
    }

    /// Passes `activation` through the hook point: applies the patches of this point in
    /// order, records the result if the filter asks for it, and returns it.
    pub fn at(&mut self, point: HookPoint, activation: Tensor) -> Result<Tensor, HookError> {
        let mut activation = activation;
        for patch in self.patches.iter().filter(|p| p.point == point) {
            activation = patch.apply(&activation)?;
        }
        let tensor_err = |source| HookError::Tensor {
            name: point.to_string(),
            source: Box::new(source),
        };
        if self.probe.wants(&point) {
            let probe = Var::zeros(activation.shape(), activation.dtype(), activation.device())
                .map_err(tensor_err)?;
            activation = (activation + probe.as_tensor()).map_err(tensor_err)?;
            self.probes.insert(point, probe.as_tensor().clone());
        }
        if self.filter.wants(&point) {
            self.cache.insert(point, activation.clone());
        }
        Ok(activation)
    }

    /// Whether [`Hooks::at`] does anything at `point` (patch, record or probe). A model may compute past a point that nothing touches without
    /// materializing its value (fused kernels).
    pub fn touches(&self, point: HookPoint) -> bool {
        self.alters(point) || self.filter.wants(&point)
    }

    /// Whether [`Hooks::at`] may change the value flowing through `point` or its
    /// gradient (a patch or a probe), rather than only record it.
    pub fn alters(&self, point: HookPoint) -> bool {
        self.patches.iter().any(|p| p.point == point) || self.probe.wants(&point)
    }

    /// Whether [`Hooks::at`] does nothing at any point (no patch, record or probe): a
    /// model may then skip what no output of its pass reads.
    pub fn is_idle(&self) -> bool {
        self.patches.is_empty() && self.filter.is_nothing() && self.probe.is_nothing()
    }

    pub fn cache(&self) -> &ActivationCache {
        &self.cache
    }

    pub fn into_cache(self) -> ActivationCache {
        self.cache
    }

    /// The recorded activations and the probe variables.
    pub fn into_cache_and_probes(self) -> (ActivationCache, ActivationCache) {
        (self.cache, self.probes)
    }
}

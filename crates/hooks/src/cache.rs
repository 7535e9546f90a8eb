//! Activations recorded during a forward pass, keyed by hook point.

use std::collections::{BTreeMap, BTreeSet};

use candle_core::Tensor;

use crate::{HookError, HookPoint};

/// Which hook points a run records. A sweep caches only what it patches from.
#[derive(Debug, Clone, Default)]
pub enum CacheFilter {
    /// Record nothing (a plain or patched run).
    #[default]
    Nothing,
    /// Record every hook point.
    All,
    /// Record these hook points only.
    Only(BTreeSet<HookPoint>),
}

impl CacheFilter {
    pub fn only(points: impl IntoIterator<Item = HookPoint>) -> Self {
        CacheFilter::Only(points.into_iter().collect())
    }

    /// Whether this filter records no hook point.
    pub fn is_nothing(&self) -> bool {
        match self {
            CacheFilter::Nothing => true,
            CacheFilter::All => false,
            CacheFilter::Only(points) => points.is_empty(),
        }
    }

    pub fn wants(&self, point: &HookPoint) -> bool {
        match self {
            CacheFilter::Nothing => false,
            CacheFilter::All => true,
            CacheFilter::Only(points) => points.contains(point),
        }
    }
}

/// Activations of one run, with the shapes the model produced them in
/// (batch axis kept: `[batch, pos, d_model]` for the residual stream).
#[derive(Debug, Clone, Default)]
pub struct ActivationCache {
    activations: BTreeMap<HookPoint, Tensor>,
}

impl ActivationCache {
    pub fn insert(&mut self, point: HookPoint, activation: Tensor) {
        self.activations.insert(point, activation);
    }

    /// The activation at `point`, or an error naming what is cached.
    pub fn get(&self, point: HookPoint) -> Result<&Tensor, HookError> {
        self.activations
            .get(&point)
            .ok_or_else(|| HookError::NotCached {
                name: point.to_string(),
                cached: if self.activations.is_empty() {
                    "nothing".to_string()
                } else {
                    self.activations
                        .keys()
                        .map(|p| p.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                },
            })
    }

    pub fn contains(&self, point: HookPoint) -> bool {
        self.activations.contains_key(&point)
    }

    pub fn len(&self) -> usize {
        self.activations.len()
    }

    pub fn is_empty(&self) -> bool {
        self.activations.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&HookPoint, &Tensor)> {
        self.activations.iter()
    }
}

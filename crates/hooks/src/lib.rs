//! Hook points, activation caches and patches for hooked transformers.
//!
//! Names and semantics follow TransformerLens: a [`HookPoint`] prints as
//! `blocks.3.hook_resid_pre`; a model calls [`Hooks::at`] at each point of its forward
//! pass, which applies the [`Patch`]es of that point and records the activation in an
//! [`ActivationCache`] when the [`CacheFilter`] asks for it.
//!
//! ```
//! use actpatch_hooks::{HookPoint, BlockSite};
//! let point: HookPoint = "blocks.3.attn.hook_z".parse().unwrap();
//! assert_eq!(point, HookPoint::block(3, BlockSite::Z));
//! assert_eq!(point.to_string(), "blocks.3.attn.hook_z");
//! ```

mod cache;
mod error;
mod patch;
mod point;
mod run;

pub use cache::{ActivationCache, CacheFilter};
pub use error::HookError;
pub use patch::{Cell, Patch, PatchTarget, PatchValue, Selection};
pub use point::{BlockSite, HookPoint, HookSpace, Layout};
pub use run::Hooks;

//! `actpatch.Model`: a hooked transformer in Python, with TransformerLens's habits
//! (`to_tokens`, `run_with_cache` keyed by hook names) and one-pair patching grids
//! equal to the command line's cells.

use std::path::Path;
use std::sync::Arc;

use actpatch_hooks::{CacheFilter, HookPoint};
use actpatch_model::{DeviceSpec, HookedTransformer, ModelSource};
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::patch::{patch_grid, PatchRequest};
use crate::{arrays, errors, worker};

/// A language model with TransformerLens's hook points, loaded by
/// `actpatch.load_model`.
///
/// Prompts are tokenized with BOS prepended, as TransformerLens's `to_tokens`.
/// Activations come back as float32 numpy arrays with a batch axis of 1, keyed by
/// hook names (`blocks.3.hook_resid_pre`, `blocks.0.attn.hook_pattern`, …).
#[pyclass(module = "actpatch", name = "Model", frozen)]
pub struct Model {
    pub(crate) inner: Arc<HookedTransformer>,
}

/// Loads a model: a local folder (Hugging Face layout), a `.gguf` file, or a hub id.
///
/// `path_or_id` is read as a local path when it exists, else as a Hugging Face hub id
/// (`gpt2`, `HuggingFaceTB/SmolLM2-135M-Instruct`; `HF_HUB_OFFLINE=1` uses the cache
/// only). `device` is `cpu` or `cuda:N` (a CUDA build). The GIL is released while the
/// weights load.
#[pyfunction]
#[pyo3(signature = (path_or_id, device = "cpu", revision = None))]
pub fn load_model(
    py: Python<'_>,
    path_or_id: &str,
    device: &str,
    revision: Option<String>,
) -> PyResult<Model> {
    let device: DeviceSpec = device.parse().map_err(errors::model)?;
    let source = match Path::new(path_or_id).exists() {
        true => ModelSource::Local(path_or_id.into()),
        false if path_or_id.ends_with(".gguf") || path_or_id.starts_with('.') => {
            return Err(errors::bad_input(format!(
                "no model file or folder at {path_or_id}: check the path (relative to the \
                 working directory {})",
                std::env::current_dir()
                    .map(|d| d.display().to_string())
                    .unwrap_or_default()
            )))
        }
        false => ModelSource::Hub {
            id: path_or_id.to_string(),
            revision,
        },
    };
    let model = worker::run_released(py, move || {
        HookedTransformer::load(&source, device).map_err(errors::model)
    })?;
    Ok(Model {
        inner: Arc::new(model),
    })
}

#[pymethods]
impl Model {
    /// The model's dimensions, as TransformerLens's `cfg`: `n_layers`, `d_model`,
    /// `n_heads`, `n_kv_heads`, `d_head`, `d_mlp`, `n_ctx`, `d_vocab`, `architecture`.
    #[getter]
    fn cfg<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let dims = self.inner.dims();
        let cfg = PyDict::new(py);
        cfg.set_item("architecture", dims.arch.name())?;
        cfg.set_item("n_layers", dims.n_layers)?;
        cfg.set_item("d_model", dims.d_model)?;
        cfg.set_item("n_heads", dims.n_heads)?;
        cfg.set_item("n_kv_heads", dims.n_kv_heads)?;
        cfg.set_item("d_head", dims.d_head)?;
        cfg.set_item("d_mlp", dims.d_mlp)?;
        cfg.set_item("n_ctx", dims.n_ctx)?;
        cfg.set_item("d_vocab", dims.d_vocab)?;
        Ok(cfg)
    }

    /// Every hook name of the model, in forward order.
    #[getter]
    fn hook_names(&self) -> Vec<String> {
        let space = self.inner.hook_space();
        space.all().iter().map(|p| p.to_string()).collect()
    }

    fn __repr__(&self) -> String {
        let dims = self.inner.dims();
        format!(
            "Model({}: {} layers, {} heads, d_model {}, from {})",
            dims.arch.name(),
            dims.n_layers,
            dims.n_heads,
            dims.d_model,
            self.inner.source()
        )
    }

    /// Token ids of `text`, int64 `[1, pos]`, BOS prepended unless `prepend_bos=False`.
    #[pyo3(signature = (text, prepend_bos = true))]
    fn to_tokens<'py>(
        &self,
        py: Python<'py>,
        text: &str,
        prepend_bos: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        let ids = self.tokens(text, prepend_bos)?;
        arrays::i64_array(py, &ids, &[1, ids.len()])
    }

    /// The tokens of `text` as strings (BOS first unless `prepend_bos=False`).
    #[pyo3(signature = (text, prepend_bos = true))]
    fn to_str_tokens(&self, text: &str, prepend_bos: bool) -> PyResult<Vec<String>> {
        let ids = self.tokens(text, prepend_bos)?;
        Ok(self.inner.to_str_tokens(&ids))
    }

    /// The id of `text`, which must be exactly one token (e.g. `" Paris"`).
    fn to_single_token(&self, text: &str) -> PyResult<u32> {
        self.inner.to_single_token(text).map_err(errors::model)
    }

    /// Runs `prompt` and returns `(logits, cache)`: logits float32 `[1, pos, d_vocab]`
    /// and a dict of activations keyed by hook name, each with a batch axis of 1
    /// (`[1, pos, d_model]`, `[1, pos, n_heads, d_head]`, `[1, n_heads, pos, pos]`).
    ///
    /// `names` restricts the cache to those hooks (faster, less memory); `None`
    /// caches every hook of `hook_names`.
    #[pyo3(signature = (prompt, names = None, prepend_bos = true))]
    fn run_with_cache<'py>(
        &self,
        py: Python<'py>,
        prompt: &str,
        names: Option<Vec<String>>,
        prepend_bos: bool,
    ) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyDict>)> {
        let ids = self.tokens(prompt, prepend_bos)?;
        let space = self.inner.hook_space();
        let (filter, order) = match names {
            None => (CacheFilter::All, space.all()),
            Some(names) => {
                let points = (names.iter())
                    .map(|name| HookPoint::parse_in(name, &space))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| errors::bad_input(e.to_string()))?;
                (CacheFilter::only(points.clone()), points)
            }
        };
        let model = Arc::clone(&self.inner);
        let (logits, cache) = worker::run_released(py, move || {
            model.run_with_cache(&[ids], filter).map_err(errors::model)
        })?;
        let activations = PyDict::new(py);
        for point in order {
            if let Ok(tensor) = cache.get(point) {
                activations.set_item(point.to_string(), arrays::f32_array(py, tensor)?)?;
            }
        }
        Ok((arrays::f32_array(py, &logits)?, activations))
    }

    /// The pair's unpatched logit differences, logit(correct) − logit(incorrect) at the
    /// last position: `{"clean_logit_diff": …, "corrupted_logit_diff": …}`.
    fn baselines<'py>(
        &self,
        py: Python<'py>,
        clean: &str,
        corrupted: &str,
        answers: (String, String),
    ) -> PyResult<Bound<'py, PyDict>> {
        let model = Arc::clone(&self.inner);
        let (clean, corrupted) = (clean.to_string(), corrupted.to_string());
        let baselines = worker::run_released(py, move || {
            let pair = actpatch_patching::Pair::from_prompts(
                &model,
                &clean,
                &corrupted,
                [&answers.0, &answers.1],
                actpatch_patching::Align::Strict,
            )
            .map_err(errors::patching)?;
            pair.baselines(&model).map_err(errors::patching)
        })?;
        let out = PyDict::new(py);
        out.set_item("clean_logit_diff", baselines.clean_logit_diff)?;
        out.set_item("corrupted_logit_diff", baselines.corrupted_logit_diff)?;
        Ok(out)
    }

    /// Patches one kind over every cell of one pair and returns the grid of `metric`,
    /// the same numbers as the command line's cells for that pair.
    ///
    /// `kind`: `resid_pre`, `resid_mid`, `resid_post`, `attn_out`, `mlp_out`,
    /// `head_out`, `head_out_by_pos`, `head_pattern`, `head_q`/`head_k`/`head_v`… (as in
    /// experiment files). `direction`: `denoising` (clean activations into the corrupted
    /// run) or `noising`. `metric`: `logit_diff`, `normalized_logit_diff` (0 corrupted,
    /// 1 clean, TransformerLens's), `logprob_diff`, `prob_correct` or `kl_div`.
    ///
    /// The grid is float32, `[n_layers, pos]` for position kinds, `[n_layers, n_heads]`
    /// for head kinds over all positions, `[n_layers, pos, n_heads]` by position (as
    /// TransformerLens; key/value kinds have the key/value heads), and
    /// `[n_layers, n_heads, dest, src]` for pattern entries (NaN above the diagonal and
    /// wherever no cell was patched), over the target run's positions. `positions`
    /// restricts the patched positions. `align`: `strict` (equal token lengths),
    /// `start` or `end` (prompts of different lengths, as experiment files' `align`).
    /// Ctrl-C stops it after the batch under way.
    #[pyo3(signature = (clean, corrupted, answers, kind = "resid_pre", metric = "logit_diff",
                        direction = "denoising", positions = None, align = "strict",
                        max_batch_mib = 1024))]
    #[allow(clippy::too_many_arguments)]
    fn patch<'py>(
        &self,
        py: Python<'py>,
        clean: &str,
        corrupted: &str,
        answers: (String, String),
        kind: &str,
        metric: &str,
        direction: &str,
        positions: Option<Vec<usize>>,
        align: &str,
        max_batch_mib: usize,
    ) -> PyResult<Bound<'py, PyAny>> {
        let request = PatchRequest::parse(kind, metric, direction, align)?;
        let prompts = [clean.to_string(), corrupted.to_string()];
        let grid = patch_grid(
            py,
            &self.inner,
            (&prompts, [&answers.0, &answers.1]),
            request,
            (positions, max_batch_mib),
        )?;
        arrays::f32_array_from(py, &grid.values, &grid.shape)
    }
}

impl Model {
    fn tokens(&self, text: &str, prepend_bos: bool) -> PyResult<Vec<u32>> {
        self.inner
            .to_tokens(text, prepend_bos)
            .map_err(errors::model)
    }
}

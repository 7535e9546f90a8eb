//! Checkpoint tensors: safetensors files (one or several shards, memory-mapped), or
//! tensors already in memory (a dequantized GGUF file), with errors that name the file,
//! the tensor and both shapes.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device, Tensor};

use crate::{ModelError, Result};

/// The tensors of a checkpoint, loaded on demand as f32 on one device.
pub struct WeightStore {
    files: Vec<(PathBuf, MmapedSafetensors)>,
    /// Tensor name → index into `files`.
    index: HashMap<String, usize>,
    /// Tensors given in memory, under Hugging Face names, with the file they came from.
    loaded: Option<(PathBuf, HashMap<String, Tensor>)>,
    device: Device,
    /// Architecture name for error messages.
    arch: &'static str,
    /// Prefix every lookup tries first (`transformer.` in GPT2LMHeadModel checkpoints).
    prefix: String,
}

impl WeightStore {
    pub fn open(paths: &[PathBuf], device: &Device, arch: &'static str) -> Result<Self> {
        let mut files = Vec::with_capacity(paths.len());
        let mut index = HashMap::new();
        for (i, path) in paths.iter().enumerate() {
            if !path.is_file() {
                return Err(ModelError::Io {
                    path: path.clone(),
                    source: std::io::Error::new(
                        std::io::ErrorKind::NotFound,
                        "weights file missing",
                    ),
                });
            }
            // SAFETY: the file is memory-mapped read-only; like every safetensors reader
            // we assume nobody truncates it while the model loads.
            let st = unsafe { MmapedSafetensors::new(path) }.map_err(|e| ModelError::Weights {
                file: path.clone(),
                reason: e.to_string(),
            })?;
            for (name, _) in st.tensors() {
                index.insert(name, i);
            }
            files.push((path.clone(), st));
        }
        Ok(WeightStore {
            files,
            index,
            loaded: None,
            device: device.clone(),
            arch,
            prefix: String::new(),
        })
    }

    /// A store of tensors already in memory (e.g. dequantized from the GGUF `file`),
    /// named as in a Hugging Face checkpoint; they are moved to `device` as f32.
    pub fn from_tensors(
        file: PathBuf,
        tensors: HashMap<String, Tensor>,
        device: &Device,
        arch: &'static str,
    ) -> Self {
        WeightStore {
            files: Vec::new(),
            index: HashMap::new(),
            loaded: Some((file, tensors)),
            device: device.clone(),
            arch,
            prefix: String::new(),
        }
    }

    /// Looks names up under `prefix` when the checkpoint uses it (e.g. `transformer.`).
    pub fn with_prefix_if_present(mut self, prefix: &str, probe: &str) -> Self {
        if self.index.contains_key(&format!("{prefix}{probe}")) {
            self.prefix = prefix.to_string();
        }
        self
    }

    fn first_file(&self) -> PathBuf {
        self.files
            .first()
            .map(|(p, _)| p.clone())
            .unwrap_or_default()
    }

    /// Loads `name` as f32, checking it has `shape`.
    pub fn get(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        if let Some((file, tensors)) = &self.loaded {
            return self.get_loaded(file, tensors, name, shape);
        }
        let prefixed = format!("{}{name}", self.prefix);
        let (full, file_idx) = match self.index.get(&prefixed) {
            Some(i) => (prefixed, *i),
            None => match self.index.get(name) {
                Some(i) => (name.to_string(), *i),
                None => {
                    return Err(ModelError::MissingTensor {
                        file: self.first_file(),
                        tensor: prefixed,
                        arch: self.arch,
                    })
                }
            },
        };
        let (path, st) = &self.files[file_idx];
        let weights_err = |e: candle_core::Error| ModelError::Weights {
            file: path.clone(),
            reason: e.to_string(),
        };
        let found = st.get(&full).map_err(weights_err)?.shape().to_vec();
        if found != shape {
            return Err(ModelError::TensorShape {
                file: path.clone(),
                tensor: full,
                expected: shape.to_vec(),
                found,
            });
        }
        st.load(&full, &self.device)
            .and_then(|t| t.to_dtype(DType::F32))
            .map_err(weights_err)
    }

    fn get_loaded(
        &self,
        file: &Path,
        tensors: &HashMap<String, Tensor>,
        name: &str,
        shape: &[usize],
    ) -> Result<Tensor> {
        let tensor = tensors.get(name).ok_or_else(|| ModelError::MissingTensor {
            file: file.to_path_buf(),
            tensor: name.to_string(),
            arch: self.arch,
        })?;
        if tensor.dims() != shape {
            return Err(ModelError::TensorShape {
                file: file.to_path_buf(),
                tensor: name.to_string(),
                expected: shape.to_vec(),
                found: tensor.dims().to_vec(),
            });
        }
        Ok(tensor.to_dtype(DType::F32)?.to_device(&self.device)?)
    }
}

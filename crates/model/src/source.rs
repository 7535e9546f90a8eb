//! Where a model comes from: a Hugging Face hub id (through `hf-hub`, honouring
//! `HF_HOME` and `HF_HUB_OFFLINE`), a local folder in Hugging Face layout, or a local
//! llama.cpp `.gguf` file.

use std::fmt;
use std::path::{Path, PathBuf};

use hf_hub::{Cache, Repo, RepoType};

use crate::{ModelError, Result};

/// A model to load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSource {
    /// A hub id such as `gpt2` or `openai-community/gpt2-medium`, at a revision
    /// (branch, tag or commit; default `main`).
    Hub {
        id: String,
        revision: Option<String>,
    },
    /// A folder with `config.json`, `model.safetensors` (or a sharded index) and
    /// `tokenizer.json` (or `vocab.json` + `merges.txt`); or a `.gguf` file, which
    /// holds all three.
    Local(PathBuf),
}

impl fmt::Display for ModelSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ModelSource::Hub { id, revision: None } => f.write_str(id),
            ModelSource::Hub {
                id,
                revision: Some(rev),
            } => write!(f, "{id}@{rev}"),
            ModelSource::Local(dir) => write!(f, "{}", dir.display()),
        }
    }
}

/// The tokenizer's files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenizerFiles {
    Json(PathBuf),
    VocabMerges {
        vocab: PathBuf,
        merges: PathBuf,
    },
    /// The `tokenizer.ggml.*` metadata of a GGUF file.
    Gguf(PathBuf),
}

/// A model's files on disk, after any download. For a GGUF model all three are the
/// one `.gguf` file.
#[derive(Debug, Clone)]
pub struct ModelFiles {
    pub config: PathBuf,
    /// One file, or the shards of a sharded checkpoint.
    pub weights: Vec<PathBuf>,
    pub tokenizer: TokenizerFiles,
}

impl ModelFiles {
    /// The model's one GGUF file, when it is a GGUF model.
    pub fn gguf(&self) -> Option<&Path> {
        match &self.tokenizer {
            TokenizerFiles::Gguf(path) => Some(path),
            _ => None,
        }
    }
}

/// TransformerLens's short names and the bare GPT-2 ids, as the hub's canonical ids.
pub fn canonical_hub_id(id: &str) -> String {
    match id {
        "gpt2" | "gpt2-small" => "openai-community/gpt2".into(),
        "gpt2-medium" | "gpt2-large" | "gpt2-xl" => format!("openai-community/{id}"),
        other => other.to_string(),
    }
}

impl ModelSource {
    /// Finds (downloading if needed) the files of the model.
    pub fn resolve(&self) -> Result<ModelFiles> {
        match self {
            ModelSource::Local(dir) => resolve_local(dir),
            ModelSource::Hub { id, revision } => {
                HubFetcher::new(id, revision.as_deref())?.resolve()
            }
        }
    }
}

/// The one real model the repository fetches for offline use (`just fetch-smollm2`).
const SMOLLM2_GGUF: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

fn is_gguf(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("gguf"))
}

fn resolve_local(dir: &Path) -> Result<ModelFiles> {
    if dir.is_file() && is_gguf(dir) {
        return Ok(ModelFiles {
            config: dir.to_path_buf(),
            weights: vec![dir.to_path_buf()],
            tokenizer: TokenizerFiles::Gguf(dir.to_path_buf()),
        });
    }
    if !dir.is_dir() {
        let reason = if dir.is_file() {
            "this is a file, not a folder; give a folder holding config.json, model.safetensors and tokenizer.json, or a .gguf file"
        } else if dir.file_name().is_some_and(|name| name == SMOLLM2_GGUF) {
            "no such GGUF file; `just fetch-smollm2` (scripts/fetch-smollm2.sh [DIR]) downloads it into models/ (or DIR), and `just run` does so by itself"
        } else if is_gguf(dir) {
            "no such GGUF file; check the path (a relative path is relative to the experiment file's folder)"
        } else {
            "no such folder; give a folder holding config.json, model.safetensors and tokenizer.json, or a .gguf file"
        };
        return Err(ModelError::Io {
            path: dir.to_path_buf(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, reason),
        });
    }
    let missing = |file: &str, hint: &str| ModelError::MissingFile {
        dir: dir.to_path_buf(),
        file: file.to_string(),
        hint: hint.to_string(),
    };
    let config = dir.join("config.json");
    if !config.is_file() {
        return Err(missing(
            "config.json",
            "A Hugging Face model folder needs config.json (the model's hyper-parameters), as `save_pretrained` writes it.",
        ));
    }
    let weights = if dir.join("model.safetensors").is_file() {
        vec![dir.join("model.safetensors")]
    } else if dir.join("model.safetensors.index.json").is_file() {
        shards_of(&dir.join("model.safetensors.index.json"))?
    } else {
        return Err(missing(
            "model.safetensors",
            "Weights must be safetensors (model.safetensors, or shards listed in model.safetensors.index.json); convert a pytorch_model.bin with `save_pretrained(..., safe_serialization=True)`.",
        ));
    };
    let tokenizer = if dir.join("tokenizer.json").is_file() {
        TokenizerFiles::Json(dir.join("tokenizer.json"))
    } else if dir.join("vocab.json").is_file() && dir.join("merges.txt").is_file() {
        TokenizerFiles::VocabMerges {
            vocab: dir.join("vocab.json"),
            merges: dir.join("merges.txt"),
        }
    } else {
        return Err(missing(
            "tokenizer.json",
            "Give tokenizer.json, or GPT-2's vocab.json and merges.txt.",
        ));
    };
    Ok(ModelFiles {
        config,
        weights,
        tokenizer,
    })
}

/// The shard files named by a `model.safetensors.index.json`, in order, without repeats.
fn shards_of(index: &Path) -> Result<Vec<PathBuf>> {
    let text = std::fs::read_to_string(index).map_err(|source| ModelError::Io {
        path: index.to_path_buf(),
        source,
    })?;
    let parsed: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| ModelError::Config {
            path: index.to_path_buf(),
            reason: e.to_string(),
        })?;
    let map = parsed
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| ModelError::Config {
            path: index.to_path_buf(),
            reason: "no `weight_map` object".into(),
        })?;
    let dir = index.parent().unwrap_or(Path::new("."));
    let mut shards: Vec<PathBuf> = Vec::new();
    for file in map.values().filter_map(|v| v.as_str()) {
        let path = dir.join(file);
        if !shards.contains(&path) {
            shards.push(path);
        }
    }
    shards.sort();
    Ok(shards)
}

fn hub_offline() -> bool {
    std::env::var("HF_HUB_OFFLINE")
        .map(|v| {
            matches!(
                v.trim().to_ascii_lowercase().as_str(),
                "1" | "true" | "yes" | "on"
            )
        })
        .unwrap_or(false)
}

/// Fetches files of one hub repository, from the cache when offline.
struct HubFetcher {
    id: String,
    repo: Repo,
    cache: Cache,
    api: Option<hf_hub::api::sync::ApiRepo>,
}

impl HubFetcher {
    fn new(id: &str, revision: Option<&str>) -> Result<Self> {
        let canonical = canonical_hub_id(id);
        let repo = Repo::with_revision(
            canonical,
            RepoType::Model,
            revision.unwrap_or("main").to_string(),
        );
        let cache = Cache::from_env();
        let api = if hub_offline() {
            None
        } else {
            let api = hf_hub::api::sync::ApiBuilder::from_env()
                .with_progress(true)
                .build()
                .map_err(|e| ModelError::HubUnreachable {
                    model: id.to_string(),
                    file: "config.json".into(),
                    reason: e.to_string(),
                    cache: cache.path().clone(),
                })?;
            Some(api.repo(repo.clone()))
        };
        Ok(HubFetcher {
            id: id.to_string(),
            repo,
            cache,
            api,
        })
    }

    fn get(&self, file: &str) -> Result<PathBuf> {
        match &self.api {
            None => self.cache.repo(self.repo.clone()).get(file).ok_or_else(|| {
                ModelError::NotInHubCache {
                    model: self.id.clone(),
                    file: file.to_string(),
                    cache: self.cache.path().clone(),
                }
            }),
            Some(api) => api.get(file).map_err(|e| ModelError::HubUnreachable {
                model: self.id.clone(),
                file: file.to_string(),
                reason: e.to_string(),
                cache: self.cache.path().clone(),
            }),
        }
    }

    fn resolve(&self) -> Result<ModelFiles> {
        let config = self.get("config.json")?;
        let weights = match self.get("model.safetensors") {
            Ok(file) => vec![file],
            Err(single_err) => match self.get("model.safetensors.index.json") {
                Ok(index) => {
                    let names: Vec<String> = shards_of(&index)?
                        .iter()
                        .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
                        .collect();
                    names.iter().map(|n| self.get(n)).collect::<Result<_>>()?
                }
                Err(_) => return Err(single_err),
            },
        };
        let tokenizer = match self.get("tokenizer.json") {
            Ok(file) => TokenizerFiles::Json(file),
            Err(json_err) => match (self.get("vocab.json"), self.get("merges.txt")) {
                (Ok(vocab), Ok(merges)) => TokenizerFiles::VocabMerges { vocab, merges },
                _ => return Err(json_err),
            },
        };
        Ok(ModelFiles {
            config,
            weights,
            tokenizer,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_gpt2_names_map_to_canonical_ids() {
        assert_eq!(canonical_hub_id("gpt2-small"), "openai-community/gpt2");
        assert_eq!(canonical_hub_id("gpt2-xl"), "openai-community/gpt2-xl");
        assert_eq!(
            canonical_hub_id("HuggingFaceTB/SmolLM2-135M"),
            "HuggingFaceTB/SmolLM2-135M"
        );
    }

    #[test]
    fn folder_without_config_names_the_file() {
        let dir = std::env::temp_dir().join(format!("actpatch-empty-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let err = resolve_local(&dir).unwrap_err().to_string();
        assert!(err.contains("config.json"), "{err}");
        std::fs::remove_dir_all(&dir).ok();
    }
}

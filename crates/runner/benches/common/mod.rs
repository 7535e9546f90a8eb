//! What both benches share: a random-weight GPT-2 with gpt2-small's shapes (12
//! layers, d_model 768, 12 heads, vocabulary 50257), written by a child process so its
//! construction does not count in the bench's peak memory, the peak-memory probe, and
//! the matmul peak the achieved GFLOP/s are measured against.

#![allow(dead_code)] // each bench uses its own part

use std::path::{Path, PathBuf};
use std::time::Instant;

use actpatch_model::{DeviceSpec, HookedTransformer, ModelSource};
use candle_core::{DType, Device, Tensor};

pub const D_MODEL: usize = 768;
pub const N_LAYERS: usize = 12;
pub const N_HEADS: usize = 12;
pub const D_MLP: usize = 3072;
pub const D_VOCAB: usize = 50257;
pub const N_CTX: usize = 1024;

pub type BoxError = Box<dyn std::error::Error>;

/// `shape` of independent N(0, std²) draws, the same on every run (a seeded ChaCha8
/// stream, Box–Muller).
fn seeded_normal(
    rng: &mut rand_chacha::ChaCha8Rng,
    std: f32,
    shape: &[usize],
) -> Result<Tensor, BoxError> {
    use rand::Rng;
    let n: usize = shape.iter().product();
    let mut values = Vec::with_capacity(n + 1);
    while values.len() < n {
        let u1: f32 = rng.gen_range(f32::EPSILON..1.0);
        let u2: f32 = rng.gen();
        let radius = (-2.0 * u1.ln()).sqrt() * std;
        let angle = std::f32::consts::TAU * u2;
        values.extend([radius * angle.cos(), radius * angle.sin()]);
    }
    values.truncate(n);
    Ok(Tensor::from_vec(values, shape, &Device::Cpu)?)
}

/// Writes a random GPT-2 small (config, safetensors, the real GPT-2 tokenizer); the
/// weights are the same on every run. Seed 6 gives both bench pairs a clean − corrupted
/// logit difference near 1 (0.99 and 0.94), so that normalized values do not amplify
/// rounding (other seeds give as little as 0.03).
pub fn random_gpt2(dir: &Path) -> Result<(), BoxError> {
    std::fs::create_dir_all(dir)?;
    let config = serde_json::json!({
        "model_type": "gpt2", "architectures": ["GPT2LMHeadModel"],
        "vocab_size": D_VOCAB, "n_positions": N_CTX, "n_embd": D_MODEL, "n_layer": N_LAYERS,
        "n_head": N_HEADS, "n_inner": null, "activation_function": "gelu_new",
        "layer_norm_epsilon": 1e-5, "bos_token_id": 50256, "eos_token_id": 50256,
    });
    std::fs::write(
        dir.join("config.json"),
        serde_json::to_string_pretty(&config)?,
    )?;
    std::fs::copy(fixture_tokenizer()?, dir.join("tokenizer.json"))?;
    let dev = Device::Cpu;
    let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(6);
    let mut randn = |shape: &[usize]| seeded_normal(&mut rng, 0.02, shape);
    let mut tensors = std::collections::HashMap::new();
    tensors.insert("wte.weight".to_string(), randn(&[D_VOCAB, D_MODEL])?);
    tensors.insert("wpe.weight".to_string(), randn(&[N_CTX, D_MODEL])?);
    for (name, value) in [("ln_f.weight", 1.0f32), ("ln_f.bias", 0.0)] {
        tensors.insert(name.to_string(), Tensor::full(value, D_MODEL, &dev)?);
    }
    for l in 0..N_LAYERS {
        let p = |s: &str| format!("h.{l}.{s}");
        for ln in ["ln_1", "ln_2"] {
            tensors.insert(
                p(&format!("{ln}.weight")),
                Tensor::ones(D_MODEL, DType::F32, &dev)?,
            );
            tensors.insert(
                p(&format!("{ln}.bias")),
                Tensor::zeros(D_MODEL, DType::F32, &dev)?,
            );
        }
        for (name, d_in, d_out) in [
            ("attn.c_attn", D_MODEL, 3 * D_MODEL),
            ("attn.c_proj", D_MODEL, D_MODEL),
            ("mlp.c_fc", D_MODEL, D_MLP),
            ("mlp.c_proj", D_MLP, D_MODEL),
        ] {
            tensors.insert(p(&format!("{name}.weight")), randn(&[d_in, d_out])?);
            tensors.insert(p(&format!("{name}.bias")), randn(&[d_out])?);
        }
    }
    candle_core::safetensors::save(&tensors, dir.join("model.safetensors"))?;
    Ok(())
}

/// The real GPT-2 tokenizer of the tiny fixture: under the source tree this bench was
/// built from, else under the current folder (a bench executable carried to another
/// machine, run from a checkout's root).
pub fn fixture_tokenizer() -> Result<PathBuf, BoxError> {
    let relative = "tests/fixtures/tiny-gpt2/tokenizer.json";
    let candidates = [
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../..")
            .join(relative),
        PathBuf::from(relative),
    ];
    candidates.into_iter().find(|p| p.is_file()).ok_or_else(|| {
        format!("{relative} not found: run the bench from the repository's root").into()
    })
}

/// Peak resident memory of this process so far, in MiB.
pub fn peak_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .map(String::from)
        })
        .and_then(|l| {
            l.split_whitespace()
                .nth(1)
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

/// Resets the peak-memory counter (Linux), so each phase reports its own peak.
pub fn reset_peak() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// The random model of the `--write-model` child process, loaded on `device`
/// (`args[0]` is the bench executable). Returns the model and its folder.
pub fn load_random_gpt2(
    args: &[String],
    device: DeviceSpec,
) -> Result<(HookedTransformer, PathBuf), BoxError> {
    let dir =
        std::env::temp_dir().join(format!("actpatch-bench-gpt2-small-{}", std::process::id()));
    println!(
        "building a random-weight GPT-2 small in {} …",
        dir.display()
    );
    let status = std::process::Command::new(&args[0])
        .arg("--write-model")
        .arg(&dir)
        .status()?;
    if !status.success() {
        return Err("could not write the random model".into());
    }
    let model = HookedTransformer::load(&ModelSource::Local(dir.clone()), device)?;
    Ok((model, dir))
}

/// `--write-model DIR` (the child process's job), `--device`, `--quick`, `--fast-only`,
/// `--attribution-only`.
pub struct BenchArgs {
    pub write_model: Option<PathBuf>,
    pub device: DeviceSpec,
    pub quick: bool,
    pub fast_only: bool,
    /// The sweeps bench's attribution part alone (for profiling it).
    pub attribution_only: bool,
}

impl BenchArgs {
    pub fn parse(args: &[String]) -> Result<Self, BoxError> {
        let value = |flag: &str| args.iter().position(|a| a == flag).map(|i| args.get(i + 1));
        let write_model = match value("--write-model") {
            Some(dir) => Some(Path::new(dir.ok_or("--write-model DIR")?).to_path_buf()),
            None => None,
        };
        let device = match value("--device") {
            Some(d) => d.ok_or("--device cpu|cuda:N")?.parse()?,
            None => DeviceSpec::Cpu,
        };
        Ok(BenchArgs {
            write_model,
            device,
            quick: args.iter().any(|a| a == "--quick"),
            fast_only: args.iter().any(|a| a == "--fast-only"),
            attribution_only: args.iter().any(|a| a == "--attribution-only"),
        })
    }
}

/// GFLOP/s of a large f32 matmul on `device`, best of a few.
pub fn matmul_peak(device: &Device) -> Result<f64, BoxError> {
    let (m, k, n) = (1024, 768, 3072);
    let a = Tensor::randn(0f32, 1.0, (m, k), device)?;
    let b = Tensor::randn(0f32, 1.0, (k, n), device)?;
    let mut best = 0.0f64;
    for _ in 0..8 {
        let t = Instant::now();
        let c = a.matmul(&b)?;
        let _ = c.sum_all()?.to_scalar::<f32>()?;
        best = best.max(2.0 * (m * k * n) as f64 / t.elapsed().as_secs_f64() / 1e9);
    }
    Ok(best)
}

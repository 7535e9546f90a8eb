//! A checkpoint split into shards (`model.safetensors.index.json`), as `save_pretrained`
//! writes large models, loads to the same model as the single file.

use crate::common;

use std::collections::HashMap;

use actpatch_model::HookedTransformer;
use candle_core::Device;
use common::{fixture, max_abs_diff};

#[test]
fn sharded_checkpoint_equals_the_single_file() {
    let dir = std::env::temp_dir().join(format!("actpatch-sharded-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for file in ["config.json", "tokenizer.json"] {
        std::fs::copy(fixture("tiny-gpt2").join(file), dir.join(file)).unwrap();
    }
    let weights = candle_core::safetensors::load(
        fixture("tiny-gpt2").join("model.safetensors"),
        &Device::Cpu,
    )
    .unwrap();
    let mut shards: [HashMap<String, candle_core::Tensor>; 2] = [HashMap::new(), HashMap::new()];
    let mut weight_map = serde_json::Map::new();
    for (i, (name, tensor)) in weights.into_iter().enumerate() {
        let shard = i % 2;
        let file = format!("model-0000{}-of-00002.safetensors", shard + 1);
        weight_map.insert(name.clone(), serde_json::Value::String(file));
        shards[shard].insert(name, tensor);
    }
    for (shard, tensors) in shards.iter().enumerate() {
        candle_core::safetensors::save(
            tensors,
            dir.join(format!("model-0000{}-of-00002.safetensors", shard + 1)),
        )
        .unwrap();
    }
    let index = serde_json::json!({ "metadata": {}, "weight_map": weight_map });
    std::fs::write(dir.join("model.safetensors.index.json"), index.to_string()).unwrap();

    let sharded = HookedTransformer::from_dir(&dir).unwrap();
    assert_eq!(sharded.files().weights.len(), 2);
    let single = HookedTransformer::from_dir(fixture("tiny-gpt2")).unwrap();
    let tokens = single.to_tokens("The Colosseum is in", true).unwrap();
    let a = single.logits(std::slice::from_ref(&tokens)).unwrap();
    let b = sharded.logits(&[tokens]).unwrap();
    assert_eq!(max_abs_diff(&a, &b), 0.0);
    std::fs::remove_dir_all(dir).ok();
}

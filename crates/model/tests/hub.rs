//! The hub path without a network: an unreachable endpoint and an empty offline cache
//! both give messages that name the model and say how to use a local folder.
//! (One test function: environment variables are process-wide.)

use actpatch_model::ModelSource;

#[test]
fn unreachable_hub_and_offline_cache_miss_say_what_to_do() {
    let home = std::env::temp_dir().join(format!("actpatch-hf-home-{}", std::process::id()));
    std::env::set_var("HF_HOME", &home);
    // Port 9 (discard) on loopback refuses connections at once.
    std::env::set_var("HF_ENDPOINT", "http://127.0.0.1:9");
    std::env::remove_var("HF_HUB_OFFLINE");
    let source = ModelSource::Hub {
        id: "gpt2".into(),
        revision: None,
    };
    let err = source.resolve().unwrap_err().to_string();
    assert!(
        err.contains("`gpt2`") && err.contains("unreachable") && err.contains("path ="),
        "{err}"
    );

    std::env::set_var("HF_HUB_OFFLINE", "1");
    let err = source.resolve().unwrap_err().to_string();
    assert!(
        err.contains("HF_HUB_OFFLINE") && err.contains("`gpt2`") && err.contains("path ="),
        "{err}"
    );
    std::fs::remove_dir_all(home).ok();
}

//! Whether two shards' manifests belong to one run: the same experiment file, the same
//! number of shards, the same model, device and batch choices — everything that
//! decides which cells each shard computes and what numbers they hold.

use crate::manifest::Manifest;

/// Why shard manifest `other` cannot merge with `reference`, or `None` when it can.
/// Phrased as what `other` did: "ran experiments/b.toml (SHA-256 1a2b3c4d…), not
/// experiments/a.toml (5e6f7a8b…)".
pub fn mismatch(reference: &Manifest, other: &Manifest) -> Option<String> {
    let short = |sha: &str| sha.chars().take(12).collect::<String>();
    if reference.experiment_sha256 != other.experiment_sha256 {
        return Some(format!(
            "ran {} (SHA-256 {}…), not {} ({}…): another experiment file, or the file changed",
            other.experiment_file.display(),
            short(&other.experiment_sha256),
            reference.experiment_file.display(),
            short(&reference.experiment_sha256)
        ));
    }
    if let (Some(a), Some(b)) = (&reference.shard, &other.shard) {
        if a.count != b.count {
            return Some(format!("is one of {} shards, not of {}", b.count, a.count));
        }
        if a.max_batch_mib != b.max_batch_mib {
            return Some(format!(
                "ran with --max-batch-memory {}, not {} (it decides the batches the shards divide)",
                b.max_batch_mib, a.max_batch_mib
            ));
        }
    }
    let (a, b) = (&reference.options, &other.options);
    if (a.naive, a.no_validate) != (b.naive, b.no_validate) {
        let flags = |naive: bool, no_validate: bool| {
            let flags: Vec<&str> = [(naive, "--naive"), (no_validate, "--no-validate")]
                .into_iter()
                .filter_map(|(on, flag)| on.then_some(flag))
                .collect();
            match flags.is_empty() {
                true => "no flags".to_string(),
                false => flags.join(" "),
            }
        };
        return Some(format!(
            "ran with {}, not {}",
            flags(b.naive, b.no_validate),
            flags(a.naive, a.no_validate)
        ));
    }
    if let (Some(a), Some(b)) = (&reference.device, &other.device) {
        if a != b {
            return Some(format!("ran on {b}, not {a}"));
        }
    }
    let (wa, wb) = (reference.weights_sha256(), other.weights_sha256());
    if !wa.is_empty() && !wb.is_empty() && wa != wb {
        let source = |m: &Manifest| {
            (m.model.as_ref())
                .map(|m| m.source.clone())
                .unwrap_or_default()
        };
        return Some(format!(
            "used another model ({}, not {}: the weights' SHA-256 differ)",
            source(other),
            source(reference)
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{FileHash, ModelRecord, ShardRecord};

    fn shard(index: usize, sha: &str, weights: &str) -> Manifest {
        Manifest {
            experiment_file: "a.toml".into(),
            experiment_sha256: sha.into(),
            shard: Some(ShardRecord {
                index,
                count: 4,
                max_batch_mib: 1024,
                ..ShardRecord::default()
            }),
            model: Some(ModelRecord {
                source: format!("model-{weights}"),
                weights: vec![FileHash {
                    file: "w".into(),
                    sha256: Some(weights.into()),
                }],
                ..ModelRecord::default()
            }),
            device: Some("cpu".into()),
            ..Manifest::default()
        }
    }

    #[test]
    fn shards_of_one_run_match_and_others_say_why_not() {
        let reference = shard(0, "aaaa", "w1");
        assert_eq!(mismatch(&reference, &shard(3, "aaaa", "w1")), None);
        let why = |m: Manifest| mismatch(&reference, &m).unwrap_or_default();
        assert!(why(shard(1, "bbbb", "w1")).contains("another experiment file"));
        assert!(why(shard(1, "aaaa", "w2")).contains("used another model (model-w2"));
        let mut other_count = shard(1, "aaaa", "w1");
        other_count.shard.as_mut().unwrap().count = 2;
        assert_eq!(why(other_count), "is one of 2 shards, not of 4");
        let mut naive = shard(1, "aaaa", "w1");
        naive.options.naive = true;
        assert_eq!(why(naive), "ran with --naive, not no flags");
        let mut gpu = shard(1, "aaaa", "w1");
        gpu.device = Some("cuda:0".into());
        assert_eq!(why(gpu), "ran on cuda:0, not cpu");
    }
}

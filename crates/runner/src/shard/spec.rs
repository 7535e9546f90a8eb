//! Which shard of a run this process is: `--shard i/n`, else the scheduler's
//! environment (a Slurm array task, a Kubernetes Indexed Job's pod), and which run
//! id the shards share.

use std::fmt;
use std::str::FromStr;

use crate::RunnerError;

/// Shard `index` of `count` (counted from 0, like Slurm's array task ids and
/// Kubernetes' completion indexes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ShardSpec {
    pub index: usize,
    pub count: usize,
}

impl ShardSpec {
    pub fn new(index: usize, count: usize) -> Result<Self, String> {
        if count == 0 {
            return Err("a run has at least one shard (n ≥ 1)".into());
        }
        if index >= count {
            return Err(format!(
                "shard {index} of {count} does not exist: shards count from 0, so the last is {}/{count}",
                count - 1
            ));
        }
        Ok(ShardSpec { index, count })
    }

    /// The hive partition of this shard's cells: `shard=i-of-n`.
    pub fn partition(&self) -> String {
        format!("shard={}-of-{}", self.index, self.count)
    }

    /// `i-of-n`, as in file names.
    pub fn label(&self) -> String {
        format!("{}-of-{}", self.index, self.count)
    }

    /// Parses `i-of-n` (a partition's or manifest's name).
    pub fn from_label(label: &str) -> Option<Self> {
        let (index, count) = label.split_once("-of-")?;
        ShardSpec::new(index.parse().ok()?, count.parse().ok()?).ok()
    }
}

impl fmt::Display for ShardSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl FromStr for ShardSpec {
    type Err = String;

    /// `i/n`, e.g. `0/4` … `3/4`.
    fn from_str(text: &str) -> Result<Self, String> {
        let bad = || format!("`{text}` is not a shard: write i/n, e.g. 0/4 for the first of four");
        let (index, count) = text.trim().split_once('/').ok_or_else(bad)?;
        let index = index.trim().parse().map_err(|_| bad())?;
        let count = count.trim().parse().map_err(|_| bad())?;
        ShardSpec::new(index, count)
    }
}

/// Where the shard came from, for the terminal and the shard manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardChoice {
    pub shard: ShardSpec,
    /// `--shard`, `SLURM_ARRAY_TASK_ID` or `JOB_COMPLETION_INDEX`.
    pub from: &'static str,
}

/// The command line's sharding choices.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShardFlags {
    /// `--shard i/n`: wins over the environment.
    pub shard: Option<ShardSpec>,
    /// `--shards n`: the count for an index from the environment (Kubernetes sets
    /// only the index).
    pub shards: Option<usize>,
    /// `--no-shard`: ignore the scheduler's environment (e.g. an array job whose
    /// tasks run different experiment files).
    pub no_shard: bool,
}

fn input(text: String) -> RunnerError {
    RunnerError::Input(text)
}

/// Reads a non-negative integer variable; `None` when unset or empty.
fn number(env: &dyn Fn(&str) -> Option<String>, name: &str) -> Result<Option<usize>, RunnerError> {
    match env(name).filter(|v| !v.trim().is_empty()) {
        None => Ok(None),
        Some(value) => value.trim().parse().map(Some).map_err(|_| {
            input(format!(
                "{name}={value} is not a task index or count (a whole number ≥ 0)"
            ))
        }),
    }
}

/// The shard this process runs, or `None` for a whole run. `env` reads an
/// environment variable (`std::env::var` outside tests).
///
/// `--shard i/n` wins. Otherwise a Slurm array task is shard
/// `(SLURM_ARRAY_TASK_ID − SLURM_ARRAY_TASK_MIN) / SLURM_ARRAY_TASK_STEP` of
/// `SLURM_ARRAY_TASK_COUNT`, and a Kubernetes Indexed Job's pod is shard
/// `JOB_COMPLETION_INDEX` of `--shards n`.
pub fn resolve_shard(
    flags: &ShardFlags,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<ShardChoice>, RunnerError> {
    if let Some(shard) = flags.shard {
        return Ok(Some(ShardChoice {
            shard,
            from: "--shard",
        }));
    }
    if flags.no_shard {
        return Ok(None);
    }
    if let Some(index) = number(env, "JOB_COMPLETION_INDEX")? {
        let count = flags.shards.ok_or_else(|| {
            input(format!(
                "JOB_COMPLETION_INDEX={index} is set (a Kubernetes Indexed Job) but not the number of shards: pass --shards N with N = the Job's `completions`"
            ))
        })?;
        let shard = ShardSpec::new(index, count).map_err(|e| {
            input(format!(
                "JOB_COMPLETION_INDEX={index} with --shards {count}: {e}"
            ))
        })?;
        return Ok(Some(ShardChoice {
            shard,
            from: "JOB_COMPLETION_INDEX",
        }));
    }
    if let Some(task) = number(env, "SLURM_ARRAY_TASK_ID")? {
        let shard = slurm_shard(task, flags.shards, env)?;
        return Ok(Some(ShardChoice {
            shard,
            from: "SLURM_ARRAY_TASK_ID",
        }));
    }
    match flags.shards {
        Some(n) => Err(input(format!(
            "--shards {n} needs the shard's index: pass --shard i/{n}, or run as a Slurm array task or a Kubernetes Indexed Job (SLURM_ARRAY_TASK_ID or JOB_COMPLETION_INDEX)"
        ))),
        None => Ok(None),
    }
}

/// A Slurm array task's shard: the array must be an arithmetic range (`--array=0-7`,
/// `--array=1-8`, `--array=0-14:2`), so that its tasks number 0 … n−1.
fn slurm_shard(
    task: usize,
    shards: Option<usize>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<ShardSpec, RunnerError> {
    let count = number(env, "SLURM_ARRAY_TASK_COUNT")?;
    let min = number(env, "SLURM_ARRAY_TASK_MIN")?.unwrap_or(0);
    let max = number(env, "SLURM_ARRAY_TASK_MAX")?;
    let step = number(env, "SLURM_ARRAY_TASK_STEP")?.unwrap_or(1).max(1);
    let count = match (count, shards) {
        (Some(c), Some(s)) if c != s => {
            return Err(input(format!(
                "--shards {s} disagrees with the Slurm array's SLURM_ARRAY_TASK_COUNT={c}: submit {s} tasks (sbatch --array=0-{}) or drop --shards",
                s.saturating_sub(1)
            )))
        }
        (Some(c), _) => c,
        (None, Some(s)) => s,
        (None, None) => {
            return Err(input(format!(
                "SLURM_ARRAY_TASK_ID={task} is set without SLURM_ARRAY_TASK_COUNT: pass --shard i/n or --shards N"
            )))
        }
    };
    let not_a_range = || {
        input(format!(
            "the Slurm array's task ids (min {min}, step {step}, {count} tasks) are not a range whose tasks number 0 … {}: submit with --array=0-{} (or pass --shard i/{count})",
            count.saturating_sub(1),
            count.saturating_sub(1)
        ))
    };
    if task < min || !(task - min).is_multiple_of(step) {
        return Err(not_a_range());
    }
    if let Some(max) = max {
        if max < min || (max - min) / step + 1 != count {
            return Err(not_a_range());
        }
    }
    ShardSpec::new((task - min) / step, count).map_err(|_| not_a_range())
}

/// The id of a sharded run: `--run-id`, else `slurm-<SLURM_ARRAY_JOB_ID>`.
pub fn resolve_run_id(
    flag: Option<&str>,
    shard: Option<&ShardChoice>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<String>, RunnerError> {
    if let Some(id) = flag {
        check_run_id(id)?;
        return Ok(Some(id.to_string()));
    }
    let Some(shard) = shard else {
        return Ok(None);
    };
    if let Some(job) = env("SLURM_ARRAY_JOB_ID").filter(|v| !v.trim().is_empty()) {
        let id = format!("slurm-{}", job.trim());
        check_run_id(&id)?;
        return Ok(Some(id));
    }
    Err(input(format!(
        "shard {} needs the run id its shards share, so that they write into one run folder: pass --run-id ID (Slurm array tasks get slurm-$SLURM_ARRAY_JOB_ID)",
        shard.shard
    )))
}

/// A run id names a folder: letters, digits, `.`, `_`, `-`; not starting with `.`.
pub fn check_run_id(id: &str) -> Result<(), RunnerError> {
    let fine = !id.is_empty()
        && id.len() <= 128
        && !id.starts_with('.')
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if fine {
        Ok(())
    } else {
        Err(input(format!(
            "--run-id `{id}` cannot name a run folder: use up to 128 letters, digits, `.`, `_` and `-`, not starting with `.`"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
    }

    fn resolved(flags: &ShardFlags, vars: &[(&str, &str)]) -> Result<Option<ShardSpec>, String> {
        resolve_shard(flags, &env_of(vars))
            .map(|c| c.map(|c| c.shard))
            .map_err(|e| e.to_string())
    }

    #[test]
    fn shard_flags_parse_and_check_their_range() {
        assert_eq!(
            "2/4".parse::<ShardSpec>(),
            Ok(ShardSpec { index: 2, count: 4 })
        );
        assert!("4/4"
            .parse::<ShardSpec>()
            .unwrap_err()
            .contains("last is 3/4"));
        assert!("0/0".parse::<ShardSpec>().is_err());
        assert!("1-4".parse::<ShardSpec>().unwrap_err().contains("i/n"));
        let shard = ShardSpec::new(1, 8).unwrap();
        assert_eq!(shard.partition(), "shard=1-of-8");
        assert_eq!(ShardSpec::from_label(&shard.label()), Some(shard));
        assert_eq!(ShardSpec::from_label("9-of-8"), None);
    }

    #[test]
    fn the_flag_wins_over_the_environment() {
        let flags = ShardFlags {
            shard: Some(ShardSpec::new(1, 2).unwrap()),
            ..Default::default()
        };
        let slurm = [
            ("SLURM_ARRAY_TASK_ID", "3"),
            ("SLURM_ARRAY_TASK_COUNT", "4"),
        ];
        assert_eq!(
            resolved(&flags, &slurm),
            Ok(Some(ShardSpec::new(1, 2).unwrap()))
        );
        assert_eq!(resolved(&ShardFlags::default(), &[]), Ok(None));
        let off = ShardFlags {
            no_shard: true,
            ..Default::default()
        };
        assert_eq!(resolved(&off, &slurm), Ok(None));
    }

    #[test]
    fn slurm_arrays_number_their_tasks_from_the_minimum() {
        let flags = ShardFlags::default();
        let from_zero = [
            ("SLURM_ARRAY_TASK_ID", "3"),
            ("SLURM_ARRAY_TASK_COUNT", "4"),
        ];
        assert_eq!(
            resolved(&flags, &from_zero),
            Ok(Some(ShardSpec::new(3, 4).unwrap()))
        );
        let from_one = [
            ("SLURM_ARRAY_TASK_ID", "1"),
            ("SLURM_ARRAY_TASK_COUNT", "4"),
            ("SLURM_ARRAY_TASK_MIN", "1"),
            ("SLURM_ARRAY_TASK_MAX", "4"),
        ];
        assert_eq!(
            resolved(&flags, &from_one),
            Ok(Some(ShardSpec::new(0, 4).unwrap()))
        );
        let stepped = [
            ("SLURM_ARRAY_TASK_ID", "6"),
            ("SLURM_ARRAY_TASK_COUNT", "4"),
            ("SLURM_ARRAY_TASK_MIN", "0"),
            ("SLURM_ARRAY_TASK_MAX", "9"),
            ("SLURM_ARRAY_TASK_STEP", "3"),
        ];
        assert_eq!(
            resolved(&flags, &stepped),
            Ok(Some(ShardSpec::new(2, 4).unwrap()))
        );
        // --array=1,3,7: three tasks that are not a range.
        let list = [
            ("SLURM_ARRAY_TASK_ID", "7"),
            ("SLURM_ARRAY_TASK_COUNT", "3"),
            ("SLURM_ARRAY_TASK_MIN", "1"),
            ("SLURM_ARRAY_TASK_MAX", "7"),
        ];
        assert!(resolved(&flags, &list).unwrap_err().contains("--array=0-2"));
        let disagree = ShardFlags {
            shards: Some(8),
            ..Default::default()
        };
        assert!(resolved(&disagree, &from_zero)
            .unwrap_err()
            .contains("disagrees"));
    }

    #[test]
    fn kubernetes_pods_take_their_count_from_shards() {
        let pod = [("JOB_COMPLETION_INDEX", "2")];
        let flags = ShardFlags {
            shards: Some(4),
            ..Default::default()
        };
        assert_eq!(
            resolved(&flags, &pod),
            Ok(Some(ShardSpec::new(2, 4).unwrap()))
        );
        assert!(resolved(&ShardFlags::default(), &pod)
            .unwrap_err()
            .contains("--shards N"));
        assert!(resolved(&flags, &[("JOB_COMPLETION_INDEX", "4")])
            .unwrap_err()
            .contains("last is 3/4"));
        assert!(resolved(&flags, &[("JOB_COMPLETION_INDEX", "x")]).is_err());
        assert!(resolved(&flags, &[]).unwrap_err().contains("--shard i/4"));
    }

    #[test]
    fn run_ids_come_from_the_flag_or_the_array_job() {
        let choice = ShardChoice {
            shard: ShardSpec::new(0, 2).unwrap(),
            from: "SLURM_ARRAY_TASK_ID",
        };
        let slurm = env_of(&[("SLURM_ARRAY_JOB_ID", "4711")]);
        let id = |flag, shard| resolve_run_id(flag, shard, &slurm).map_err(|e| e.to_string());
        assert_eq!(id(Some("mine"), Some(&choice)), Ok(Some("mine".into())));
        assert_eq!(id(None, Some(&choice)), Ok(Some("slurm-4711".into())));
        assert_eq!(id(None, None), Ok(None));
        let none = |_: &str| None;
        assert!(resolve_run_id(None, Some(&choice), &none)
            .unwrap_err()
            .to_string()
            .contains("--run-id"));
        for bad in ["", "../x", ".hidden", "a b", "a/b"] {
            assert!(check_run_id(bad).is_err(), "{bad:?}");
        }
        assert!(check_run_id("landmarks-2024.1_a").is_ok());
    }
}

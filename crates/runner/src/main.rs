//! `actpatch`: activation patching from declarative experiment files.

use std::path::PathBuf;
use std::process::ExitCode;

use actpatch_runner::compare::{self, CompareOptions};
use actpatch_runner::runs::{self, RunsFilter};
use actpatch_runner::shard::{resolve_run_id, resolve_shard, ShardFlags, ShardSpec};
use actpatch_runner::{check, merge, resume, run, RunOptions, RunnerError};
use clap::{Args, Parser, Subcommand};

/// `actpatch --version`, naming the GPU backend when the binary has one.
const VERSION: &str = if cfg!(feature = "cuda") {
    concat!(env!("CARGO_PKG_VERSION"), " (with CUDA)")
} else {
    env!("CARGO_PKG_VERSION")
};

/// Find which parts of a language model cause its answers, by activation patching.
///
/// An experiment file (TOML) names a model, clean/corrupted prompt pairs with their
/// answers, and the sweeps to run. actpatch validates every pair's baseline logit
/// differences, patches clean activations into the corrupted run cell by cell, and
/// writes parquet tables, figures, report.md and an interactive report.html under
/// results/.
///
/// Exit codes: 0 done; 1 the run could not finish or found nothing (no pair passed
/// validation, a computation or a write failed — what was finished is kept for
/// `run --resume` —, or `compare --fail-above` was exceeded); 2 bad input (experiment
/// file, model, output folder, run folders), found before anything is written.
#[derive(Parser, Debug)]
#[command(
    name = "actpatch",
    version = VERSION,
    about,
    long_about,
    after_help = "The experiment file, the patch kinds and the output tables are documented in the guide (docs/, `just docs`); each command's --help has its own examples.\n\nExamples:\n  actpatch check experiments/smollm2/landmarks.toml   validate pairs and baselines only\n  actpatch run experiments/smollm2/landmarks.toml     the whole experiment\n  actpatch compare RUN_A RUN_B --fail-above 1e-4      a regression check"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Validate the pairs, run the sweeps, write tables, figures, report.md and
    /// report.html.
    ///
    /// An interrupted run (killed, Ctrl-C) is marked "running" in its manifest;
    /// `actpatch run --resume RUN_DIR` finishes it.
    ///
    /// On a cluster: `--shard i/n --run-id ID` runs shard i of n into <out>/ID/;
    /// a Slurm array task or a Kubernetes Indexed Job pod (with --shards n) finds its
    /// shard in the environment. The last shard to finish merges the run (the guide:
    /// docs/src/cluster.md).
    #[command(
        after_help = "Examples:\n  actpatch run experiments/smollm2/country_capitals.toml      the whole experiment\n  actpatch run tests/fixtures/experiments/tiny.toml --out /tmp/runs   a tiny fixture, in seconds\n  actpatch run --resume results/landmarks/RUN                 finish an interrupted run"
    )]
    Run(RunArgs),
    /// Merge the shards of a sharded run into the run's tables, figures, report.md and
    /// report.html, exactly as a single-process run writes them.
    ///
    /// The last shard to finish merges by itself (unless run with --no-merge); merge
    /// by hand after a shard was re-run, or as a dependent job. Every shard must be
    /// complete and of the same experiment file, model and shard count. Loads the
    /// model and validates the pairs again, as the run did.
    ///
    /// Exit codes: 0 merged; 1 shards missing or unfinished (named; nothing merged);
    /// 2 not a sharded run, or shards of different runs.
    #[command(
        after_help = "Examples:\n  actpatch merge results/landmarks/slurm-4711     merge a Slurm array's shards\n  actpatch merge results/landmarks/sweep1 --quiet print only the run folder"
    )]
    Merge {
        /// The run folder the shards wrote into (<out>/<run id>).
        run_dir: PathBuf,
        /// Print only errors.
        #[arg(long, short)]
        quiet: bool,
    },
    /// Validate the experiment file and every pair's baselines, without sweeping.
    #[command(
        after_help = "Examples:\n  actpatch check experiments/smollm2/landmarks.toml                  every pair's tokens and baselines\n  actpatch check experiments/landmarks.toml --model-path /models/gpt2 a local copy instead of the hub"
    )]
    Check {
        /// The experiment file.
        experiment: PathBuf,
        /// Use this local model folder or .gguf file instead of the file's [model].
        #[arg(long, value_name = "PATH")]
        model_path: Option<PathBuf>,
    },
    /// Compare two runs cell by cell: matched/unmatched cells, |B − A| of the
    /// normalized logit difference, correlations per patch kind, the cells that
    /// changed most, and a B − A heatmap per pair and patch kind.
    ///
    /// A and B are run folders or cells.parquet files (also as pandas, pyarrow or
    /// polars wrote them back). Writes compare.md, compare.html, compare.parquet and
    /// figures/ to --out (default results/compare/<A>-vs-<B>).
    ///
    /// Exit codes: 0 done; 1 --fail-above exceeded; 2 bad input (missing run,
    /// table of another schema version).
    #[command(
        after_help = "Examples:\n  actpatch compare results/landmarks/RUN_A results/landmarks/RUN_B --fail-above 1e-4   a regression check\n  actpatch compare results/landmarks/GPT2_RUN results/smollm2_landmarks/RUN --by-depth  two models\n  actpatch compare RUN_A/cells.parquet edited.parquet --no-figures                     a table written back by pandas"
    )]
    Compare(CompareArgs),
    /// Re-render the page of a finished (or merged) run from its files: report.html
    /// from the run's tables and manifest.json. Given a folder written by `actpatch
    /// compare`, re-renders compare.html from compare.md and compare.parquet.
    ///
    /// The page is self-contained (no network; opens from file://): baselines, an
    /// interactive heatmap per grid with selectors for pair/concept and kind, the
    /// summary sentences.
    #[command(
        after_help = "Examples:\n  actpatch report results/landmarks/RUN                 re-render report.html\n  actpatch report results/compare/RUN_A-vs-RUN_B        re-render compare.html"
    )]
    Report {
        /// The run folder (or comparison folder).
        dir: PathBuf,
    },
    /// List every run under DIR (default results/): run id, experiment, model, date,
    /// pairs passed/failed, cells, wall time, status. Runs that did not finish are
    /// shown as incomplete.
    #[command(
        after_help = "Examples:\n  actpatch runs                                   every run under results/\n  actpatch runs --concept landmarks --model gpt2  one concept's runs of one model"
    )]
    Runs {
        /// The folder to search for runs.
        #[arg(default_value = "results")]
        dir: PathBuf,
        /// Only runs with cells of this concept.
        #[arg(long)]
        concept: Option<String>,
        /// Only runs whose model contains this text (case-insensitive).
        #[arg(long)]
        model: Option<String>,
    },
}

// The arguments of `actpatch run` (its help text is on `Command::Run`).
#[derive(Args, Debug)]
struct RunArgs {
    /// The experiment file (omit with --resume).
    #[arg(required_unless_present = "resume")]
    experiment: Option<PathBuf>,
    /// Finish the interrupted run in RUN_DIR, reusing the pairs it completed.
    #[arg(long, value_name = "RUN_DIR", conflicts_with = "experiment")]
    resume: Option<PathBuf>,
    /// One full forward pass per cell batch, without reusing unchanged layers and
    /// positions (slower; to check the fast path).
    #[arg(long)]
    naive: bool,
    /// Sweep pairs that fail validation too; they stay marked as failed.
    #[arg(long)]
    no_validate: bool,
    /// Folder for runs (default: [output] dir, else results/<experiment name>).
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Memory budget of the batched forward passes, in MiB (on the CPU, pairs are swept
    /// one per core at once, each with an equal share).
    #[arg(long, value_name = "MIB", default_value_t = 1024)]
    max_batch_memory: usize,
    /// Print only errors.
    #[arg(long, short)]
    quiet: bool,
    /// Use this local model folder or .gguf file instead of the file's [model]
    /// (e.g. when the hub is unreachable).
    #[arg(long, value_name = "PATH")]
    model_path: Option<PathBuf>,
    /// Run on this device instead of the file's [model] device (cpu, cuda:0).
    #[arg(long, value_name = "DEVICE")]
    device: Option<String>,
    /// The run's id: its folder is <out>/ID. The shards of one run share it (Slurm
    /// array tasks default to slurm-$SLURM_ARRAY_JOB_ID).
    #[arg(long, value_name = "ID")]
    run_id: Option<String>,
    /// Run only shard i of n of the run's work (0 ≤ i < n) into the run folder of
    /// --run-id. Without it, a Slurm array task is shard SLURM_ARRAY_TASK_ID of
    /// SLURM_ARRAY_TASK_COUNT, a Kubernetes Indexed Job pod shard JOB_COMPLETION_INDEX
    /// of --shards.
    #[arg(long, value_name = "i/n", conflicts_with = "resume")]
    shard: Option<ShardSpec>,
    /// The number of shards, for an index from the environment (Kubernetes:
    /// the Job's `completions`).
    #[arg(long, value_name = "N", conflicts_with = "resume")]
    shards: Option<usize>,
    /// Ignore SLURM_ARRAY_TASK_ID and JOB_COMPLETION_INDEX: run the whole experiment.
    #[arg(long, conflicts_with_all = ["shard", "shards"])]
    no_shard: bool,
    /// A shard that finds every shard complete does not merge them (merge with
    /// `actpatch merge`, e.g. in a dependent job).
    #[arg(long)]
    no_merge: bool,
}

// The arguments of `actpatch compare` (its help text is on `Command::Compare`).
#[derive(Args, Debug)]
struct CompareArgs {
    /// The reference run (folder or cells.parquet).
    a: PathBuf,
    /// The run compared with it (folder or cells.parquet).
    b: PathBuf,
    /// Match layers on relative depth: layer / n_layers, binned into the smaller
    /// model's layer count (bin = floor(layer / n_layers × bins)), averaging the
    /// cells in a bin. For models with different layer counts.
    #[arg(long)]
    by_depth: bool,
    /// Exit 1 when any matched cell's |B − A| exceeds X (a regression check).
    #[arg(long, value_name = "X")]
    fail_above: Option<f64>,
    /// How many of the most-changed cells to list.
    #[arg(long, value_name = "N", default_value_t = 20)]
    top: usize,
    /// Output folder (default: results/compare/<A run id>-vs-<B run id>).
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Figure format; repeat for several.
    #[arg(long = "format", value_name = "FORMAT", value_parser = ["png", "svg"], default_value = "png")]
    formats: Vec<String>,
    /// Draw no difference heatmaps.
    #[arg(long)]
    no_figures: bool,
}

fn main() -> ExitCode {
    actpatch_model::keep_large_buffers_in_heap();
    let result = match Cli::parse().command {
        Command::Run(args) => run_command(args),
        Command::Check {
            experiment,
            model_path,
        } => check(
            &experiment,
            &RunOptions {
                model_path,
                ..RunOptions::default()
            },
        )
        .map(|_| ()),
        Command::Merge { run_dir, quiet } => merge(
            &run_dir,
            &RunOptions {
                quiet,
                ..RunOptions::default()
            },
        )
        .map(|outcome| println!("{}", outcome.run_dir.display())),
        Command::Compare(args) => compare_command(args),
        Command::Report { dir } => actpatch_runner::inspect::render::report(&dir)
            .map(|page| println!("{}", page.display())),
        Command::Runs {
            dir,
            concept,
            model,
        } => runs::cli(&dir, &RunsFilter { concept, model }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::from(err.exit_code())
        }
    }
}

/// `actpatch run`: a fresh run, or `--resume`; prints the run folder.
fn run_command(args: RunArgs) -> Result<(), RunnerError> {
    let RunArgs {
        experiment,
        resume: resume_dir,
        naive,
        no_validate,
        out,
        max_batch_memory,
        quiet,
        model_path,
        device,
        run_id,
        shard,
        shards,
        no_shard,
        no_merge,
    } = args;
    let env = |name: &str| std::env::var(name).ok();
    let flags = ShardFlags {
        shard,
        shards,
        no_shard: no_shard || resume_dir.is_some(),
    };
    let shard = resolve_shard(&flags, &env)?;
    let run_id = resolve_run_id(run_id.as_deref(), shard.as_ref(), &env)?;
    let options = RunOptions {
        no_validate,
        out_dir: out,
        max_batch_mib: max_batch_memory.max(1),
        naive,
        quiet,
        model_path,
        device,
        run_id,
        shard,
        merge: !no_merge,
        control: None,
    };
    let outcome = match (resume_dir, experiment) {
        (Some(dir), _) => resume(&dir, &options),
        (None, Some(file)) => run(&file, &options),
        (None, None) => Err(RunnerError::Input(
            "give an experiment file, or --resume RUN_DIR".into(),
        )),
    }?;
    println!("{}", outcome.run_dir.display());
    Ok(())
}

/// `actpatch compare`.
fn compare_command(args: CompareArgs) -> Result<(), RunnerError> {
    let CompareArgs {
        a,
        b,
        by_depth,
        fail_above,
        top,
        out,
        formats,
        no_figures,
    } = args;
    let options = CompareOptions {
        out_dir: out,
        by_depth,
        fail_above,
        top,
        formats: compare::image_formats(&formats, no_figures)?,
    };
    compare::cli(&a, &b, &options)
}

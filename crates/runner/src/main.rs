//! `actpatch`: activation patching from declarative experiment files.

use std::path::PathBuf;
use std::process::ExitCode;

use actpatch_runner::run::{check, run, RunOptions};
use clap::{Parser, Subcommand};

/// Find which parts of a language model cause its answers, by activation patching.
///
/// An experiment file (TOML) names a model, clean/corrupted prompt pairs with their
/// answers, and the sweeps to run. actpatch validates every pair's baseline logit
/// differences, patches clean activations into the corrupted run cell by cell, and
/// writes parquet tables, figures and a markdown report under results/.
///
/// Exit codes: 0 done; 1 no pair passed validation (or a computation failed);
/// 2 bad input (experiment file, model, output folder).
#[derive(Parser, Debug)]
#[command(name = "actpatch", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Validate the pairs, run the sweeps, write tables, figures and report.md.
    ///
    /// Example: actpatch run experiments/landmarks.toml
    Run {
        /// The experiment file.
        experiment: PathBuf,
        /// Sweep pairs that fail validation too; they stay marked as failed.
        #[arg(long)]
        no_validate: bool,
        /// Folder for runs (default: [output] dir, else results/<experiment name>).
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
        /// Memory budget of one batched forward pass, in MiB.
        #[arg(long, value_name = "MIB", default_value_t = 1024)]
        max_batch_memory: usize,
        /// Print only errors.
        #[arg(long, short)]
        quiet: bool,
    },
    /// Validate the experiment file and every pair's baselines, without sweeping.
    ///
    /// Example: actpatch check experiments/landmarks.toml
    Check {
        /// The experiment file.
        experiment: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run {
            experiment,
            no_validate,
            out,
            max_batch_memory,
            quiet,
        } => {
            let options = RunOptions {
                no_validate,
                out_dir: out,
                max_batch_mib: max_batch_memory.max(1),
                quiet,
            };
            run(&experiment, &options).map(|outcome| {
                println!("{}", outcome.run_dir.display());
            })
        }
        Command::Check { experiment } => check(&experiment, &RunOptions::default()).map(|_| ()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::from(err.exit_code())
        }
    }
}

//! Embeds the commit actpatch is built from (`ACTPATCH_BUILD_COMMIT`), for run
//! manifests. Without git or outside a repository it is left unset (the manifest then
//! records no commit); setting `ACTPATCH_BUILD_COMMIT` in the build environment (e.g.
//! when building from a source archive) overrides it.

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()?;
    let text = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (out.status.success() && !text.is_empty()).then_some(text)
}

fn main() {
    println!("cargo:rerun-if-env-changed=ACTPATCH_BUILD_COMMIT");
    let commit = std::env::var("ACTPATCH_BUILD_COMMIT")
        .ok()
        .filter(|c| !c.is_empty())
        .or_else(|| git(&["rev-parse", "HEAD"]));
    if let Some(commit) = commit {
        println!("cargo:rustc-env=ACTPATCH_BUILD_COMMIT={commit}");
    }
    // Rebuild when HEAD moves (a commit, checkout or reset appends to logs/HEAD).
    for path in ["HEAD", "logs/HEAD"] {
        if let Some(file) = git(&["rev-parse", "--git-path", path]) {
            let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(file);
            println!("cargo:rerun-if-changed={}", file.display());
        }
    }
}

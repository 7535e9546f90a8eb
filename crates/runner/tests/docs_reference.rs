//! What the user reads cannot drift from the code:
//! - the guide's experiment-file reference (`docs/src/experiment-file.md`): for every
//!   section, the keys its table documents are exactly the keys the parser accepts. The
//!   accepted keys come from the parser itself: a file with an unknown key in that
//!   section is refused with serde's "unknown field `…`, expected one of …", which lists
//!   every field;
//! - `actpatch --help` and every command's help end with two or three examples, each a
//!   command line the binary parses.

use std::collections::BTreeSet;
use std::path::Path;

use actpatch_runner::experiment::Experiment;

/// A key no section has.
const PROBE: &str = "zz_probe";

/// `(section heading, documented keys)` of the chapter, in order.
fn documented() -> Vec<(String, BTreeSet<String>)> {
    let chapter = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/src/experiment-file.md");
    let text = std::fs::read_to_string(&chapter).unwrap();
    let mut sections: Vec<(String, BTreeSet<String>)> = Vec::new();
    // Only the first table after a heading is its key table.
    let (mut in_table, mut table_done) = (false, false);
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("### `") {
            sections.push((rest.trim_end_matches('`').to_string(), BTreeSet::new()));
            (in_table, table_done) = (false, false);
            continue;
        }
        if !line.starts_with('|') {
            table_done |= in_table;
            continue;
        }
        in_table = true;
        let (Some((_, keys)), Some(row), false) =
            (sections.last_mut(), line.strip_prefix("| `"), table_done)
        else {
            continue;
        };
        if let Some((key, _)) = row.split_once('`') {
            keys.insert(key.to_string());
        }
    }
    sections
}

/// A valid experiment file with `probe` put into `section`.
fn probed(section: &str, model: &Path) -> String {
    let pair = "name = \"p\"\nconcept = \"c\"\nclean = \"The Colosseum is in\"\n\
                corrupted = \"The Eiffel Tower is in\"\ncorrect = \" Rome\"\nincorrect = \" Paris\"\n";
    let base = format!(
        "[experiment]\nname = \"keys\"\n\n[model]\npath = \"{}\"\n\n[sweep]\nkinds = [\"resid_pre\"]\n\n\
         [validate]\nenabled = false\n\n[output]\nformats = []\n\n[[pairs]]\n{pair}",
        model.display()
    );
    let key = format!("{PROBE} = 1\n");
    match section {
        "(top level)" => format!("{key}{base}"),
        "[experiment]" | "[model]" | "[sweep]" | "[validate]" | "[output]" => {
            base.replacen(&format!("{section}\n"), &format!("{section}\n{key}"), 1)
        }
        "[pairs.expect]" => format!("{base}\n[[pairs]]\n{pair}expect = {{ {PROBE} = 1 }}\n"),
        // A new table or array entry after the pairs, with the probe first.
        other => format!("{base}\n{other}\n{key}"),
    }
}

/// The fields serde lists in "unknown field `zz_probe`, expected one of `a`, `b`"
/// (or "expected `a` or `b`", or "expected `a`").
fn accepted(message: &str) -> BTreeSet<String> {
    let Some((_, expected)) = message.split_once(&format!("unknown field `{PROBE}`, expected"))
    else {
        panic!("not an unknown-field error: {message}");
    };
    let expected = expected.lines().next().unwrap_or_default();
    expected
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

#[test]
fn every_key_is_documented_and_every_documented_key_is_accepted() {
    let dir = tempfile_dir();
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/tiny-gpt2");
    let sections = documented();
    assert!(sections.len() >= 14, "sections: {sections:?}");
    for (section, keys) in &sections {
        // Every key of a fill that is not one of its fixed keys is a slot of the text,
        // so the parser accepts any key there.
        if section == "[[templates.fills]]" {
            assert!(keys.contains("<slot>"), "{section}: documents its slots");
            continue;
        }
        let path = dir.join("probe.toml");
        std::fs::write(&path, probed(section, &model)).unwrap();
        let error = match Experiment::load(&path) {
            Ok(_) => panic!("{section}: the probe key was accepted"),
            Err(e) => e.to_string(),
        };
        assert_eq!(
            &accepted(&error),
            keys,
            "docs/src/experiment-file.md, ### `{section}`: documented keys differ from the accepted ones"
        );
    }
    std::fs::remove_dir_all(&dir).ok();
}

fn tempfile_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("actpatch-docs-keys-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

const COMMANDS: [&str; 6] = ["run", "merge", "check", "compare", "report", "runs"];

#[test]
fn every_help_ends_with_two_or_three_examples() {
    let helps = std::iter::once(vec!["--help"]).chain(COMMANDS.map(|c| vec![c, "--help"]));
    for args in helps {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_actpatch"))
            .args(&args)
            .output()
            .unwrap();
        assert!(output.status.success(), "{args:?}");
        let help = String::from_utf8(output.stdout).unwrap();
        let (_, examples) = help
            .rsplit_once("Examples:\n")
            .unwrap_or_else(|| panic!("actpatch {args:?} has no examples:\n{help}"));
        let lines: Vec<&str> = examples.lines().filter(|l| !l.trim().is_empty()).collect();
        assert!(
            (2..=3).contains(&lines.len()),
            "actpatch {args:?}: {} example lines, want 2 or 3 at the end:\n{examples}",
            lines.len()
        );
        for line in lines {
            assert!(
                line.trim_start().starts_with("actpatch "),
                "actpatch {args:?}: not an example command: {line}"
            );
        }
    }
}

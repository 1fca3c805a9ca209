//! The help of every `eventgate` subcommand (issue 20): each says what it does in its own words
//! (no flattened struct's doc leaking in), every argument has help, and the whole text is
//! kept as a snapshot (`node/tests/snapshots/cli-help.txt`; `UPDATE_SNAPSHOTS=1` rewrites it)
//! so a change of the CLI's words is a reviewed change.

use clap::CommandFactory;

fn walk(cmd: &mut clap::Command, path: &str, out: &mut String, problems: &mut Vec<String>) {
    let name = if path.is_empty() {
        cmd.get_name().to_owned()
    } else {
        format!("{path} {}", cmd.get_name())
    };
    let about = cmd.get_about().map(|a| a.to_string()).unwrap_or_default();
    if about.trim().is_empty() && name != "eventgate help" && !name.ends_with(" help") {
        problems.push(format!("`{name}` has no help"));
    }
    if about.contains("Where to reach a node's admin API") {
        problems.push(format!("`{name}` shows AdminTarget's doc as its own help"));
    }
    for arg in cmd.get_arguments() {
        let id = arg.get_id().as_str();
        if matches!(id, "help" | "version") {
            continue;
        }
        if arg.get_help().is_none() && arg.get_long_help().is_none() {
            problems.push(format!("`{name}`: argument `{id}` has no help"));
        }
    }
    out.push_str(&format!("===== {name}\n{}\n", cmd.render_help()));
    let mut subs: Vec<clap::Command> = cmd.get_subcommands().cloned().collect();
    for sub in &mut subs {
        if sub.get_name() == "help" {
            continue;
        }
        walk(sub, &name, out, problems);
    }
}

#[test]
fn every_subcommand_explains_itself_and_matches_the_snapshot() {
    let mut cmd = eventgate::cli::Cli::command().term_width(100);
    cmd.build();
    let mut out = String::new();
    let mut problems = Vec::new();
    walk(&mut cmd, "", &mut out, &mut problems);
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/snapshots/cli-help.txt");
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        std::fs::create_dir_all(std::path::Path::new(path).parent().unwrap()).unwrap();
        std::fs::write(path, &out).unwrap();
        return;
    }
    let kept = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{path}: {e}; run with UPDATE_SNAPSHOTS=1 to write it"));
    if kept != out {
        let first = kept
            .lines()
            .zip(out.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(kept.lines().count().min(out.lines().count()));
        panic!(
            "the CLI's help changed (first difference at line {}): review it and run with UPDATE_SNAPSHOTS=1\nkept: {:?}\nnow:  {:?}",
            first + 1,
            kept.lines().nth(first),
            out.lines().nth(first)
        );
    }
}

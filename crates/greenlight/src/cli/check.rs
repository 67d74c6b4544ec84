//! `check`: validate the config file without starting anything.

use std::process::ExitCode;

use crate::config::Config;

pub(super) fn check(path: Option<std::path::PathBuf>) -> ExitCode {
    let path_str = path.map(|p| p.display().to_string());
    let loaded = Config::load_with(|k| {
        if k == "GREENLIGHT_CONFIG" {
            path_str
                .clone()
                .or_else(|| std::env::var(k).ok().filter(|v| !v.is_empty()))
        } else {
            std::env::var(k).ok().filter(|v| !v.is_empty())
        }
    });
    match loaded {
        Ok(c) => match c.workflow_problem() {
            // `serve` refuses a config without workflows; so does `check`.
            Some(p) => {
                eprintln!("{p}");
                ExitCode::from(1)
            }
            None => {
                let source = c.source.as_ref().map_or_else(
                    || "(no config file)".to_owned(),
                    |p| p.display().to_string(),
                );
                let names: Vec<&str> = c.workflows.iter().map(|w| w.name.as_str()).collect();
                println!(
                    "{source}: ok, {} workflow(s): {}",
                    c.workflows.len(),
                    names.join(", ")
                );
                ExitCode::SUCCESS
            }
        },
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(1)
        }
    }
}

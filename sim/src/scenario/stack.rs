//! `run: stack deploy -c FILE NAME` steps: the compose file is read relative to the scenario
//! file and converted by [`shoal_core::stack`], the same conversion the real CLI uses. The
//! environment is empty, so `${VAR:-default}` takes its default and a run depends on nothing
//! outside the repository. Files are checked when the scenario is loaded (a broken compose file
//! is a `file:line:` error before anything runs) and read again when the step runs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use shoal_core::stack::{convert, ComposeInput, StackPlan};

use super::cli::{Command, StackCommand};
use super::parse::{Action, Scenario, ScenarioError};

/// Where `file` (as written in a step) is, relative to the scenario file.
pub(super) fn resolve(scenario_file: &str, file: &str) -> PathBuf {
    Path::new(scenario_file).parent().unwrap_or_else(|| Path::new("")).join(file)
}

/// Read and convert the compose file of a `stack deploy` step.
pub fn load_compose(scenario_file: &str, file: &str, stack: &str) -> Result<StackPlan, String> {
    let path = resolve(scenario_file, file);
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(&path).map_err(|e| format!("cannot read compose file {shown}: {e}"))?;
    let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let env_file = |name: &str| std::fs::read_to_string(dir.join(name)).ok();
    let env = BTreeMap::new();
    convert(&ComposeInput { stack, path: &shown, text: &text, env: &env, env_file: &env_file })
        .map_err(|e| e.to_string())
}

/// Every `stack deploy` step's compose file converts (unless the step expects an error);
/// otherwise the step's line and why.
pub fn check_compose_files(scenario: &Scenario) -> Result<(), ScenarioError> {
    for step in &scenario.steps {
        if let Action::Run { command, expect_error: None, .. } = &step.action {
            if let Command::Stack(StackCommand::Deploy { stack, file, .. }) = command.as_ref() {
                load_compose(&scenario.file, file, stack).map_err(|message| ScenarioError::Parse {
                    file: scenario.file.clone(),
                    line: step.line,
                    message,
                })?;
            }
        }
    }
    Ok(())
}

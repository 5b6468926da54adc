//! The operator's terminal: confirmation of destructive steps and progress bars.

use std::io::{BufRead, IsTerminal, Write};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::{OpsError, Result};

/// Asks "Proceed? [y/N]" after `what` when stdin and stderr are a terminal; `yes` skips the
/// question. Without a terminal and without `yes` it refuses: a script must say `--yes`.
pub fn confirm(what: &str, yes: bool) -> Result<()> {
    if yes {
        return Ok(());
    }
    if !(std::io::stdin().is_terminal() && std::io::stderr().is_terminal()) {
        return Err(OpsError::Refused(format!(
            "refusing to {what} without confirmation: no terminal to ask on; pass --yes to proceed"
        )));
    }
    let mut err = std::io::stderr();
    let _ = write!(err, "About to {what}.\nProceed? [y/N] ");
    let _ = err.flush();
    let mut answer = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut answer)
        .map_err(|e| OpsError::Refused(format!("no answer ({e}): nothing done")))?;
    match answer.trim().to_ascii_lowercase().as_str() {
        "y" | "yes" => Ok(()),
        _ => Err(OpsError::Refused("not confirmed: nothing done".into())),
    }
}

/// A progress bar of `len` steps, drawn only when stdout is a terminal.
pub fn progress(len: u64, what: &str) -> ProgressBar {
    let target = if std::io::stdout().is_terminal() {
        ProgressDrawTarget::stdout()
    } else {
        ProgressDrawTarget::hidden()
    };
    let bar = ProgressBar::with_draw_target(Some(len), target);
    if let Ok(style) = ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} ({elapsed})") {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(what.to_string());
    bar
}

//! Finds the workspace's built binaries next to the running test executable, so end-to-end
//! tests run exactly what `cargo build --workspace --bins` produced, never a copy on `PATH`.

use std::path::PathBuf;

use anyhow::{Context, bail};

/// The path of the built binary `name` (for example `lanepay`) in the same target profile
/// directory as the running test.
pub fn built_binary(name: &str) -> anyhow::Result<PathBuf> {
    let test_executable =
        std::env::current_exe().context("cannot tell where the test executable is")?;
    // Test executables live in target/<profile>/deps; binaries one level up.
    let mut directory = test_executable
        .parent()
        .context("the test executable has no parent directory")?;
    if directory.ends_with("deps") {
        directory = directory
            .parent()
            .context("the deps directory has no parent directory")?;
    }
    let path = directory.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    if !path.is_file() {
        bail!(
            "{} is missing: end-to-end tests run the built binaries, so run \
             `cargo build --workspace --bins` first (CI does this before `cargo test`)",
            path.display()
        );
    }
    Ok(path)
}

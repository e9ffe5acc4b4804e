//! The file inputs: the config file (`--config` / `CONFIG`, a ConfigMap in production) and a Job
//! template override (`job.template`). Read here, parsed and validated by the core.

use std::path::Path;

use anyhow::Context as _;
use chain_core::{
    job::{BUILTIN_TEMPLATE, RenderError},
    settings::{Settings, SettingsError},
};

/// Reads and validates the config file at `path`.
pub fn load(path: &Path) -> Result<Settings, SettingsError> {
    let display = path.display().to_string();
    let text = std::fs::read_to_string(path)
        .map_err(|source| SettingsError::Read { path: display.clone(), source })?;
    Settings::from_yaml(&text, &display)
}

/// Loads `path` when given, else the built-in defaults.
pub fn load_or_default(path: Option<&Path>) -> anyhow::Result<Settings> {
    match path {
        Some(p) => load(p).with_context(|| "failed to load the configuration (--config / CONFIG)"),
        None => Ok(Settings::default()),
    }
}

/// The template text and where it came from (`builtin` or the configured path).
pub fn load_template(settings: &Settings) -> Result<(String, String), RenderError> {
    match &settings.job.template {
        None => Ok((BUILTIN_TEMPLATE.to_string(), "builtin".to_string())),
        Some(path) => std::fs::read_to_string(path)
            .map(|t| (t, path.clone()))
            .map_err(|source| RenderError::ReadTemplate { path: path.clone(), source }),
    }
}

//! The file inputs: the config file (`--config` / `CONFIG`, a ConfigMap in production) and a Job
//! template override (`job.template`). Read here, parsed and validated by the core.

use std::path::Path;

use anyhow::Context as _;
use chain_core::{
    job::{BUILTIN_TEMPLATE, RenderError},
    settings::{Settings, SettingsError},
};

/// Reads and validates the config file at `path`. A `job.template` file name is resolved next
/// to it (in a cluster, the key of the config ConfigMap mounted beside `config.yaml`), and the
/// template is checked there, once, before any command uses it
/// ([`chain_core::job::check_template`], QA A6): `render`, `manifests`, `config` and every
/// chain Job load their settings here.
///
/// Errors: [`SettingsError`] for the file, [`RenderError`] for the template (both exit 2).
pub fn load(path: &Path) -> anyhow::Result<Settings> {
    let settings = load_settings(path)?;
    if settings.job.template.is_some() {
        let (text, origin) = load_template(&settings)?;
        chain_core::job::check_template(&settings, &text, &origin)?;
    }
    Ok(settings)
}

/// [`load`] without the template check.
fn load_settings(path: &Path) -> Result<Settings, SettingsError> {
    let display = path.display().to_string();
    let text = std::fs::read_to_string(path)
        .map_err(|source| SettingsError::Read { path: display.clone(), source })?;
    let mut settings = Settings::from_yaml(&text, &display)?;
    if let Some(t) = settings.job.template.as_mut()
        && Path::new(t.as_str()).is_relative()
    {
        let dir = path.parent().unwrap_or(Path::new(""));
        *t = dir.join(t.as_str()).display().to_string();
    }
    Ok(settings)
}

/// Loads `path` when given, else the built-in defaults.
pub fn load_or_default(path: Option<&Path>) -> anyhow::Result<Settings> {
    match path {
        Some(p) => load(p).context("failed to load the configuration (--config / CONFIG)"),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_template_file_name_is_resolved_next_to_the_config_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.yaml");
        std::fs::write(&path, "job:\n  template: job.yaml.j2\n").unwrap();
        let s = load_settings(&path).unwrap();
        assert_eq!(s.job.template.unwrap(), dir.path().join("job.yaml.j2").display().to_string());
        std::fs::write(&path, "job:\n  template: /opt/site/job.yaml.j2\n").unwrap();
        assert_eq!(load_settings(&path).unwrap().job.template.unwrap(), "/opt/site/job.yaml.j2");
    }
}

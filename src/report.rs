//! `report`.

/// placeholder
pub async fn command(
    _settings: &crate::settings::Settings,
    _context: Option<&str>,
    _args: &crate::cli::ReportArgs,
) -> anyhow::Result<()> {
    Ok(())
}

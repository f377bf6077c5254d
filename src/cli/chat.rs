//! The chat screen from the command line: `sotto` on a registered profile, and `sotto demo`.
//!
//! Owns what the binary hands the TUI (options from the config, the greeting) and where the
//! demo logs. Must not draw anything itself: `sotto::tui` does.

use std::path::Path;

use anyhow::{Result, anyhow};
use sotto::client::manager;
use sotto::client::store::Store;
use sotto::config::Config;

use super::session::RelayChoice;

fn tui_options(config: &Config) -> Result<sotto::tui::Options> {
    Ok(sotto::tui::Options {
        keys: sotto::tui::keys::KeyMap::from_config(&config.keys).map_err(|e| anyhow!(e))?,
        bell: config.bell.unwrap_or(true),
        open: None,
        greeting: None,
        mouse: config.mouse.unwrap_or(true),
        clock: sotto::tui::clock::Clock::new(
            sotto::tui::clock::Zone::Local,
            config
                .time_format
                .as_deref()
                .unwrap_or(sotto::tui::clock::DEFAULT_TIME_FORMAT),
        )?,
        contacts_min_width: config
            .contacts_min_width
            .unwrap_or(sotto::tui::layout::DEFAULT_CONTACTS_MIN_WIDTH),
        notify: match &config.notify {
            Some(s) => s.parse().map_err(|e: String| anyhow!(e))?,
            None => sotto::tui::notify::Mode::default(),
        },
        notify_via: match &config.notify_via {
            Some(s) => s.parse().map_err(|e: String| anyhow!(e))?,
            None => sotto::tui::notifier::Via::default(),
        },
        private_dir: None,
        images: config.images.unwrap_or(true),
        opener: config.opener.clone(),
    })
}

/// The chat screen on a registered profile.
pub async fn chat(config: &Config, dir: &Path, relay: RelayChoice) -> Result<()> {
    let mut hangup = sotto::tui::Hangup::new()?;
    let me = Store::open(dir)?
        .registration()
        .map_err(|e| anyhow!("{e}; or try `sotto demo`"))?
        .handle;
    let mut opts = tui_options(config)?;
    opts.private_dir = Some(dir.to_path_buf());
    let manager = relay.spawn(dir)?;
    sotto::tui::run(manager, me, opts, &mut hangup).await?;
    Ok(())
}

/// `sotto demo`: its log goes in its own temporary directory, and goes with it.
pub async fn demo(config: &Config) -> Result<()> {
    let dir = sotto::demo::Demo::create_dir()?;
    sotto::logs::init(
        Some(&dir.path().join(sotto::demo::LOG_FILE)),
        config.log.as_deref(),
    );
    let mut hangup = sotto::tui::Hangup::new()?;
    let mut opts = tui_options(config)?;
    let demo = sotto::demo::Demo::start_in(dir).await?;
    opts.open = Some(sotto::demo::BOT.to_string());
    opts.private_dir = Some(demo.you.clone());
    opts.greeting = Some(format!(
        "say hi to {}; {} switches to a secret thread; ? for help",
        sotto::demo::BOT,
        opts.keys.toggle_secret.label()
    ));
    let manager = manager::spawn_configured(&demo.you, None, false, config.manager_settings())?;
    let result = sotto::tui::run(manager, sotto::demo::YOU.to_string(), opts, &mut hangup).await;
    demo.stop().await;
    result?;
    Ok(())
}

//! Settings: TOML file layered under `BCCI_…__…` environment variables.
//!
//! Every struct refuses unknown keys, so a typo in the file is an error that
//! names the key instead of a silently ignored setting.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use ipnet::IpNet;
use jiff::civil::Date;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::domain::retry::RetryPolicy;

/// All settings of one gateway process.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    #[serde(default)]
    pub server: ServerSettings,
    #[serde(default)]
    pub log: LogSettings,
    #[serde(default)]
    pub store: StoreSettings,
    pub postal: PostalSettings,
    pub intake: IntakeSettings,
    pub admin: AdminSettings,
    #[serde(default)]
    pub retry: RetrySettings,
    #[serde(default)]
    pub sla: SlaSettings,
    #[serde(default)]
    pub calendar: CalendarSettings,
    #[serde(default)]
    pub retention: RetentionSettings,
    #[serde(default)]
    pub board: BoardSettings,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSettings {
    pub listen: SocketAddr,
    pub admin_listen: SocketAddr,
    pub max_body_bytes: usize,
    pub shutdown_grace_s: u64,
    pub trusted_proxies: Vec<IpNet>,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            listen: "0.0.0.0:8080".parse().expect("valid address"),
            admin_listen: "127.0.0.1:9090".parse().expect("valid address"),
            max_body_bytes: 65_536,
            shutdown_grace_s: 20,
            trusted_proxies: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSettings {
    pub level: String,
    pub format: LogFormat,
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            level: "info".into(),
            format: LogFormat::Json,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Json,
    Text,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreSettings {
    pub url: String,
    pub lease_s: u64,
}

impl Default for StoreSettings {
    fn default() -> Self {
        Self {
            url: "sqlite://data/bcci.db".into(),
            lease_s: 60,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostalSettings {
    pub base_url: String,
    #[serde(default = "defaults::no_secret")]
    pub username: SecretString,
    #[serde(default = "defaults::no_secret")]
    pub password: SecretString,
    /// Read `username` from this file instead (a systemd credential, a
    /// mounted Kubernetes Secret); `BCCI_POSTAL__USERNAME_FILE`.
    #[serde(default)]
    pub username_file: Option<PathBuf>,
    /// Read `password` from this file instead; `BCCI_POSTAL__PASSWORD_FILE`.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    pub customer_code: String,
    #[serde(default)]
    pub contract_code: String,
    #[serde(default = "defaults::service_code")]
    pub default_service_code: String,
    #[serde(default = "defaults::service_codes")]
    pub service_codes: Vec<String>,
    #[serde(default)]
    pub pickup_fee_addon: String,
    #[serde(default = "defaults::content_note_max_chars")]
    pub content_note_max_chars: usize,
    #[serde(default)]
    pub address_map: String,
    #[serde(default = "defaults::transient_errors")]
    pub transient_errors: Vec<String>,
    #[serde(default)]
    pub webhook_keys: Vec<SecretString>,
    /// Read `webhook_keys` from this file instead, one key per line.
    #[serde(default)]
    pub webhook_keys_file: Option<PathBuf>,
    #[serde(default)]
    pub webhook_allow_ips: Vec<IpNet>,
    #[serde(default = "defaults::webhook_max_body_bytes")]
    pub webhook_max_body_bytes: usize,
    #[serde(default = "defaults::timeout_ms")]
    pub timeout_ms: u64,
    #[serde(default = "defaults::max_requests_per_second")]
    pub max_requests_per_second: u32,
    #[serde(default = "defaults::lookup_delay_s")]
    pub lookup_delay_s: u64,
    #[serde(default = "defaults::reconcile_after_s")]
    pub reconcile_after_s: u64,
    /// Days a delivered COD return stays polled for Vietnam Post's code 21
    /// (COD paid); past them it counts in `bcci_cod_unsettled`.
    #[serde(default = "defaults::cod_settle_days")]
    pub cod_settle_days: u32,
    /// Consecutive transient failures that open the circuit breaker.
    #[serde(default = "defaults::breaker_failures")]
    pub breaker_failures: u32,
    /// Seconds the breaker stays open before one probe call is let through.
    #[serde(default = "defaults::breaker_open_s")]
    pub breaker_open_s: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntakeSettings {
    #[serde(default = "defaults::timeout_ms")]
    pub timeout_ms: u64,
    pub clients: Vec<ClientSettings>,
}

/// One intake system allowed to create handoffs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientSettings {
    pub name: String,
    pub token_sha256s: Vec<String>,
    #[serde(default = "defaults::requests_per_second")]
    pub requests_per_second: u32,
    pub callback_url: String,
    #[serde(default)]
    pub callback_secrets: Vec<SecretString>,
    /// Read `callback_secrets` from this file instead, one per line.
    #[serde(default)]
    pub callback_secrets_file: Option<PathBuf>,
    #[serde(default)]
    pub callback_format: CallbackFormat,
    #[serde(default)]
    pub customer_code: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CallbackFormat {
    #[default]
    Json,
    Xml,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSettings {
    /// Hashes of operator tokens for scripts: they act under the
    /// `X-Operator` name they send.
    #[serde(default)]
    pub token_sha256s: Vec<String>,
    /// Named accounts (`[[admin.accounts]]`): the console's sign-in, and
    /// admin API tokens that act under the account's own name.
    #[serde(default)]
    pub accounts: Vec<AccountSettings>,
    /// Minutes a console session lasts after sign-in.
    #[serde(default = "defaults::session_minutes")]
    pub session_minutes: u32,
    /// Mark the console's cookies `Secure` always (the console is reached
    /// over HTTPS through a proxy); without it they are `Secure` when the
    /// proxy sends `X-Forwarded-Proto: https`.
    #[serde(default)]
    pub secure_cookies: bool,
}

/// One person or team signing in to the console, or calling the admin API.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountSettings {
    pub name: String,
    pub role: Role,
    pub token_sha256s: Vec<String>,
}

/// What an account may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads everything an operator reads (a clerk at the desk); no actions.
    Viewer,
    /// Reads and acts: replays, resolves, erases, test callbacks.
    Operator,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
        }
    }
}

/// The public board of the desk's figures on the main listener (`/board`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BoardSettings {
    pub enabled: bool,
    /// Seconds between the kiosk page's own refreshes.
    pub kiosk_refresh_s: u32,
    /// Seconds a period's figures are served again before they are read
    /// anew (each reading is 13 statistics queries); 0 reads every time.
    pub cache_s: u32,
}

impl Default for BoardSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            kiosk_refresh_s: 60,
            cache_s: 60,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetrySettings {
    pub initial_ms: u64,
    pub max_ms: u64,
    pub deadline_s: u64,
}

impl Default for RetrySettings {
    fn default() -> Self {
        Self {
            initial_ms: 5_000,
            max_ms: 3_600_000,
            deadline_s: 172_800,
        }
    }
}

impl RetrySettings {
    pub fn policy(&self) -> RetryPolicy {
        RetryPolicy {
            initial: Duration::from_millis(self.initial_ms),
            max: Duration::from_millis(self.max_ms),
            deadline: Duration::from_secs(self.deadline_s),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SlaSettings {
    pub class_one_provinces: Vec<String>,
    pub remote_wards: BTreeMap<String, u8>,
}

impl Default for SlaSettings {
    fn default() -> Self {
        Self {
            class_one_provinces: ["01", "31", "48", "79", "92"].map(String::from).to_vec(),
            remote_wards: BTreeMap::from([("26732".to_owned(), 4)]),
        }
    }
}

/// `[calendar]`: what a decree decides beyond the statutory holidays, which
/// are computed for every year (`domain::holidays`). The default is the
/// statute alone.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CalendarSettings {
    /// Days off beyond the statute (e.g. a day swapped by a Prime Minister's decision).
    pub extra_holidays: Vec<Date>,
    /// Make-up working days (usually Saturdays); they win over any day off.
    pub extra_working_days: Vec<Date>,
    /// Deprecated: read as `extra_holidays`, so that files listing every
    /// holiday still load (listing a statutory holiday again is harmless).
    pub holidays: Vec<Date>,
}

impl CalendarSettings {
    /// `extra_holidays` and the deprecated `holidays`, sorted, without repeats.
    pub fn days_off(&self) -> Vec<Date> {
        let days: std::collections::BTreeSet<Date> = self
            .extra_holidays
            .iter()
            .chain(&self.holidays)
            .copied()
            .collect();
        days.into_iter().collect()
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionSettings {
    /// Counted from the later of the terminal time and the SLA due date: a
    /// citizen may complain up to six months after the delivery deadline
    /// (TT 17/2017 art. 8), so the default keeps a month beyond that.
    pub personal_data_days: u32,
}

impl Default for RetentionSettings {
    fn default() -> Self {
        Self {
            personal_data_days: 210,
        }
    }
}

mod defaults {
    pub fn session_minutes() -> u32 {
        480
    }
    pub fn service_code() -> String {
        "CTN009".into()
    }
    pub fn service_codes() -> Vec<String> {
        ["CTN009", "ETN011", "ETN013"].map(String::from).to_vec()
    }
    pub fn content_note_max_chars() -> usize {
        200
    }
    pub fn transient_errors() -> Vec<String> {
        vec!["hệ thống bận".into(), "timeout".into()]
    }
    pub fn webhook_max_body_bytes() -> usize {
        1_048_576
    }
    pub fn timeout_ms() -> u64 {
        10_000
    }
    pub fn max_requests_per_second() -> u32 {
        20
    }
    pub fn lookup_delay_s() -> u64 {
        60
    }
    pub fn reconcile_after_s() -> u64 {
        21_600
    }
    pub fn cod_settle_days() -> u32 {
        30
    }
    pub fn breaker_failures() -> u32 {
        5
    }
    pub fn breaker_open_s() -> u64 {
        30
    }
    /// A secret not given (it may come from its `_file` key).
    pub fn no_secret() -> secrecy::SecretString {
        secrecy::SecretString::from(String::new())
    }
    pub fn requests_per_second() -> u32 {
        50
    }
}

/// Only `BCCI_SECTION__KEY` variables are configuration; others, such as the
/// ones Kubernetes injects for Services, are ignored.
fn configuration_variables(env: Env) -> Env {
    env.filter(|key| key.as_str().contains("__"))
        .split("__")
        .lowercase(true)
}

/// Where to reach the admin listener of the gateway `file` (and the
/// `BCCI_SERVER__ADMIN_LISTEN` variable) configures, for `healthcheck`: only
/// that key is read, so no secret needs to be present. An unspecified
/// address (`0.0.0.0`, `::`) is reached on loopback.
pub fn admin_address(file: Option<&Path>) -> Result<SocketAddr, ConfigError> {
    let mut figment = Figment::new();
    if let Some(file) = file {
        figment = figment.merge(Toml::file_exact(file));
    }
    let listen: Option<SocketAddr> = figment
        .merge(configuration_variables(Env::prefixed("BCCI_")))
        .extract_inner("server.admin_listen")
        .or_else(|e| {
            if e.missing() {
                Ok(None)
            } else {
                Err(Box::new(e))
            }
        })?;
    let mut listen = listen.unwrap_or_else(|| ServerSettings::default().admin_listen);
    if listen.ip().is_unspecified() {
        listen.set_ip(match listen {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    Ok(listen)
}

/// The content of a secret's file; the problem names the key, never the content.
fn secret_file(path: &Path, key: &str) -> Result<String, String> {
    std::fs::read_to_string(path)
        .map_err(|e| format!("{key}_file: cannot read {}: {e}", path.display()))
}

fn read_one(
    value: &mut SecretString,
    file: &Option<PathBuf>,
    key: &str,
    problems: &mut Vec<String>,
) {
    let Some(path) = file else { return };
    if !value.expose_secret().is_empty() {
        problems.push(format!("{key} and {key}_file are both set; keep one"));
        return;
    }
    match secret_file(path, key) {
        Ok(text) => {
            let text = text.strip_suffix('\n').unwrap_or(&text);
            let text = text.strip_suffix('\r').unwrap_or(text);
            *value = SecretString::from(text.to_owned());
        }
        Err(problem) => problems.push(problem),
    }
}

fn read_list(
    values: &mut Vec<SecretString>,
    file: &Option<PathBuf>,
    key: &str,
    problems: &mut Vec<String>,
) {
    let Some(path) = file else { return };
    if !values.is_empty() {
        problems.push(format!("{key} and {key}_file are both set; keep one"));
        return;
    }
    match secret_file(path, key) {
        Ok(text) => {
            *values = text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(|l| SecretString::from(l.to_owned()))
                .collect();
        }
        Err(problem) => problems.push(problem),
    }
}

/// A configuration that cannot be used, with every reason.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: {0}")]
    Load(#[from] Box<figment::Error>),
    #[error("configuration is invalid:\n  - {}", .0.join("\n  - "))]
    Invalid(Vec<String>),
}

impl Settings {
    /// Loads the file (if given) under the environment, then validates.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load_from(file, Env::prefixed("BCCI_"))
    }

    /// As [`Settings::load`] with only the file, for tests that must not read
    /// the process environment.
    pub fn load_file_only(file: &Path) -> Result<Self, ConfigError> {
        let settings: Settings = Figment::new()
            .merge(Toml::file_exact(file))
            .extract()
            .map_err(Box::new)?;
        settings.finish()
    }

    /// Loads from a TOML string and an environment provider.
    pub fn load_from(file: Option<&Path>, env: Env) -> Result<Self, ConfigError> {
        let mut figment = Figment::new();
        if let Some(file) = file {
            figment = figment.merge(Toml::file_exact(file));
        }
        let settings: Settings = figment
            .merge(configuration_variables(env))
            .extract()
            .map_err(Box::new)?;
        settings.finish()
    }

    /// Parses a TOML document (tests and `check-config`).
    pub fn from_toml(toml: &str) -> Result<Self, ConfigError> {
        let settings: Settings = Figment::new()
            .merge(Toml::string(toml))
            .extract()
            .map_err(Box::new)?;
        settings.finish()
    }

    /// Reads the secrets named by `_file` keys, then validates.
    fn finish(mut self) -> Result<Self, ConfigError> {
        self.read_secret_files()?;
        self.validate()?;
        Ok(self)
    }

    /// Replaces each secret that has a `_file` key by the file's content:
    /// the whole file less its final line break for a single secret, one
    /// secret per non-empty line for a list. Both a value and its file is
    /// an error, as is a file that cannot be read.
    fn read_secret_files(&mut self) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        let p = &mut self.postal;
        read_one(
            &mut p.username,
            &p.username_file,
            "postal.username",
            &mut problems,
        );
        read_one(
            &mut p.password,
            &p.password_file,
            "postal.password",
            &mut problems,
        );
        read_list(
            &mut p.webhook_keys,
            &p.webhook_keys_file,
            "postal.webhook_keys",
            &mut problems,
        );
        for (i, c) in self.intake.clients.iter_mut().enumerate() {
            read_list(
                &mut c.callback_secrets,
                &c.callback_secrets_file,
                &format!("intake.clients[{i}].callback_secrets"),
                &mut problems,
            );
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(problems))
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        let mut need = |ok: bool, msg: String| {
            if !ok {
                problems.push(msg);
            }
        };
        need(
            url_ok(&self.postal.base_url),
            "postal.base_url must be an http(s) URL".into(),
        );
        need(
            !self.postal.username.expose_secret().is_empty(),
            "postal.username must not be empty".into(),
        );
        need(
            !self.postal.password.expose_secret().is_empty(),
            "postal.password must not be empty".into(),
        );
        need(
            !self.postal.customer_code.is_empty(),
            "postal.customer_code must not be empty".into(),
        );
        need(
            !self.postal.webhook_keys.is_empty()
                && self
                    .postal
                    .webhook_keys
                    .iter()
                    .all(|k| k.expose_secret().len() >= 16),
            "postal.webhook_keys needs at least one key of 16 or more characters".into(),
        );
        need(
            self.postal
                .service_codes
                .contains(&self.postal.default_service_code),
            "postal.default_service_code must be one of postal.service_codes".into(),
        );
        need(
            self.postal.max_requests_per_second > 0,
            "postal.max_requests_per_second must be at least 1".into(),
        );
        need(
            self.postal.content_note_max_chars >= 80,
            "postal.content_note_max_chars must be at least 80 (the dossier code is always kept whole)".into(),
        );
        need(
            self.server.max_body_bytes > 0,
            "server.max_body_bytes must be positive".into(),
        );
        need(
            !self.intake.clients.is_empty(),
            "intake.clients needs at least one [[intake.clients]] entry".into(),
        );
        let mut names = std::collections::HashSet::new();
        let mut hashes = std::collections::HashSet::new();
        for (i, c) in self.intake.clients.iter().enumerate() {
            let at = format!("intake.clients[{i}]");
            for fault in named_tokens(&at, &c.name, &c.token_sha256s, &mut names, &mut hashes) {
                need(false, fault);
            }
            need(
                url_ok(&c.callback_url),
                format!("{at}.callback_url must be an http(s) URL"),
            );
            need(
                !c.callback_secrets.is_empty()
                    && c.callback_secrets
                        .iter()
                        .all(|s| is_callback_secret(s.expose_secret())),
                format!("{at}.callback_secrets needs at least one whsec_<base64> secret"),
            );
            need(
                c.requests_per_second > 0,
                format!("{at}.requests_per_second must be at least 1"),
            );
        }
        need(
            !self.admin.token_sha256s.is_empty() || !self.admin.accounts.is_empty(),
            "admin needs token_sha256s or at least one [[admin.accounts]] entry".into(),
        );
        let mut admin_hashes = std::collections::HashSet::new();
        for h in &self.admin.token_sha256s {
            need(
                is_sha256_hex(h),
                "admin.token_sha256s has an entry that is not 64 hex digits".into(),
            );
            admin_hashes.insert(h.to_ascii_lowercase());
        }
        let mut account_names = std::collections::HashSet::new();
        for (i, a) in self.admin.accounts.iter().enumerate() {
            let at = format!("admin.accounts[{i}]");
            let faults = named_tokens(
                &at,
                &a.name,
                &a.token_sha256s,
                &mut account_names,
                &mut admin_hashes,
            );
            for fault in faults {
                need(false, fault);
            }
            need(
                a.name.chars().count() <= 200 && !a.name.chars().any(char::is_control),
                format!(
                    "{at}.name must be at most 200 characters, none of them control characters"
                ),
            );
        }
        need(
            self.admin.session_minutes >= 1,
            "admin.session_minutes must be at least 1".into(),
        );
        need(
            self.board.kiosk_refresh_s >= 5,
            "board.kiosk_refresh_s must be at least 5".into(),
        );
        let longest_call_s = self
            .postal
            .timeout_ms
            .max(self.intake.timeout_ms)
            .div_ceil(1000);
        need(
            self.store.lease_s >= 3 * longest_call_s,
            format!(
                "store.lease_s must be at least 3 × the longest call timeout ({} s)",
                3 * longest_call_s
            ),
        );
        for day in &self.calendar.extra_working_days {
            need(
                !self.calendar.days_off().contains(day),
                format!(
                    "calendar.extra_working_days has {day}, which calendar.extra_holidays (or holidays) also lists"
                ),
            );
        }
        need(
            self.retry.initial_ms > 0 && self.retry.initial_ms <= self.retry.max_ms,
            "retry.initial_ms must be positive and at most retry.max_ms".into(),
        );
        need(
            self.store.url.starts_with("sqlite:") || self.store.url.starts_with("postgres"),
            "store.url must be sqlite://… or postgres://…".into(),
        );
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(problems))
        }
    }

    /// The same settings as TOML with every secret replaced by `[redacted]`.
    pub fn redacted_toml(&self) -> String {
        redacted::render(self)
    }

    /// Names of the secrets that were read from the file rather than the environment.
    pub fn secrets_in_file(file_text: &str) -> Vec<&'static str> {
        let doc: toml::Table = match file_text.parse() {
            Ok(t) => t,
            Err(_) => return Vec::new(),
        };
        let mut found = Vec::new();
        let postal = doc.get("postal").and_then(|p| p.as_table());
        for key in ["username", "password", "webhook_keys"] {
            if postal.is_some_and(|p| p.contains_key(key)) {
                found.push(match key {
                    "username" => "postal.username",
                    "password" => "postal.password",
                    _ => "postal.webhook_keys",
                });
            }
        }
        let clients = doc
            .get("intake")
            .and_then(|i| i.get("clients"))
            .and_then(|c| c.as_array());
        if clients.is_some_and(|cs| cs.iter().any(|c| c.get("callback_secrets").is_some())) {
            found.push("intake.clients[].callback_secrets");
        }
        found
    }

    pub fn postal_timeout(&self) -> Duration {
        Duration::from_millis(self.postal.timeout_ms)
    }
}

fn url_ok(url: &str) -> bool {
    (url.starts_with("http://") || url.starts_with("https://")) && url.len() > "https://".len()
}

/// A Standard Webhooks secret: `whsec_` and base64 of at least 16 bytes.
fn is_callback_secret(s: &str) -> bool {
    use base64::Engine;
    s.strip_prefix("whsec_")
        .and_then(|b64| base64::engine::general_purpose::STANDARD.decode(b64).ok())
        .is_some_and(|key| key.len() >= 16)
}

/// The faults of one named holder of tokens (an intake client, an admin
/// account) at `at`: an empty name or one used twice, no hash, a hash that
/// is not 64 hex digits or that another holder has too.
fn named_tokens(
    at: &str,
    name: &str,
    tokens: &[String],
    names: &mut std::collections::HashSet<String>,
    hashes: &mut std::collections::HashSet<String>,
) -> Vec<String> {
    let mut faults = Vec::new();
    if name.trim().is_empty() {
        faults.push(format!("{at}.name must not be empty"));
    }
    if !names.insert(name.to_owned()) {
        faults.push(format!("{at}.name {name:?} is used twice"));
    }
    if tokens.is_empty() {
        faults.push(format!("{at}.token_sha256s needs at least one hash"));
    }
    for h in tokens {
        if !is_sha256_hex(h) {
            faults.push(format!(
                "{at}.token_sha256s has an entry that is not 64 hex digits"
            ));
        }
        if !hashes.insert(h.to_ascii_lowercase()) {
            faults.push(format!(
                "{at}.token_sha256s repeats a token hash used elsewhere"
            ));
        }
    }
    faults
}

fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

mod redacted {
    use super::Settings;
    use secrecy::ExposeSecret;
    use std::fmt::Write;

    const R: &str = "\"[redacted]\"";

    fn list(items: &[String]) -> String {
        let quoted: Vec<String> = items.iter().map(|s| format!("{s:?}")).collect();
        format!("[{}]", quoted.join(", "))
    }

    fn secrets(items: &[secrecy::SecretString]) -> String {
        let shown: Vec<&str> = items
            .iter()
            .map(|s| {
                if s.expose_secret().is_empty() {
                    "\"\""
                } else {
                    R
                }
            })
            .collect();
        format!("[{}]", shown.join(", "))
    }

    pub fn render(s: &Settings) -> String {
        let mut o = String::new();
        let nets = |n: &[ipnet::IpNet]| list(&n.iter().map(|x| x.to_string()).collect::<Vec<_>>());
        let _ = writeln!(o, "[server]");
        let _ = writeln!(o, "listen = \"{}\"", s.server.listen);
        let _ = writeln!(o, "admin_listen = \"{}\"", s.server.admin_listen);
        let _ = writeln!(o, "max_body_bytes = {}", s.server.max_body_bytes);
        let _ = writeln!(o, "shutdown_grace_s = {}", s.server.shutdown_grace_s);
        let _ = writeln!(o, "trusted_proxies = {}", nets(&s.server.trusted_proxies));
        let _ = writeln!(
            o,
            "\n[log]\nlevel = {:?}\nformat = \"{}\"",
            s.log.level,
            match s.log.format {
                super::LogFormat::Json => "json",
                super::LogFormat::Text => "text",
            }
        );
        let _ = writeln!(
            o,
            "\n[store]\nurl = {}\nlease_s = {}",
            redact_url(&s.store.url),
            s.store.lease_s
        );
        let p = &s.postal;
        let _ = writeln!(o, "\n[postal]");
        let _ = writeln!(o, "base_url = {:?}", p.base_url);
        let _ = writeln!(o, "username = {R}\npassword = {R}");
        for (key, file) in [
            ("username_file", &p.username_file),
            ("password_file", &p.password_file),
            ("webhook_keys_file", &p.webhook_keys_file),
        ] {
            if let Some(file) = file {
                let _ = writeln!(o, "{key} = {:?}", file.display().to_string());
            }
        }
        let _ = writeln!(
            o,
            "customer_code = {:?}\ncontract_code = {:?}",
            p.customer_code, p.contract_code
        );
        let _ = writeln!(o, "default_service_code = {:?}", p.default_service_code);
        let _ = writeln!(o, "service_codes = {}", list(&p.service_codes));
        let _ = writeln!(o, "pickup_fee_addon = {:?}", p.pickup_fee_addon);
        let _ = writeln!(o, "content_note_max_chars = {}", p.content_note_max_chars);
        let _ = writeln!(o, "address_map = {:?}", p.address_map);
        let _ = writeln!(o, "transient_errors = {}", list(&p.transient_errors));
        let _ = writeln!(o, "webhook_keys = {}", secrets(&p.webhook_keys));
        let _ = writeln!(o, "webhook_allow_ips = {}", nets(&p.webhook_allow_ips));
        let _ = writeln!(o, "webhook_max_body_bytes = {}", p.webhook_max_body_bytes);
        let _ = writeln!(o, "timeout_ms = {}", p.timeout_ms);
        let _ = writeln!(o, "max_requests_per_second = {}", p.max_requests_per_second);
        let _ = writeln!(o, "lookup_delay_s = {}", p.lookup_delay_s);
        let _ = writeln!(o, "reconcile_after_s = {}", p.reconcile_after_s);
        let _ = writeln!(o, "cod_settle_days = {}", p.cod_settle_days);
        let _ = writeln!(o, "breaker_failures = {}", p.breaker_failures);
        let _ = writeln!(o, "breaker_open_s = {}", p.breaker_open_s);
        let _ = writeln!(o, "\n[intake]\ntimeout_ms = {}", s.intake.timeout_ms);
        for c in &s.intake.clients {
            let _ = writeln!(o, "\n[[intake.clients]]");
            let _ = writeln!(o, "name = {:?}", c.name);
            let _ = writeln!(o, "token_sha256s = {}", list(&c.token_sha256s));
            let _ = writeln!(o, "requests_per_second = {}", c.requests_per_second);
            let _ = writeln!(o, "callback_url = {:?}", c.callback_url);
            let _ = writeln!(o, "callback_secrets = {}", secrets(&c.callback_secrets));
            if let Some(file) = &c.callback_secrets_file {
                let _ = writeln!(
                    o,
                    "callback_secrets_file = {:?}",
                    file.display().to_string()
                );
            }
            let _ = writeln!(
                o,
                "callback_format = \"{}\"",
                match c.callback_format {
                    super::CallbackFormat::Json => "json",
                    super::CallbackFormat::Xml => "xml",
                }
            );
            let _ = writeln!(o, "customer_code = {:?}", c.customer_code);
        }
        let _ = writeln!(
            o,
            "\n[admin]\ntoken_sha256s = {}\nsession_minutes = {}\nsecure_cookies = {}",
            list(&s.admin.token_sha256s),
            s.admin.session_minutes,
            s.admin.secure_cookies
        );
        for a in &s.admin.accounts {
            let _ = writeln!(
                o,
                "\n[[admin.accounts]]\nname = {:?}\nrole = \"{}\"\ntoken_sha256s = {}",
                a.name,
                a.role.as_str(),
                list(&a.token_sha256s)
            );
        }
        let r = &s.retry;
        let _ = writeln!(
            o,
            "\n[retry]\ninitial_ms = {}\nmax_ms = {}\ndeadline_s = {}",
            r.initial_ms, r.max_ms, r.deadline_s
        );
        let wards: Vec<String> = s
            .sla
            .remote_wards
            .iter()
            .map(|(k, v)| format!("{k:?} = {v}"))
            .collect();
        let _ = writeln!(
            o,
            "\n[sla]\nclass_one_provinces = {}\nremote_wards = {{ {} }}",
            list(&s.sla.class_one_provinces),
            wards.join(", ")
        );
        let dates =
            |d: &[jiff::civil::Date]| list(&d.iter().map(|x| x.to_string()).collect::<Vec<_>>());
        let _ = writeln!(
            o,
            "\n[calendar]\nextra_holidays = {}\nextra_working_days = {}",
            dates(&s.calendar.days_off()),
            dates(&s.calendar.extra_working_days)
        );
        let _ = writeln!(
            o,
            "\n[retention]\npersonal_data_days = {}",
            s.retention.personal_data_days
        );
        let _ = writeln!(
            o,
            "\n[board]\nenabled = {}\nkiosk_refresh_s = {}\ncache_s = {}",
            s.board.enabled, s.board.kiosk_refresh_s, s.board.cache_s
        );
        o
    }

    /// Hides a password in a database URL.
    fn redact_url(url: &str) -> String {
        if let Some((scheme, rest)) = url.split_once("://")
            && let Some((auth, host)) = rest.split_once('@')
            && let Some((user, _password)) = auth.split_once(':')
        {
            return format!("{:?}", format!("{scheme}://{user}:[redacted]@{host}"));
        }
        format!("{url:?}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub const MINIMAL: &str = r#"
        [postal]
        base_url = "http://127.0.0.1:1"
        username = "u"
        password = "p"
        customer_code = "T000180585"
        webhook_keys = ["0123456789abcdef0123"]

        [[intake.clients]]
        name = "motcua"
        token_sha256s = ["9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"]
        callback_url = "http://127.0.0.1:2/cb"
        callback_secrets = ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"]

        [admin]
        token_sha256s = ["9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"]
    "#;

    #[test]
    fn a_minimal_file_gets_every_default() {
        let s = Settings::from_toml(MINIMAL).unwrap();
        assert_eq!(s.server.max_body_bytes, 65_536);
        assert_eq!(s.postal.lookup_delay_s, 60);
        assert_eq!(s.retry.deadline_s, 172_800);
        assert_eq!(s.sla.remote_wards.get("26732"), Some(&4));
        assert_eq!(s.intake.clients[0].requests_per_second, 50);
        assert!(s.calendar.days_off().is_empty(), "the statute alone");
        assert!(s.calendar.extra_working_days.is_empty());
    }

    #[test]
    fn an_old_calendar_listing_every_holiday_still_loads() {
        let toml = format!(
            "{MINIMAL}\n[calendar]\nholidays = [\"2026-01-01\", \"2026-02-16\", \"2026-02-20\", \"2026-12-24\"]\n"
        );
        let s = Settings::from_toml(&toml).unwrap();
        let calendar = crate::events::sla_rules(&s).calendar;
        for day in ["2026-01-01", "2026-02-16", "2026-02-20", "2026-12-24"] {
            assert!(!calendar.is_working_day(day.parse().unwrap()), "{day}");
        }
        assert!(calendar.is_working_day("2026-12-23".parse().unwrap()));
        assert_eq!(calendar.last_day(), "2026-12-31".parse().ok());
        // The redacted rendering carries them over under the new key.
        assert!(
            s.redacted_toml()
                .contains("extra_holidays = [\"2026-01-01\"")
        );
    }

    #[test]
    fn decreed_days_off_and_make_up_days_are_read() {
        let toml = format!(
            "{MINIMAL}\n[calendar]\nextra_holidays = [\"2025-01-27\"]\nholidays = [\"2024-02-08\"]\nextra_working_days = [\"2025-02-08\"]\n"
        );
        let s = Settings::from_toml(&toml).unwrap();
        assert_eq!(
            s.calendar.days_off(),
            ["2024-02-08", "2025-01-27"].map(|d| d.parse::<Date>().unwrap())
        );
        let calendar = crate::events::sla_rules(&s).calendar;
        assert!(!calendar.is_working_day("2025-01-27".parse().unwrap()));
        assert!(calendar.is_working_day("2025-02-08".parse().unwrap()));
    }

    #[test]
    fn a_day_both_off_and_made_up_is_an_error() {
        let toml = format!(
            "{MINIMAL}\n[calendar]\nextra_holidays = [\"2026-05-09\"]\nextra_working_days = [\"2026-05-09\"]\n"
        );
        let err = Settings::from_toml(&toml).unwrap_err().to_string();
        assert!(err.contains("calendar.extra_working_days"), "{err}");
    }

    #[test]
    fn accounts_are_checked_like_clients_and_may_replace_script_tokens() {
        const HASH: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
        const OTHER: &str = "60303ae22b998861bce3b28f33eec1be758a213c86c93c076dbe9f558c11c752";
        let script = format!("[admin]\n        token_sha256s = [\"{HASH}\"]");
        let accounts_only = MINIMAL.replace(
            &script,
            &format!(
                "[admin]\n[[admin.accounts]]\nname = \"Lan\"\nrole = \"viewer\"\ntoken_sha256s = [\"{OTHER}\"]"
            ),
        );
        assert_ne!(accounts_only, MINIMAL);
        let s = Settings::from_toml(&accounts_only).unwrap();
        assert_eq!(s.admin.accounts[0].role, Role::Viewer);
        assert_eq!(s.admin.session_minutes, 480);

        let neither = MINIMAL.replace(&script, "[admin]");
        let err = Settings::from_toml(&neither).unwrap_err().to_string();
        assert!(err.contains("[[admin.accounts]]"), "{err}");

        let bad = format!(
            "{MINIMAL}\n[[admin.accounts]]\nname = \"\"\nrole = \"operator\"\ntoken_sha256s = [\"{HASH}\", \"xyz\"]\n\
             [[admin.accounts]]\nname = \"Bình\"\nrole = \"operator\"\ntoken_sha256s = []\n\
             [[admin.accounts]]\nname = \"Bình\"\nrole = \"viewer\"\ntoken_sha256s = [\"{OTHER}\"]\n"
        );
        let err = Settings::from_toml(&bad).unwrap_err().to_string();
        for fault in [
            "admin.accounts[0].name must not be empty",
            "admin.accounts[0].token_sha256s repeats a token hash",
            "admin.accounts[0].token_sha256s has an entry that is not 64 hex digits",
            "admin.accounts[1].token_sha256s needs at least one hash",
            "admin.accounts[2].name \"Bình\" is used twice",
        ] {
            assert!(err.contains(fault), "{fault}: {err}");
        }
        let role = format!(
            "{MINIMAL}\n[[admin.accounts]]\nname = \"An\"\nrole = \"admin\"\ntoken_sha256s = [\"{OTHER}\"]\n"
        );
        let err = Settings::from_toml(&role).unwrap_err().to_string();
        assert!(err.contains("unknown variant"), "{err}");
    }

    #[test]
    fn unknown_keys_are_errors_naming_the_key() {
        let toml = format!("{MINIMAL}\n[retention]\npersonal_data_dayz = 3\n");
        let err = Settings::from_toml(&toml).unwrap_err().to_string();
        assert!(err.contains("personal_data_dayz"), "{err}");
    }

    #[test]
    fn secrets_may_be_read_from_files() {
        let dir = tempfile::tempdir().unwrap();
        let put = |name: &str, text: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            path.display().to_string()
        };
        let password = put("password", "from-a-file\n");
        let keys = put("keys", "key-one-0123456789\n\n  key-two-0123456789  \n");
        let secrets = put("secrets", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n");
        let toml = MINIMAL
            .replace("password = \"p\"", &format!("password_file = {password:?}"))
            .replace(
                "callback_secrets = [\"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"]",
                &format!("callback_secrets_file = {secrets:?}"),
            );
        let toml = replace_webhook_keys(&toml, &format!("webhook_keys_file = {keys:?}"));
        let s = Settings::from_toml(&toml).unwrap();
        assert_eq!(s.postal.password.expose_secret(), "from-a-file");
        let keys: Vec<&str> = s
            .postal
            .webhook_keys
            .iter()
            .map(|k| k.expose_secret())
            .collect();
        assert_eq!(keys, ["key-one-0123456789", "key-two-0123456789"]);
        assert_eq!(s.intake.clients[0].callback_secrets.len(), 1);
        // The redacted print names the file, never its content.
        let shown = s.redacted_toml();
        assert!(
            shown.contains(&password) && !shown.contains("from-a-file"),
            "{shown}"
        );

        // A value and its file, or a file that cannot be read, are refused
        // without showing any secret.
        let both = toml.replace(
            &format!("password_file = {password:?}"),
            &format!("password = \"p\"\npassword_file = {password:?}"),
        );
        let err = Settings::from_toml(&both).unwrap_err().to_string();
        assert!(
            err.contains("postal.password and postal.password_file"),
            "{err}"
        );
        let missing = toml.replace(&password, "/nonexistent/password");
        let err = Settings::from_toml(&missing).unwrap_err().to_string();
        assert!(
            err.contains("postal.password_file: cannot read /nonexistent/password"),
            "{err}"
        );
        assert!(!err.contains("from-a-file"), "{err}");
    }

    /// `MINIMAL` with its `webhook_keys = [...]` line replaced.
    fn replace_webhook_keys(toml: &str, with: &str) -> String {
        toml.lines()
            .map(|l| {
                if l.trim_start().starts_with("webhook_keys = ") {
                    with
                } else {
                    l
                }
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn missing_required_keys_are_named() {
        let toml = MINIMAL.replace("password = \"p\"", "");
        let err = Settings::from_toml(&toml).unwrap_err().to_string();
        assert!(err.contains("password"), "{err}");
    }

    #[test]
    fn secrets_never_show_in_debug_or_redacted_output() {
        let s = Settings::from_toml(MINIMAL).unwrap();
        for shown in [format!("{s:?}"), s.redacted_toml()] {
            assert!(
                !shown.contains("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
                "{shown}"
            );
            assert!(!shown.contains("0123456789abcdef0123"), "{shown}");
        }
        // The redacted rendering is itself a loadable TOML document.
        assert!(s.redacted_toml().parse::<toml::Table>().is_ok());
    }
}

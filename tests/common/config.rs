//! The one test configuration: every test that runs a gateway, in-process or
//! as a process, writes its TOML through [`TestConfig`].

use bcci_gateway::config::Settings;
use bcci_gateway::http::auth::token_sha256_hex;

/// The callback secret the intake clients of the tests share.
pub const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
/// The Vietnam Post webhook key of the tests.
pub const KEY: &str = "webhook-key-0123456789";
/// A closed port: a Vietnam Post or an intake system that is not there.
pub const NOWHERE: &str = "http://127.0.0.1:9";

/// One `[[intake.clients]]` entry.
#[derive(Debug, Clone)]
pub struct TestClient {
    pub name: String,
    /// Bearer tokens in the clear; the configuration holds their SHA-256.
    pub tokens: Vec<String>,
    pub requests_per_second: Option<u32>,
    pub callback_url: String,
    pub callback_secrets: Vec<String>,
    /// More lines of this client's table.
    pub extra: String,
}

/// A gateway configuration built from a store URL, Vietnam Post's base URL
/// and the intake system's callback URL; each `…_extra` string is more lines
/// of its table, `extra` more tables at the end.
#[derive(Debug, Clone)]
pub struct TestConfig {
    pub listen: String,
    pub admin_listen: String,
    pub server_extra: String,
    /// The `[log]` table's lines; no table when empty.
    pub log: String,
    pub store_url: String,
    pub store_extra: String,
    pub postal_url: String,
    pub username: String,
    pub password: String,
    pub customer_code: String,
    pub webhook_keys: Vec<String>,
    pub postal_extra: String,
    /// The `[intake]` table's lines; no table when empty.
    pub intake: String,
    pub callback_url: String,
    pub clients: Vec<TestClient>,
    /// Operator tokens in the clear.
    pub admin_tokens: Vec<String>,
    /// `[[admin.accounts]]` tables.
    pub accounts: String,
    pub extra: String,
}

/// Setters of the fields that hold lines of TOML.
macro_rules! lines {
    ($($(#[$doc:meta])* $name:ident => $field:ident,)*) => {
        $(
            $(#[$doc])*
            pub fn $name(mut self, lines: &str) -> Self {
                self.$field = lines.to_owned();
                self
            }
        )*
    };
}

fn quoted(items: &[String]) -> String {
    let items: Vec<String> = items.iter().map(|s| format!("\"{s}\"")).collect();
    format!("[{}]", items.join(", "))
}

fn hashes(tokens: &[String]) -> Vec<String> {
    tokens.iter().map(|t| token_sha256_hex(t)).collect()
}

fn owned(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

impl TestConfig {
    /// Both listeners on port 0, the partner login of the tests, [`KEY`];
    /// no client and no operator yet.
    pub fn new(store_url: &str, postal_url: &str, callback_url: &str) -> Self {
        TestConfig {
            listen: "127.0.0.1:0".to_owned(),
            admin_listen: "127.0.0.1:0".to_owned(),
            server_extra: String::new(),
            log: String::new(),
            store_url: store_url.to_owned(),
            store_extra: String::new(),
            postal_url: postal_url.to_owned(),
            username: "partner".to_owned(),
            password: "secret".to_owned(),
            customer_code: "T000180585".to_owned(),
            webhook_keys: vec![KEY.to_owned()],
            postal_extra: String::new(),
            intake: String::new(),
            callback_url: callback_url.to_owned(),
            clients: Vec::new(),
            admin_tokens: Vec::new(),
            accounts: String::new(),
            extra: String::new(),
        }
    }

    /// A store in a SQLite file.
    pub fn sqlite(db: &std::path::Path, postal_url: &str, callback_url: &str) -> Self {
        Self::new(
            &format!("sqlite://{}", db.display()),
            postal_url,
            callback_url,
        )
    }

    /// Adds a client with these tokens, calling back at the callback URL
    /// signed with [`SECRET`].
    pub fn client(mut self, name: &str, tokens: &[&str]) -> Self {
        self.clients.push(TestClient {
            name: name.to_owned(),
            tokens: owned(tokens),
            requests_per_second: None,
            callback_url: self.callback_url.clone(),
            callback_secrets: vec![SECRET.to_owned()],
            extra: String::new(),
        });
        self
    }

    fn last_client(&mut self) -> &mut TestClient {
        self.clients.last_mut().expect("a client was added")
    }

    /// The last client's rate limit.
    pub fn rate(mut self, requests_per_second: u32) -> Self {
        self.last_client().requests_per_second = Some(requests_per_second);
        self
    }

    /// The last client's callback secrets.
    pub fn secrets(mut self, secrets: &[&str]) -> Self {
        self.last_client().callback_secrets = owned(secrets);
        self
    }

    /// More lines of the last client's table.
    pub fn client_extra(mut self, lines: &str) -> Self {
        self.last_client().extra = lines.to_owned();
        self
    }

    pub fn admin(mut self, tokens: &[&str]) -> Self {
        self.admin_tokens = owned(tokens);
        self
    }

    /// One more `[[admin.accounts]]` entry (`role`: viewer or operator)
    /// holding `token`.
    pub fn account(mut self, name: &str, role: &str, token: &str) -> Self {
        self.accounts.push_str(&format!(
            "\n[[admin.accounts]]\nname = {name:?}\nrole = {role:?}\ntoken_sha256s = [{:?}]\n",
            token_sha256_hex(token)
        ));
        self
    }

    pub fn listen(mut self, listen: &str, admin_listen: &str) -> Self {
        self.listen = listen.to_owned();
        self.admin_listen = admin_listen.to_owned();
        self
    }

    /// The partner login at Vietnam Post.
    pub fn login(mut self, username: &str, password: &str, customer_code: &str) -> Self {
        self.username = username.to_owned();
        self.password = password.to_owned();
        self.customer_code = customer_code.to_owned();
        self
    }

    pub fn webhook_keys(mut self, keys: &[&str]) -> Self {
        self.webhook_keys = owned(keys);
        self
    }

    lines! {
        /// More lines of `[server]`.
        server => server_extra,
        /// The lines of `[log]`.
        log => log,
        /// More lines of `[store]`.
        store => store_extra,
        /// More lines of `[postal]`.
        postal => postal_extra,
        /// The lines of `[intake]`.
        intake => intake,
        /// More tables after the rest.
        extra => extra,
    }

    pub fn toml(&self) -> String {
        let mut t = format!(
            "[server]\nlisten = \"{}\"\nadmin_listen = \"{}\"\n{}\n",
            self.listen, self.admin_listen, self.server_extra
        );
        if !self.log.is_empty() {
            t += &format!("[log]\n{}\n", self.log);
        }
        t += &format!(
            "[store]\nurl = \"{}\"\n{}\n",
            self.store_url, self.store_extra
        );
        t += &format!(
            "[postal]\nbase_url = \"{}\"\nusername = \"{}\"\npassword = \"{}\"\n\
             customer_code = \"{}\"\nwebhook_keys = {}\n{}\n",
            self.postal_url,
            self.username,
            self.password,
            self.customer_code,
            quoted(&self.webhook_keys),
            self.postal_extra
        );
        if !self.intake.is_empty() {
            t += &format!("[intake]\n{}\n", self.intake);
        }
        for c in &self.clients {
            t += &format!(
                "[[intake.clients]]\nname = \"{}\"\ntoken_sha256s = {}\n",
                c.name,
                quoted(&hashes(&c.tokens))
            );
            if let Some(rps) = c.requests_per_second {
                t += &format!("requests_per_second = {rps}\n");
            }
            t += &format!(
                "callback_url = \"{}\"\ncallback_secrets = {}\n{}\n",
                c.callback_url,
                quoted(&c.callback_secrets),
                c.extra
            );
        }
        t += &format!(
            "[admin]\ntoken_sha256s = {}\n{}\n{}\n",
            quoted(&hashes(&self.admin_tokens)),
            self.accounts,
            self.extra
        );
        t
    }

    pub fn settings(&self) -> Settings {
        Settings::from_toml(&self.toml()).expect("valid test settings")
    }

    /// Writes the configuration to `path`, for a gateway process.
    pub fn write(&self, path: &std::path::Path) {
        std::fs::write(path, self.toml()).expect("write the test configuration");
    }
}

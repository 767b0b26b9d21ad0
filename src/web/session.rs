//! The console's sign-in: named accounts, session cookies, CSRF tokens and
//! a limit on failed sign-ins.
//!
//! Sessions live in this process's memory: a restart, or another process of
//! a high-availability group, asks for the token again (docs/decisions.md).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use subtle::ConstantTimeEq;

use crate::http::auth::{Account, AdminCaller, TokenTable, token_sha256_hex};

/// The session cookie.
pub const SESSION_COOKIE: &str = "bcci_session";
/// The sign-in form's own CSRF cookie (there is no session yet).
pub const SIGN_IN_COOKIE: &str = "bcci_sign_in";
/// Failed sign-ins one address may make in [`FAILURE_WINDOW`].
pub const MAX_FAILURES: u32 = 5;
/// The window failed sign-ins are counted in.
pub const FAILURE_WINDOW: Duration = Duration::from_secs(300);
/// Addresses whose failures are remembered at once; past it the oldest is
/// forgotten, so a flood of addresses cannot grow the table.
const MAX_TRACKED: usize = 10_000;

/// Who failed sign-ins are counted against: an IPv4 address, or an IPv6
/// address's /64 (one subscriber's network, which holds many addresses).
fn counted_as(from: IpAddr) -> IpAddr {
    match from {
        IpAddr::V4(_) => from,
        IpAddr::V6(v6) => {
            let mut segments = v6.segments();
            segments[4..].fill(0);
            IpAddr::V6(segments.into())
        }
    }
}

/// One signed-in account.
#[derive(Debug)]
pub struct Session {
    pub account: Arc<Account>,
    /// The token every state-changing form of this session carries.
    pub csrf: String,
    expires: Instant,
}

impl Session {
    /// True when `token` is this session's CSRF token (compared in
    /// constant time).
    pub fn csrf_matches(&self, token: Option<&str>) -> bool {
        token.is_some_and(|t| same(t, &self.csrf))
    }
}

/// True when two secrets are equal, compared in constant time.
pub fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// A fresh random token: 32 bytes as hex.
pub fn random_token() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

/// Why a sign-in did not make a session.
#[derive(Debug, PartialEq, Eq)]
pub enum SignInRefused {
    /// The token is no account's (a script token has no name: it cannot
    /// sign in).
    UnknownToken,
    /// Too many failures from this address: seconds to wait.
    TooMany(u64),
}

#[derive(Debug)]
struct Failures {
    count: u32,
    since: Instant,
}

/// The accounts, the live sessions and the failed sign-ins of one process.
pub struct Sessions {
    accounts: Arc<TokenTable<AdminCaller>>,
    /// This process's key for the sign-in form's tokens.
    form_key: [u8; 32],
    ttl: Duration,
    live: Mutex<HashMap<String, Arc<Session>>>,
    failures: Mutex<HashMap<IpAddr, Failures>>,
}

impl Sessions {
    pub fn new(accounts: Arc<TokenTable<AdminCaller>>, ttl: Duration) -> Self {
        Self {
            accounts,
            form_key: rand::random(),
            ttl,
            live: Mutex::new(HashMap::new()),
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// A fresh token for the sign-in form (and its cookie): a random nonce
    /// and this process's MAC of it, so that only the gateway can make one.
    pub fn sign_in_token(&self) -> String {
        let nonce = hex::encode(rand::random::<[u8; 16]>());
        let mac = self.form_mac(&nonce);
        format!("{nonce}.{mac}")
    }

    /// True when `token` is one [`Self::sign_in_token`] made.
    pub fn sign_in_token_is_ours(&self, token: &str) -> bool {
        token
            .split_once('.')
            .is_some_and(|(nonce, mac)| same(mac, &self.form_mac(nonce)))
    }

    fn form_mac(&self, nonce: &str) -> String {
        use hmac::{Hmac, Mac};
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&self.form_key)
            .expect("HMAC takes any key length");
        mac.update(nonce.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }

    /// How long a session lasts.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Signs in with an account's token: the new session's id and the
    /// session, or why not.
    pub fn sign_in(
        &self,
        token: &str,
        from: IpAddr,
        now: Instant,
    ) -> Result<(String, Arc<Session>), SignInRefused> {
        let from = counted_as(from);
        let mut failures = self.failures.lock().expect("sign-in failures lock");
        failures.retain(|_, f| now.saturating_duration_since(f.since) < FAILURE_WINDOW);
        if let Some(f) = failures.get(&from)
            && f.count >= MAX_FAILURES
        {
            let left = FAILURE_WINDOW.saturating_sub(now.saturating_duration_since(f.since));
            return Err(SignInRefused::TooMany(left.as_secs().max(1)));
        }
        let account = match self.accounts.get(&token_sha256_hex(token.trim())) {
            Some(AdminCaller::Account(account)) => account,
            _ => {
                if failures.len() >= MAX_TRACKED && !failures.contains_key(&from) {
                    let oldest = failures
                        .iter()
                        .min_by_key(|(_, f)| f.since)
                        .map(|(k, _)| *k);
                    if let Some(oldest) = oldest {
                        failures.remove(&oldest);
                    }
                }
                failures
                    .entry(from)
                    .or_insert(Failures {
                        count: 0,
                        since: now,
                    })
                    .count += 1;
                return Err(SignInRefused::UnknownToken);
            }
        };
        // A right token clears the address's count.
        failures.remove(&from);
        drop(failures);
        let session = Arc::new(Session {
            account,
            csrf: random_token(),
            expires: now + self.ttl,
        });
        let id = random_token();
        let mut live = self.live.lock().expect("sessions lock");
        live.retain(|_, s| s.expires > now);
        live.insert(id.clone(), session.clone());
        Ok((id, session))
    }

    /// The live session of a request's cookie.
    pub fn current(&self, headers: &HeaderMap, now: Instant) -> Option<Arc<Session>> {
        let id = super::cookie(headers, SESSION_COOKIE)?;
        let live = self.live.lock().expect("sessions lock");
        live.get(id).filter(|s| s.expires > now).cloned()
    }

    /// Ends the session of a request's cookie.
    pub fn sign_out(&self, headers: &HeaderMap) {
        if let Some(id) = super::cookie(headers, SESSION_COOKIE) {
            self.live.lock().expect("sessions lock").remove(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{AccountSettings, AdminSettings, Role};
    use crate::http::auth::admin_table;

    fn sessions() -> Sessions {
        let settings = AdminSettings {
            token_sha256s: vec![token_sha256_hex("script")],
            accounts: vec![AccountSettings {
                name: "Lan".into(),
                role: Role::Viewer,
                token_sha256s: vec![token_sha256_hex("lan-token")],
            }],
            session_minutes: 1,
            secure_cookies: false,
        };
        Sessions::new(Arc::new(admin_table(&settings)), Duration::from_secs(60))
    }

    fn with_cookie(id: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            axum::http::header::COOKIE,
            format!("{SESSION_COOKIE}={id}").parse().unwrap(),
        );
        h
    }

    #[test]
    fn an_account_token_signs_in_until_the_session_expires() {
        let s = sessions();
        let t0 = Instant::now();
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let (id, session) = s.sign_in("lan-token", ip, t0).unwrap();
        assert_eq!(session.account.name, "Lan");
        assert!(s.current(&with_cookie(&id), t0).is_some());
        assert!(s.current(&with_cookie("other"), t0).is_none());
        assert!(
            s.current(&with_cookie(&id), t0 + Duration::from_secs(61))
                .is_none()
        );
        s.sign_out(&with_cookie(&id));
        assert!(s.current(&with_cookie(&id), t0).is_none());
    }

    #[test]
    fn a_script_token_cannot_sign_in() {
        let s = sessions();
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        assert_eq!(
            s.sign_in("script", ip, Instant::now()).unwrap_err(),
            SignInRefused::UnknownToken
        );
    }

    #[test]
    fn repeated_failures_from_one_address_are_refused_for_a_while() {
        let s = sessions();
        let t0 = Instant::now();
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let other: IpAddr = "10.0.0.2".parse().unwrap();
        for _ in 0..MAX_FAILURES {
            assert_eq!(
                s.sign_in("wrong", ip, t0).unwrap_err(),
                SignInRefused::UnknownToken
            );
        }
        // Even the right token waits now; another address does not.
        assert!(matches!(
            s.sign_in("lan-token", ip, t0).unwrap_err(),
            SignInRefused::TooMany(300)
        ));
        assert!(s.sign_in("lan-token", other, t0).is_ok());
        assert!(s.sign_in("lan-token", ip, t0 + FAILURE_WINDOW).is_ok());
    }

    #[test]
    fn a_right_token_clears_the_count_and_ipv6_counts_by_network() {
        let s = sessions();
        let t0 = Instant::now();
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        for _ in 0..MAX_FAILURES - 1 {
            s.sign_in("wrong", ip, t0).unwrap_err();
        }
        assert!(s.sign_in("lan-token", ip, t0).is_ok());
        for _ in 0..MAX_FAILURES - 1 {
            s.sign_in("wrong", ip, t0).unwrap_err();
        }
        assert!(s.sign_in("lan-token", ip, t0).is_ok(), "counted afresh");

        for i in 0..MAX_FAILURES {
            let v6: IpAddr = format!("2001:db8:1:2::{i:x}").parse().unwrap();
            s.sign_in("wrong", v6, t0).unwrap_err();
        }
        let neighbour: IpAddr = "2001:db8:1:2:ffff::1".parse().unwrap();
        assert!(matches!(
            s.sign_in("lan-token", neighbour, t0),
            Err(SignInRefused::TooMany(_))
        ));
        let elsewhere: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert!(s.sign_in("lan-token", elsewhere, t0).is_ok());
    }

    #[test]
    fn only_the_gateway_makes_sign_in_form_tokens() {
        let s = sessions();
        let token = s.sign_in_token();
        assert!(s.sign_in_token_is_ours(&token));
        let (nonce, mac) = token.split_once('.').unwrap();
        assert!(!s.sign_in_token_is_ours(nonce));
        assert!(!s.sign_in_token_is_ours(&format!("{nonce}.{}", &mac[1..])));
        assert!(!s.sign_in_token_is_ours(&format!("0{}.{mac}", &nonce[1..])));
        assert!(
            !sessions().sign_in_token_is_ours(&token),
            "another process's key"
        );
    }

    #[test]
    fn csrf_tokens_must_match_exactly() {
        let s = sessions();
        let (_, session) = s
            .sign_in("lan-token", "10.0.0.1".parse().unwrap(), Instant::now())
            .unwrap();
        assert!(session.csrf_matches(Some(&session.csrf.clone())));
        assert!(!session.csrf_matches(None));
        assert!(!session.csrf_matches(Some("")));
        assert!(!session.csrf_matches(Some(&session.csrf[1..])));
    }
}

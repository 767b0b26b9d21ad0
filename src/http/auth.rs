//! Who calls: bearer tokens checked against configured SHA-256 hashes,
//! per-client request rates, and the extractors that admit an intake client
//! or an operator before any work.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use ipnet::IpNet;
use sha2::{Digest, Sha256};

use super::problem::{Problem, ProblemKind};
use crate::config::{AdminSettings, ClientSettings, Role};
use crate::domain::FieldError;
use crate::domain::text::{char_len, normalize};
use crate::lifecycle::Lifecycle;
use crate::store::StoreHealth;

/// The SHA-256 of a token, as lowercase hex.
pub fn token_sha256_hex(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// The bearer token of a request, if any.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// The client's address: the peer, or, when the peer is a trusted proxy, the
/// nearest untrusted address of `X-Forwarded-For`.
pub fn client_address(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|n| n.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let forwarded: Vec<IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    forwarded
        .iter()
        .rev()
        .find(|ip| !is_trusted(ip))
        .copied()
        .unwrap_or(peer)
}

/// A set of accepted token hashes mapping to who holds them.
#[derive(Debug)]
pub struct TokenTable<T> {
    by_hash: HashMap<String, T>,
}

impl<T: Clone> TokenTable<T> {
    pub fn new(entries: impl IntoIterator<Item = (String, T)>) -> Self {
        Self {
            by_hash: entries
                .into_iter()
                .map(|(h, t)| (h.to_ascii_lowercase(), t))
                .collect(),
        }
    }

    /// Who holds the token of this SHA-256 (lowercase hex).
    pub fn get(&self, sha256_hex: &str) -> Option<T> {
        self.by_hash.get(sha256_hex).cloned()
    }

    /// Who holds the bearer token of this request. Hashing first means the
    /// lookup never compares secrets themselves.
    pub fn authenticate(&self, headers: &HeaderMap) -> Option<T> {
        let token = bearer(headers)?;
        self.by_hash.get(&token_sha256_hex(token)).cloned()
    }

    /// Who holds the request's token, or a 401 telling what to send.
    pub fn require(&self, headers: &HeaderMap, what: &str) -> Result<T, Problem> {
        self.authenticate(headers).ok_or_else(|| {
            Problem::new(
                ProblemKind::Unauthorized,
                format!("send Authorization: Bearer {what}"),
            )
        })
    }
}

/// An intake client as the API sees it.
#[derive(Debug)]
pub struct Client {
    pub name: String,
    limiter: Mutex<TokenBucket>,
}

impl Client {
    /// Takes one request from the client's allowance, or says how many
    /// seconds until the next one is allowed.
    pub fn admit(&self) -> Result<(), u64> {
        self.limiter
            .lock()
            .expect("rate limiter lock")
            .take(Instant::now())
    }
}

/// Builds the table of intake clients from the settings.
pub fn client_table(clients: &[ClientSettings]) -> TokenTable<Arc<Client>> {
    let mut entries = Vec::new();
    for c in clients {
        let client = Arc::new(Client {
            name: c.name.clone(),
            limiter: Mutex::new(TokenBucket::new(c.requests_per_second)),
        });
        for h in &c.token_sha256s {
            entries.push((h.clone(), client.clone()));
        }
    }
    TokenTable::new(entries)
}

/// Who may call a listener, and whether it takes calls now.
pub trait Gate: Send + Sync {
    /// Who a request is from, once admitted.
    type Caller;
    /// Admits a request, or answers it with the problem that refuses it.
    fn admit(&self, headers: &HeaderMap) -> Result<Self::Caller, Problem>;
}

/// A request admitted by the gate of the router's state (`S: AsRef<G>`),
/// before any other work: the caller it is from.
pub struct Admitted<G: Gate>(pub G::Caller);

impl<S, G> FromRequestParts<S> for Admitted<G>
where
    G: Gate,
    S: AsRef<G> + Send + Sync,
{
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Problem> {
        state.as_ref().admit(&parts.headers).map(Self)
    }
}

/// The intake API's gate: the gateway not draining, the store up, a known
/// client token, the client's rate.
pub struct ClientGate {
    pub clients: TokenTable<Arc<Client>>,
    pub lifecycle: Lifecycle,
    pub health: StoreHealth,
}

/// An intake client admitted, in the contract's order: 503 while draining
/// or while the store is down, 401, 429.
pub type Authenticated = Admitted<ClientGate>;

impl Gate for ClientGate {
    type Caller = Arc<Client>;

    fn admit(&self, headers: &HeaderMap) -> Result<Arc<Client>, Problem> {
        open(&self.lifecycle)?;
        if !self.health.is_up() {
            return Err(Problem::store_unavailable());
        }
        let client = self.clients.require(headers, "<token>")?;
        tracing::Span::current().record("client", client.name.as_str());
        client.admit().map_err(|wait| {
            Problem::new(
                ProblemKind::RateLimited,
                "the client's request rate is exceeded",
            )
            .retry_after(wait)
        })?;
        Ok(client)
    }
}

/// A named account (`[[admin.accounts]]`) as the admin listener sees it.
#[derive(Debug, PartialEq, Eq)]
pub struct Account {
    pub name: String,
    pub role: Role,
}

/// Who holds an admin token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminCaller {
    /// A script's token (`admin.token_sha256s`): an operator that names
    /// itself with `X-Operator`.
    Script,
    /// An account's token: its role, and the name every action records.
    Account(Arc<Account>),
}

/// Builds the admin listener's token table: script tokens and accounts.
pub fn admin_table(settings: &AdminSettings) -> TokenTable<AdminCaller> {
    let scripts = settings
        .token_sha256s
        .iter()
        .map(|h| (h.clone(), AdminCaller::Script));
    let accounts = settings.accounts.iter().flat_map(|a| {
        let account = Arc::new(Account {
            name: a.name.clone(),
            role: a.role,
        });
        a.token_sha256s
            .iter()
            .map(move |h| (h.clone(), AdminCaller::Account(account.clone())))
    });
    TokenTable::new(scripts.chain(accounts))
}

/// The admin API's gate: the gateway not draining, an admin token.
pub struct OperatorGate {
    /// Scripts' tokens and accounts' (shared with the console's sign-in).
    pub tokens: Arc<TokenTable<AdminCaller>>,
    pub lifecycle: Lifecycle,
}

/// An admin request admitted: 503 while draining, then 401; a viewer that
/// sends `X-Operator` is refused (403): it may not act under any name.
pub type AdminAuth = Admitted<OperatorGate>;

impl Gate for OperatorGate {
    type Caller = AdminCaller;

    fn admit(&self, headers: &HeaderMap) -> Result<AdminCaller, Problem> {
        open(&self.lifecycle)?;
        let caller = self.tokens.require(headers, "<admin token>")?;
        if let AdminCaller::Account(account) = &caller
            && account.role == Role::Viewer
            && headers.contains_key("x-operator")
        {
            return Err(viewer_refused());
        }
        Ok(caller)
    }
}

/// 403 for an action asked by a viewer account.
pub fn viewer_refused() -> Problem {
    Problem::new(
        ProblemKind::Forbidden,
        "a viewer account may read but not act; sign in as an operator",
    )
}

/// 503 while the gateway drains.
fn open(lifecycle: &Lifecycle) -> Result<(), Problem> {
    if lifecycle.is_draining() {
        Err(Problem::draining())
    } else {
        Ok(())
    }
}

/// Longest `X-Operator` name, in characters.
const MAX_OPERATOR_CHARS: usize = 200;

/// Who an action is recorded under, once the request is admitted: an
/// operator account's own name, or a script's `X-Operator` name. A missing,
/// empty or overlong `X-Operator` is a field error, named with the request's
/// other faults, so it does not reject the request by itself; a viewer
/// account is refused (403) before any other check.
pub struct Operator(pub Result<String, FieldError>);

impl<S> FromRequestParts<S> for Operator
where
    S: AsRef<OperatorGate> + Send + Sync,
{
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Problem> {
        match state.as_ref().admit(&parts.headers)? {
            AdminCaller::Script => Ok(Self(operator(&parts.headers))),
            AdminCaller::Account(account) => match account.role {
                Role::Operator => Ok(Self(Ok(account.name.clone()))),
                Role::Viewer => Err(viewer_refused()),
            },
        }
    }
}

impl Operator {
    /// The name of an action that takes no other input.
    pub fn name(self) -> Result<String, Problem> {
        self.0.map_err(|e| Problem::invalid(vec![e]))
    }
}

fn operator(headers: &HeaderMap) -> Result<String, FieldError> {
    let name = headers
        .get("x-operator")
        .and_then(|v| std::str::from_utf8(v.as_bytes()).ok())
        .map(normalize)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| FieldError::new("X-Operator", "is required: the operator's name"))?;
    if char_len(&name) > MAX_OPERATOR_CHARS {
        return Err(FieldError::new(
            "X-Operator",
            format!("must be at most {MAX_OPERATOR_CHARS} characters"),
        ));
    }
    Ok(name)
}

/// A token bucket holding one second's worth of requests.
#[derive(Debug)]
struct TokenBucket {
    rate: f64,
    tokens: f64,
    last: Option<Instant>,
}

impl TokenBucket {
    fn new(per_second: u32) -> Self {
        let rate = f64::from(per_second.max(1));
        Self {
            rate,
            tokens: rate,
            last: None,
        }
    }

    fn take(&mut self, now: Instant) -> Result<(), u64> {
        if let Some(last) = self.last {
            let elapsed = now.saturating_duration_since(last).as_secs_f64();
            self.tokens = (self.tokens + elapsed * self.rate).min(self.rate);
        }
        self.last = Some(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            let wait = (1.0 - self.tokens) / self.rate;
            Err(wait.ceil().max(1.0) as u64)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_bucket_allows_one_second_of_requests_then_refills() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(3);
        assert!(b.take(t0).is_ok());
        assert!(b.take(t0).is_ok());
        assert!(b.take(t0).is_ok());
        assert_eq!(b.take(t0), Err(1));
        assert!(b.take(t0 + Duration::from_millis(400)).is_ok());
    }

    #[test]
    fn forwarded_addresses_are_believed_only_from_trusted_proxies() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", "203.0.113.9, 10.1.1.1".parse().unwrap());
        let proxy: IpAddr = "10.0.0.5".parse().unwrap();
        let outsider: IpAddr = "198.51.100.7".parse().unwrap();
        assert_eq!(
            client_address(proxy, &h, &trusted),
            "203.0.113.9".parse::<IpAddr>().unwrap()
        );
        assert_eq!(client_address(outsider, &h, &trusted), outsider);
        assert_eq!(client_address(proxy, &HeaderMap::new(), &trusted), proxy);
    }

    #[test]
    fn bearer_tokens_are_read_case_insensitively() {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, "bearer abc".parse().unwrap());
        assert_eq!(bearer(&h), Some("abc"));
        h.insert(header::AUTHORIZATION, "Basic abc".parse().unwrap());
        assert_eq!(bearer(&h), None);
    }
}

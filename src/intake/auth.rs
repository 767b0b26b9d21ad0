//! Bearer tokens checked against configured SHA-256 hashes, and per-client
//! request rates.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::http::{HeaderMap, header};
use sha2::{Digest, Sha256};

use crate::config::ClientSettings;

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

    /// Who holds the bearer token of this request. Hashing first means the
    /// lookup never compares secrets themselves.
    pub fn authenticate(&self, headers: &HeaderMap) -> Option<T> {
        let token = bearer(headers)?;
        self.by_hash.get(&token_sha256_hex(token)).cloned()
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
    fn bearer_tokens_are_read_case_insensitively() {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, "bearer abc".parse().unwrap());
        assert_eq!(bearer(&h), Some("abc"));
        h.insert(header::AUTHORIZATION, "Basic abc".parse().unwrap());
        assert_eq!(bearer(&h), None);
    }
}

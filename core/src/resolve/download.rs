//! Downloads that cannot leave bad data behind: connect and read timeouts, a few attempts with exponential
//! back-off for failures that may pass (no connection, a timeout, a 5xx or 429 answer, a body cut short), and the
//! bytes checked against the size and SHA-256 we expect before anyone may use them. The caller installs the bytes
//! with a rename, so an interrupted download never sits where a complete one is looked for.

use std::io::Read;
use std::time::Duration;

use crate::trial::hex_sha256;
use crate::{Error, Result};

/// What a download must be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected {
    pub size: u64,
    /// Lower-case hex SHA-256 of the bytes.
    pub sha256: String,
}

/// How downloads are made.
#[derive(Debug, Clone)]
pub struct Downloader {
    pub connect_timeout: Duration,
    /// Longest wait for the next bytes of an answer (not for the whole body).
    pub read_timeout: Duration,
    /// Attempts in all (at least 1).
    pub attempts: u32,
    /// Pause after the first failed attempt; doubled after each further one.
    pub first_backoff: Duration,
}

impl Default for Downloader {
    fn default() -> Self {
        Downloader {
            connect_timeout: Duration::from_secs(20),
            read_timeout: Duration::from_secs(60),
            attempts: 4,
            first_backoff: Duration::from_secs(2),
        }
    }
}

/// Why one attempt failed, and whether another may succeed.
struct Failure {
    reason: String,
    transient: bool,
}

impl Downloader {
    /// The bytes at `url`, checked against `expected` when given. The error names the URL, the attempts made and
    /// the last reason.
    pub fn fetch(&self, url: &str, expected: Option<&Expected>) -> Result<Vec<u8>> {
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(self.connect_timeout)
            .timeout_read(self.read_timeout)
            .try_proxy_from_env(true)
            .build();
        let attempts = self.attempts.max(1);
        let mut pause = self.first_backoff;
        let mut last = String::new();
        for attempt in 1..=attempts {
            match self.attempt(&agent, url, expected) {
                Ok(bytes) => return Ok(bytes),
                Err(failure) => {
                    tracing::warn!(url, attempt, reason = %failure.reason, "download attempt failed");
                    last = failure.reason;
                    if !failure.transient {
                        return Err(Error::msg(format!(
                            "downloading {url} failed: {last}; use --data-dir with a local copy"
                        )));
                    }
                }
            }
            if attempt < attempts {
                std::thread::sleep(pause);
                pause = pause.saturating_mul(2);
            }
        }
        Err(Error::msg(format!(
            "downloading {url} failed after {attempts} attempts: {last}; check the connection or use --data-dir \
             with a local copy"
        )))
    }

    fn attempt(
        &self,
        agent: &ureq::Agent,
        url: &str,
        expected: Option<&Expected>,
    ) -> std::result::Result<Vec<u8>, Failure> {
        let response = agent.get(url).call().map_err(|e| match e {
            ureq::Error::Status(code, _) => Failure {
                reason: format!("the server answered HTTP {code}"),
                transient: code == 429 || code >= 500,
            },
            ureq::Error::Transport(t) => Failure {
                reason: t.to_string(),
                transient: true,
            },
        })?;
        let declared: Option<u64> = response
            .header("Content-Length")
            .and_then(|v| v.trim().parse().ok());
        // Never read more than the size we expect (or the server declared), plus one byte to notice excess.
        let limit = expected
            .map(|e| e.size)
            .or(declared)
            .map_or(u64::MAX, |n| n.saturating_add(1));
        let mut bytes = Vec::new();
        response
            .into_reader()
            .take(limit)
            .read_to_end(&mut bytes)
            .map_err(|e| Failure {
                reason: format!("the transfer broke off after {} bytes: {e}", bytes.len()),
                transient: true,
            })?;
        let got = bytes.len() as u64;
        if let Some(n) = declared.filter(|&n| n != got) {
            return Err(Failure {
                reason: format!("the transfer broke off: {got} of {n} bytes"),
                transient: true,
            });
        }
        if let Some(e) = expected {
            if got != e.size {
                return Err(Failure {
                    reason: format!("expected {} bytes, received {got}", e.size),
                    transient: got < e.size,
                });
            }
            let found = hex_sha256(&bytes);
            if found != e.sha256 {
                return Err(Failure {
                    reason: format!(
                        "the bytes are not the expected file: sha256 {found}, expected {}",
                        e.sha256
                    ),
                    transient: false,
                });
            }
        }
        Ok(bytes)
    }
}

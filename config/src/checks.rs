//! Small named checks shared by the sections. Each reports into [`Issues`] and returns what it
//! could make of the value, so validation goes on and every problem is found in one run.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use crate::error::{Issues, quoted};
use crate::server_name;

/// Stands in for an address that did not parse. Port 0 takes part in no conflict check.
pub(crate) const NO_ADDRESS: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 0);

const ADDRESS_EXPECTED: &str =
    "an IP address and port, such as \"127.0.0.1:8008\", \"0.0.0.0:8448\" or \"[::]:8448\"";

const URL_EXPECTED: &str =
    "an http:// or https:// URL with a host, such as \"https://matrix.example.org/\"";

/// A listening address.
pub(crate) fn socket_addr(issues: &mut Issues, key: &str, value: &str) -> SocketAddr {
    value.parse().unwrap_or_else(|_| {
        issues.invalid(key, &quoted(value), ADDRESS_EXPECTED);
        NO_ADDRESS
    })
}

/// A path that must not be empty.
pub(crate) fn path(issues: &mut Issues, key: &str, value: &str, what: &str) -> PathBuf {
    if value.is_empty() {
        issues.invalid(key, "\"\"", what);
    }
    PathBuf::from(value)
}

/// An optional path: unset is fine, empty is not.
pub(crate) fn optional_path(
    issues: &mut Issues,
    key: &str,
    value: Option<&str>,
    what: &str,
) -> Option<PathBuf> {
    value.map(|value| path(issues, key, value, what))
}

/// Text that must not be empty.
pub(crate) fn non_empty(issues: &mut Issues, key: &str, value: &str, what: &str) {
    if value.trim().is_empty() {
        issues.invalid(key, &quoted(value), what);
    }
}

/// A number that must be at least 1.
pub(crate) fn positive(issues: &mut Issues, key: &str, value: u64, what: &str) {
    if value == 0 {
        issues.invalid(key, "0", what);
    }
}

/// A Matrix server name (see [`server_name`]).
pub(crate) fn server_name(issues: &mut Issues, key: &str, value: &str) {
    if !server_name::is_valid(value) {
        issues.invalid(key, &quoted(value), server_name::EXPECTED);
    }
}

/// An http(s) URL with a host; returned as given. `None` if invalid (already reported).
pub(crate) fn http_url(issues: &mut Issues, key: &str, value: &str) -> Option<url::Url> {
    match url::Url::parse(value) {
        Ok(url)
            if matches!(url.scheme(), "http" | "https")
                && url.host_str().is_some_and(|host| !host.is_empty()) =>
        {
            Some(url)
        }
        _ => {
            issues.invalid(key, &quoted(value), URL_EXPECTED);
            None
        }
    }
}

/// A base URL that other URLs are built on: an http(s) URL without credentials, query or
/// fragment, returned normalised with a trailing slash so `format!("{base}_matrix/...")`
/// is right.
pub(crate) fn base_url(issues: &mut Issues, key: &str, value: &str) -> String {
    let Some(url) = http_url(issues, key, value) else {
        return value.to_owned();
    };
    if url.query().is_some()
        || url.fragment().is_some()
        || !url.username().is_empty()
        || url.password().is_some()
    {
        issues.invalid(
            key,
            &quoted(value),
            "a base URL without user name, password, query or fragment, such as \
             \"https://matrix.example.org/\"",
        );
    }
    let mut normalised = url.to_string();
    if !normalised.ends_with('/') {
        normalised.push('/');
    }
    normalised
}

/// Whether two listeners would try to bind the same socket. Port 0 (pick any free port)
/// never conflicts; an unspecified address (`0.0.0.0`, `[::]`) overlaps every address of
/// the same port.
pub(crate) fn listeners_overlap(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() != 0
        && a.port() == b.port()
        && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

#[cfg(test)]
mod tests {
    use super::{base_url, listeners_overlap};
    use crate::error::Issues;

    #[test]
    fn base_urls_are_normalised_with_a_trailing_slash() {
        let mut issues = Issues::default();
        assert_eq!(
            base_url(&mut issues, "k", "https://Matrix.Example.org"),
            "https://matrix.example.org/"
        );
        assert_eq!(
            base_url(&mut issues, "k", "http://example.org:8008/matrix"),
            "http://example.org:8008/matrix/"
        );
        assert_eq!(
            base_url(&mut issues, "k", "http://[::1]:8008/"),
            "http://[::1]:8008/"
        );
        assert!(issues.is_empty());
        for bad in [
            "ftp://example.org/",
            "example.org",
            "https://",
            "http://u:p@x/",
            "http://x/?q",
        ] {
            let mut issues = Issues::default();
            base_url(&mut issues, "k", bad);
            assert!(!issues.is_empty(), "{bad} should be refused");
        }
    }

    #[test]
    fn overlapping_listeners() {
        let addr = |s: &str| s.parse().expect("address");
        assert!(listeners_overlap(
            addr("127.0.0.1:8008"),
            addr("127.0.0.1:8008")
        ));
        assert!(listeners_overlap(
            addr("0.0.0.0:8008"),
            addr("127.0.0.1:8008")
        ));
        assert!(listeners_overlap(addr("127.0.0.1:8008"), addr("[::]:8008")));
        assert!(!listeners_overlap(
            addr("127.0.0.1:8008"),
            addr("127.0.0.2:8008")
        ));
        assert!(!listeners_overlap(
            addr("127.0.0.1:8008"),
            addr("127.0.0.1:8009")
        ));
        assert!(!listeners_overlap(addr("127.0.0.1:0"), addr("127.0.0.1:0")));
    }
}

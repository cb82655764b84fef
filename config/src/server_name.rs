//! The server-name grammar of the Matrix specification (appendices, "Server Name").
//!
//! ```text
//! server_name = hostname [ ":" port ]
//! port        = 1*5DIGIT
//! hostname    = IPv4address / "[" IPv6address "]" / dns-name
//! dns-name    = 1*255dns-char
//! dns-char    = DIGIT / ALPHA / "-" / "."
//! ```
//!
//! Two refinements over the bare grammar: the port must be a usable one (1 to 65535), and the
//! text between brackets must be an IPv6 address, not merely IPv6 characters. An IPv4 address
//! is also a valid `dns-name`, so it needs no case of its own.

use std::net::Ipv6Addr;

/// What a valid server name looks like, for messages.
pub(crate) const EXPECTED: &str = "a server name: a DNS name, an IPv4 address or an [IPv6] \
     address, optionally followed by \":port\", such as \"example.org\" or \"example.org:8448\"";

/// Whether `name` is a valid Matrix server name.
pub(crate) fn is_valid(name: &str) -> bool {
    let (host, port) = if let Some(rest) = name.strip_prefix('[') {
        let Some((address, after)) = rest.split_once(']') else {
            return false;
        };
        if address.parse::<Ipv6Addr>().is_err() {
            return false;
        }
        match after {
            "" => return true,
            _ => match after.strip_prefix(':') {
                Some(port) => ("[]", Some(port)),
                None => return false,
            },
        }
    } else {
        match name.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (name, None),
        }
    };
    let host_ok = host == "[]"
        || (!host.is_empty()
            && host.len() <= 255
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.'));
    host_ok && port.is_none_or(is_valid_port)
}

fn is_valid_port(port: &str) -> bool {
    (1..=5).contains(&port.len())
        && port.bytes().all(|b| b.is_ascii_digit())
        && port.parse::<u16>().is_ok_and(|port| port != 0)
}

#[cfg(test)]
mod tests {
    use super::is_valid;

    #[test]
    fn accepts_the_grammar() {
        for name in [
            "localhost",
            "localhost:8008",
            "example.org",
            "matrix.example.org:8448",
            "my-server.example",
            "1.2.3.4",
            "1.2.3.4:1234",
            "[::1]",
            "[::1]:8448",
            "[2001:db8::1]:443",
            "EXAMPLE.org",
            "a:65535",
        ] {
            assert!(is_valid(name), "{name} should be valid");
        }
    }

    #[test]
    fn refuses_what_the_grammar_refuses() {
        for name in [
            "",
            ":8008",
            "example.org:",
            "example.org:port",
            "example.org:123456",
            "example.org:0",
            "example.org:65536",
            "exa mple.org",
            "exa_mple.org",
            "example.org/path",
            "https://example.org",
            "user@example.org",
            "[::1",
            "[::1]x",
            "[not-ipv6]:80",
            "::1",
            "ex\u{e4}mple.org",
            "example.org:80:80",
        ] {
            assert!(!is_valid(name), "{name:?} should be invalid");
        }
        assert!(!is_valid(&"a".repeat(256)));
        assert!(is_valid(&"a".repeat(255)));
    }
}

//! Which content types a browser may display inline: the list from the spec's advice on
//! serving user content. Everything else is served as an attachment, including SVG and
//! HTML, which can carry scripts. Used for local downloads and for what this server tells
//! other servers about its media.

/// Types served `inline`: ones browsers display without running anything (the spec's list).
/// Everything else is an `attachment`, including SVG and HTML, which can carry scripts.
const INLINE_TYPES: &[&str] = &[
    "text/css",
    "text/plain",
    "text/csv",
    "application/json",
    "application/ld+json",
    "image/jpeg",
    "image/gif",
    "image/png",
    "image/apng",
    "image/webp",
    "image/avif",
    "video/mp4",
    "video/webm",
    "video/ogg",
    "video/quicktime",
    "audio/mp4",
    "audio/webm",
    "audio/aac",
    "audio/mpeg",
    "audio/ogg",
    "audio/wave",
    "audio/wav",
    "audio/x-wav",
    "audio/x-pn-wav",
    "audio/flac",
    "audio/x-flac",
];

/// Whether content of `content_type` may be displayed inline.
pub fn is_inline(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    INLINE_TYPES.contains(&essence.as_str())
}

#[cfg(test)]
mod tests {
    use super::is_inline;

    #[test]
    fn only_display_only_types_are_inline() {
        assert!(is_inline("image/png"));
        assert!(is_inline("Text/Plain; charset=utf-8"));
        assert!(is_inline("video/mp4"));
        assert!(!is_inline("text/html"));
        assert!(!is_inline("image/svg+xml"));
        assert!(!is_inline("application/octet-stream"));
        assert!(!is_inline(""));
    }
}

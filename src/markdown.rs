//! The `markdown` service's work: CommonMark to HTML, with pulldown-cmark and no extensions.
//! Pure text in, text out.

use std::fmt;

use pulldown_cmark::{html, Options, Parser};

/// The HTML for the CommonMark document `markdown`, as the `markdown` service's `html` reply
/// carries it: `# Hi` → `<h1>Hi</h1>\n`.
pub fn markdown_to_html(markdown: &str) -> String {
    let mut out = String::with_capacity(markdown.len() + markdown.len() / 2);
    // Writing into a String cannot fail.
    let written = write_html(markdown, &mut out);
    debug_assert!(written.is_ok());
    out
}

/// Writes the HTML for `markdown` into `out` as it is rendered (the responder's reply
/// escapes it straight into its output buffer, with no intermediate string).
pub(crate) fn write_html(markdown: &str, out: impl fmt::Write) -> fmt::Result {
    html::write_html_fmt(out, Parser::new_ext(markdown, Options::empty()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_commonmark_without_extensions() {
        assert_eq!(markdown_to_html("# Hi"), "<h1>Hi</h1>\n");
        assert_eq!(markdown_to_html(""), "");
        // Tables and strikethrough are extensions: plain text here.
        assert_eq!(markdown_to_html("~~no~~"), "<p>~~no~~</p>\n");
        // Inline HTML passes through (CommonMark); text is escaped, quotes are not.
        assert_eq!(markdown_to_html("a <b> & \"c\" 1 < 2"), "<p>a <b> &amp; \"c\" 1 &lt; 2</p>\n");
    }
}

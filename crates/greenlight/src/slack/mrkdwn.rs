//! mrkdwn escaping: requester text shown as typed wherever it lands in a Slack message, never
//! formatting, pinging or linking. Security-critical: every string a requester, agent or machine
//! wrote passes through here before it reaches Slack. Pure, with its property tests beside it.

/// Breaks mrkdwn formatting without showing: a zero-width space beside a control character.
const ZWSP: char = '\u{200B}';

/// Characters that reorder what is shown (bidi embeddings, overrides, isolates and marks): a
/// title could otherwise display backwards ("evorppa" read as "approve").
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{200E}' | '\u{200F}' | '\u{061C}')
}

/// Characters an emoji shortcode name is made of (`:white_check_mark:`, `:+1:`).
fn is_emoji_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '+' | '-' | '\'')
}

/// Text that shows as typed wherever it lands (plain or mrkdwn): no bidi controls, no NUL or
/// other control characters but newline and tab.
pub fn clean(text: &str) -> String {
    text.chars().filter(|c| !dropped(*c)).collect()
}

fn dropped(c: char) -> bool {
    is_bidi_control(c) || (c.is_control() && c != '\n' && c != '\t')
}

/// Appends `c`, escaped for mrkdwn; `prev` and `next` are the characters around it, and
/// `line_start` says whether only blanks stand between `c` and the start of its line.
fn push_escaped(
    out: &mut String,
    c: char,
    prev: Option<char>,
    next: Option<char>,
    line_start: bool,
) {
    let in_word = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    match c {
        '&' => out.push_str("&amp;"),
        '<' => out.push_str("&lt;"),
        // `&gt;` first on a line quotes it.
        '>' if line_start => {
            out.push(ZWSP);
            out.push_str("&gt;");
        }
        '>' => out.push_str("&gt;"),
        // Bold, italic and strike need a word boundary outside the mark: with a zero-width
        // space on both sides it neither opens nor closes.
        '*' | '~' => {
            out.push(ZWSP);
            out.push(c);
            out.push(ZWSP);
        }
        // Inside a word (`channel_not_found`) an underscore formats nothing, so that side is
        // left as typed and identifiers copy cleanly.
        '_' => {
            if !in_word(prev) {
                out.push(ZWSP);
            }
            out.push(c);
            if !in_word(next) {
                out.push(ZWSP);
            }
        }
        // A code span needs no boundary, so the backtick itself goes: a look-alike.
        '`' => out.push('\u{02CB}'),
        // `:name:` is an emoji; a zero-width space after the colon keeps `12:30` and `https://`.
        ':' if next.is_some_and(is_emoji_name_char) => {
            out.push(':');
            out.push(ZWSP);
        }
        c => out.push(c),
    }
}

fn is_line_break(c: char) -> bool {
    matches!(c, '\n' | '\u{2028}' | '\u{2029}')
}

/// Escapes requester text for mrkdwn so that it shows as typed and formats nothing: `&`, `<`
/// and `>` become entities (no `<!channel>`, no disguised link), a `>` first on a line gets a
/// zero-width space before it (no quote), `*` and `~` get zero-width spaces around them and
/// `_` on its sides outside a word (no bold, italic or strike), a backtick becomes `ˋ` (no code), a colon before a shortcode
/// name gets a zero-width space (no `:white_check_mark:`), and bidi and control characters are
/// dropped (see `clean`). The text is taken to start a line.
pub fn escape(text: &str) -> String {
    escape_within(text, usize::MAX)
}

/// Text as a code block: shown exactly as typed, but for the entities Slack needs and a
/// triple backtick broken so that it cannot end the block early. Cut at `max` characters;
/// the second value says whether it was.
pub fn code_block(text: &str, max: usize) -> (String, bool) {
    let cleaned = clean(text);
    let cut = cleaned.chars().count() > max;
    let shown: String = cleaned.chars().take(max).collect();
    let shown = shown
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace("```", "`\u{200B}``");
    (
        format!("```\n{shown}{}\n```", if cut { "\n…" } else { "" }),
        cut,
    )
}

/// `escape`, cut to at most `max` characters (marking the cut) without splitting an escape.
pub fn escape_within(text: &str, max: usize) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    let mut count = 0;
    // The longest cut (in bytes) that still leaves room for the mark.
    let mut cut = 0;
    let mut line_start = true;
    // Dropped characters go first, so that they cannot hide what follows a colon.
    let mut chars = text.chars().filter(|c| !dropped(*c)).peekable();
    let mut prev = None;
    while let Some(c) = chars.next() {
        let before = out.len();
        push_escaped(&mut out, c, prev, chars.peek().copied(), line_start);
        prev = Some(c);
        if is_line_break(c) {
            line_start = true;
        } else if !c.is_whitespace() {
            line_start = false;
        }
        count += out[before..].chars().count();
        // Never cut right after an underscore left bare because a letter followed it.
        if count < max && !out.ends_with('_') {
            cut = out.len();
        } else if count > max {
            out.truncate(cut);
            out.push('…');
            return out;
        }
    }
    out
}

/// Cuts `text` to at most `max` characters, marking the cut.
pub(crate) fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut cut: String = text.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Finds mrkdwn a requester could use to fake formatting: the spans Slack (and the
    /// sandbox's page) would format, a shortcode, a quote, a raw `<`/`>` or a loose `&`.
    fn formatting_in(escaped: &str) -> Option<String> {
        let chars: Vec<char> = escaped.chars().collect();
        for (i, &c) in chars.iter().enumerate() {
            let before = i.checked_sub(1).map(|j| chars[j]);
            let after = chars.get(i + 1).copied();
            let guarded =
                |c: Option<char>| c.is_some_and(|c| c == ZWSP || c.is_ascii_alphanumeric());
            match c {
                '*' | '_' | '~' if !guarded(before) || !guarded(after) => {
                    return Some(format!("bare {c} at {i}"));
                }
                '`' | '<' | '>' => return Some(format!("{c} at {i}")),
                '&' if !["&amp;", "&lt;", "&gt;"].iter().any(|e| {
                    escaped[escaped.char_indices().nth(i).unwrap().0..].starts_with(e)
                }) =>
                {
                    return Some(format!("loose & at {i}"));
                }
                ':' if after.is_some_and(is_emoji_name_char) => {
                    return Some(format!("shortcode colon at {i}"));
                }
                c if dropped(c) => return Some(format!("control {:?} at {i}", c)),
                _ => {}
            }
        }
        for line in escaped.split(is_line_break) {
            if line.trim_start().starts_with("&gt;") {
                return Some(format!("quote in {line:?}"));
            }
        }
        None
    }

    #[test]
    fn requester_text_cannot_format_or_imitate_an_outcome() {
        let spoof = ":white_check_mark: *Approved* by @bob \u{202e}";
        let out = escape(spoof);
        assert_eq!(formatting_in(&out), None, "{out:?}");
        assert!(!out.contains("*Approved*") && !out.contains(":white_check_mark:"));
        assert!(!out.contains('\u{202e}'));
        // Still reads the same once the invisible characters are gone.
        assert_eq!(
            out.replace(ZWSP, ""),
            ":white_check_mark: *Approved* by @bob "
        );
        for (text, shown) in [
            (
                "_italic_ ~strike~ `code` ```block```",
                "_italic_ ~strike~ ˋcodeˋ ˋˋˋblockˋˋˋ",
            ),
            ("> quoted\n  > again", "&gt; quoted\n  &gt; again"),
            (
                "a > b, 12:30, https://example.com/x",
                "a &gt; b, 12:30, https://example.com/x",
            ),
            (
                "nul\u{0}bell\u{7}\r\ntab\tend\u{200f}\u{2066}x\u{2069}\u{61c}",
                "nulbell\ntab\tendx",
            ),
            (":tada::+1:", ":tada::+1:"),
        ] {
            let out = escape(text);
            assert_eq!(formatting_in(&out), None, "{text:?} gave {out:?}");
            assert_eq!(out.replace(ZWSP, ""), shown, "{text:?}");
        }
        // Inside a word a mark formats nothing and is left alone.
        assert_eq!(escape("channel_not_found"), "channel_not_found");
        assert_eq!(escape("a*b"), "a\u{200B}*\u{200B}b");
        assert_eq!(escape("_x_"), "\u{200B}_x_\u{200B}");
        // Mid-line `>` needs no mark; at a line start it does.
        assert_eq!(escape("a > b"), "a &gt; b");
        assert_eq!(escape("> b"), "\u{200B}&gt; b");
        assert_eq!(clean("a\u{202e}b\u{0}c\nd"), "abc\nd");
    }

    #[test]
    fn a_cut_never_splits_an_escape_and_keeps_the_limit() {
        let text = "&".repeat(10) + &"*".repeat(10);
        for max in 1..60 {
            let out = escape_within(&text, max);
            assert!(out.chars().count() <= max.max(1), "{max}: {out:?}");
            let body = out.trim_end_matches('…');
            assert_eq!(formatting_in(body), None, "{max}: {out:?}");
        }
        assert_eq!(escape_within("abc", 3), "abc");
        assert_eq!(escape_within("abcd", 3), "ab…");
    }

    proptest::proptest! {
        /// Whatever a requester writes, the escaped text formats nothing, loses nothing
        /// visible, and stays within the limit when cut.
        #[test]
        fn escaped_text_never_contains_a_live_control_sequence(
            text in "(\\PC|[*_~`:<>&\n\t \u{202a}-\u{202e}\u{2066}-\u{2069}\u{0}-\u{1f}]|:[a-z_+-]{1,8}:|white_check_mark){0,40}",
            max in 1usize..200,
        ) {
            let out = escape(&text);
            proptest::prop_assert_eq!(formatting_in(&out), None, "{:?} gave {:?}", text, out);
            // A backtick comes out as `ˋ`, so the oracle drops both (a requester may type `ˋ`).
            let visible: String = clean(&text).chars().filter(|c| !matches!(c, '&' | '<' | '>' | '`' | 'ˋ')).collect();
            let back: String = out
                .replace(ZWSP, "")
                .replace("&amp;", "")
                .replace("&lt;", "")
                .replace("&gt;", "")
                .replace('ˋ', "");
            let back: String = back.chars().filter(|c| !matches!(c, '&' | '<' | '>' | '`')).collect();
            proptest::prop_assert_eq!(back, visible);
            let cut = escape_within(&text, max);
            proptest::prop_assert!(cut.chars().count() <= max);
            proptest::prop_assert_eq!(formatting_in(cut.trim_end_matches('…')), None);
        }
    }
}

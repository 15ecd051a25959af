//! The text cleaning of openai-clip's tokenizer, which `tokenizer.json`
//! cannot express.
//!
//! `clip/simple_tokenizer.py` encodes `whitespace_clean(basic_clean(text))
//! .lower()`, where `basic_clean` is `ftfy.fix_text` (ftfy 6.3), then
//! `html.unescape` twice, then `strip`, and `whitespace_clean` turns each
//! run of whitespace into one space and strips. [`clean`] does the same,
//! with one exception: ftfy's `fix_encoding`, the heuristic repair of
//! mojibake (UTF-8 decoded in a single-byte encoding, as in `cafÃ©`), is
//! left out. Text that it would repair keeps the mojibake here and
//! tokenizes differently from openai-clip; every other fix of ftfy's
//! default configuration is done as ftfy does it.
//!
//! The cleaned text goes to the pre-tokenizer of `tokenizer.json` without
//! its normalizer, as openai-clip applies no normalization after
//! `html.unescape` (which can produce combining marks that NFC would
//! compose: ftfy leaves entities alone in a line with `<`, and from there
//! on).

use std::sync::OnceLock;
use tokenizers::NormalizedString;

/// Cleans text as openai-clip does before its BPE, less ftfy's mojibake
/// repair (see the module documentation).
pub(crate) fn clean(text: &str) -> String {
    let fixed = fix_text(text);
    let unescaped = html_unescape(&html_unescape(&fixed));
    // Python's `\s` and `str.strip` are Unicode's White_Space here: ftfy
    // removed the other characters that `str.isspace` accepts
    // (U+001C to U+001F), and `html.unescape` does not produce them.
    let words: Vec<&str> = unescaped.split_whitespace().collect();
    // openai-clip's split is case-insensitive, under which U+0345 (the
    // combining ypogegrammeni, whose capital is a letter) is neither a
    // letter nor another symbol: it separates pieces and is dropped, as a
    // space is.
    words.join(" ").to_lowercase().replace('\u{345}', " ")
}

/// ftfy's segments: lines, each with its line break, cut every million
/// characters.
const MAX_SEGMENT_CHARS: usize = 1_000_000;

/// `ftfy.fix_text` with its default configuration, less `fix_encoding`.
fn fix_text(text: &str) -> String {
    // ftfy decodes HTML entities only while no segment so far had a `<`:
    // "auto" becomes false for good at the first one.
    let mut unescape = true;
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        let mut rest = line;
        while !rest.is_empty() {
            let end = rest
                .char_indices()
                .nth(MAX_SEGMENT_CHARS)
                .map_or(rest.len(), |(i, _)| i);
            let (segment, tail) = rest.split_at(end);
            rest = tail;
            if segment.contains('<') {
                unescape = false;
            }
            out.push_str(&fix_segment(segment, unescape));
        }
    }
    out
}

/// ftfy's `fix_and_explain` on one segment: its fixes in its order, again
/// until nothing changes.
fn fix_segment(text: &str, unescape: bool) -> String {
    let mut text = text.to_string();
    loop {
        let original = text.clone();
        if unescape {
            text = ftfy_unescape_html(&text);
        }
        // ftfy's fix_encoding would come here (see the module documentation).
        text = text.chars().map(fix_c1_control).collect();
        text = fix_latin_ligatures(&text);
        text = fix_character_width(&text);
        text = text.chars().map(uncurl_quote).collect();
        text = fix_line_breaks(&text);
        // fix_surrogates: a Rust string has none.
        text = terminal_escape().replace_all(&text, "").into_owned();
        text.retain(|c| !is_removed_control(c));
        text = NormalizedString::from(text.as_str())
            .nfc()
            .get()
            .to_string();
        if text == original {
            return text;
        }
    }
}

/// The characters that Windows-1252 puts at bytes 0x80 to 0x9F, with the
/// five undefined bytes kept as the C1 control of the same number (Python's
/// `html` module and ftfy's "sloppy" codec read them so).
const WINDOWS_1252_HIGH: [char; 32] = [
    '\u{20ac}', '\u{81}', '\u{201a}', '\u{192}', '\u{201e}', '\u{2026}', '\u{2020}', '\u{2021}',
    '\u{2c6}', '\u{2030}', '\u{160}', '\u{2039}', '\u{152}', '\u{8d}', '\u{17d}', '\u{8f}',
    '\u{90}', '\u{2018}', '\u{2019}', '\u{201c}', '\u{201d}', '\u{2022}', '\u{2013}', '\u{2014}',
    '\u{2dc}', '\u{2122}', '\u{161}', '\u{203a}', '\u{153}', '\u{9d}', '\u{17e}', '\u{178}',
];

/// ftfy's `fix_c1_controls`: a C1 control is read as the Windows-1252
/// character of its byte.
fn fix_c1_control(c: char) -> char {
    match c {
        '\u{80}'..='\u{9f}' => WINDOWS_1252_HIGH[c as usize - 0x80],
        _ => c,
    }
}

/// ftfy's `fix_latin_ligatures`.
fn fix_latin_ligatures(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        let replacement = match c {
            'Ĳ' => "IJ",
            'ĳ' => "ij",
            'ŉ' => "\u{2bc}n",
            'Ǳ' => "DZ",
            'ǲ' => "Dz",
            'ǳ' => "dz",
            'Ǆ' => "DŽ",
            'ǅ' => "Dž",
            'ǆ' => "dž",
            'Ǉ' => "LJ",
            'ǈ' => "Lj",
            'ǉ' => "lj",
            'Ǌ' => "NJ",
            'ǋ' => "Nj",
            'ǌ' => "nj",
            'ﬀ' => "ff",
            'ﬁ' => "fi",
            'ﬂ' => "fl",
            'ﬃ' => "ffi",
            'ﬄ' => "ffl",
            'ﬅ' => "ſt",
            'ﬆ' => "st",
            _ => {
                out.push(c);
                continue;
            }
        };
        out.push_str(replacement);
    }
    out
}

/// ftfy's `fix_character_width`: the ideographic space becomes a space,
/// and the halfwidth and fullwidth forms (U+FF01 to U+FFEF) their NFKC
/// form.
fn fix_character_width(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\u{3000}' => out.push(' '),
            '\u{ff01}'..='\u{ffef}' => {
                let mut buffer = [0; 4];
                out.push_str(
                    NormalizedString::from(&*c.encode_utf8(&mut buffer))
                        .nfkc()
                        .get(),
                );
            }
            _ => out.push(c),
        }
    }
    out
}

/// ftfy's `uncurl_quotes`.
fn uncurl_quote(c: char) -> char {
    match c {
        '\u{2bc}' | '\u{2018}'..='\u{201b}' => '\'',
        '\u{201c}'..='\u{201f}' => '"',
        _ => c,
    }
}

/// ftfy's `fix_line_breaks`.
fn fix_line_breaks(text: &str) -> String {
    text.replace("\r\n", "\n")
        .replace(['\r', '\u{2028}', '\u{2029}', '\u{85}'], "\n")
}

/// ftfy's `ANSI_RE`, the escape sequences of terminal colours. Python's
/// `\d` and the `regex` crate's are both Unicode decimal digits.
fn terminal_escape() -> &'static regex::Regex {
    static PATTERN: OnceLock<regex::Regex> = OnceLock::new();
    PATTERN.get_or_init(|| regex::Regex::new(r"\x1b\[(?:\d|;)*[a-zA-Z]").unwrap())
}

/// ftfy's `remove_control_chars`: ASCII controls other than whitespace,
/// the deprecated Arabic format characters, the interlinear annotation
/// characters, the object replacement character and the byte order mark.
fn is_removed_control(c: char) -> bool {
    matches!(c,
        '\u{0}'..='\u{8}' | '\u{b}' | '\u{e}'..='\u{1f}' | '\u{7f}'
        | '\u{206a}'..='\u{206f}' | '\u{feff}' | '\u{fff9}'..='\u{fffc}')
}

/// Returns the expansion of an HTML5 named character reference, `name`
/// without the `&` (`amp;`, or `amp` for the legacy ones without a
/// semicolon).
fn entity(name: &str) -> Option<&'static str> {
    let key = format!("&{name}");
    let bytes = htmlize::ENTITIES.get(key.as_bytes())?;
    std::str::from_utf8(bytes).ok()
}

/// ftfy's `unescape_html`: `&name;` for the HTML5 entities that end in a
/// semicolon, the all-caps spelling of the lowercase ones where that is no
/// entity itself (`&EACUTE;` is `É`), and numeric references that
/// `html.unescape` decodes whole.
fn ftfy_unescape_html(text: &str) -> String {
    if !text.contains('&') {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find('&') {
        out.push_str(&rest[..start]);
        rest = &rest[start..];
        // ftfy's HTML_ENTITY_RE: `&#?[0-9A-Za-z]{1,24};`.
        let after = &rest.as_bytes()[1..];
        let hash = usize::from(after.first() == Some(&b'#'));
        let run = after[hash..]
            .iter()
            .take_while(|b| b.is_ascii_alphanumeric())
            .count();
        if (1..=24).contains(&run) && after.get(hash + run) == Some(&b';') {
            let matched = &rest[..1 + hash + run + 1];
            out.push_str(&ftfy_unescape_entity(matched));
            rest = &rest[matched.len()..];
        } else {
            out.push('&');
            rest = &rest[1..];
        }
    }
    out.push_str(rest);
    out
}

/// ftfy's `_unescape_fixup` of one `&...;`.
fn ftfy_unescape_entity(matched: &str) -> String {
    let name = &matched[1..];
    if let Some(expansion) = entity(name) {
        return expansion.to_string();
    }
    if name.starts_with('#') {
        let unescaped = html_unescape(matched);
        // Only a reference decoded up to its semicolon counts.
        return if unescaped.contains(';') {
            matched.to_string()
        } else {
            unescaped
        };
    }
    // The all-caps spelling of a lowercase entity, where it means nothing
    // to `html.unescape`.
    let lower = name.to_ascii_lowercase();
    if name == lower.to_ascii_uppercase() && html_unescape(matched) == matched {
        if let Some(expansion) = entity(&lower) {
            return expansion.to_uppercase();
        }
    }
    matched.to_string()
}

/// Python's `html.unescape` (3.11): numeric references, with or without
/// the semicolon, and HTML5 named references, the longest name that
/// prefixes the text when no whole one matches.
fn html_unescape(text: &str) -> String {
    if !text.contains('&') {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find('&') {
        out.push_str(&rest[..start]);
        let reference = &rest[start + 1..];
        match char_reference(reference) {
            Some((length, expansion)) => {
                out.push_str(&expansion);
                rest = &reference[length..];
            }
            None => {
                out.push('&');
                rest = reference;
            }
        }
    }
    out.push_str(rest);
    out
}

/// Matches Python's `_charref` after an `&` and returns the length of the
/// match (in bytes) and its replacement:
/// `#[0-9]+;?`, `#[xX][0-9a-fA-F]+;?` or `[^\t\n\f <&#;]{1,32};?`.
fn char_reference(text: &str) -> Option<(usize, String)> {
    let bytes = text.as_bytes();
    let semicolon = |end: usize| end + usize::from(bytes.get(end) == Some(&b';'));
    if bytes.first() == Some(&b'#') {
        let (digits_start, radix) = match bytes.get(1) {
            Some(b'x' | b'X') => (2, 16),
            _ => (1, 10),
        };
        let digits = bytes[digits_start..]
            .iter()
            .take_while(|b| (**b as char).is_digit(radix))
            .count();
        if digits == 0 {
            return None;
        }
        let digits_end = digits_start + digits;
        let number = text[digits_start..digits_end]
            .chars()
            .try_fold(0u32, |n, d| {
                n.checked_mul(radix)?.checked_add(d.to_digit(radix)?)
            });
        return Some((semicolon(digits_end), numeric_reference(number)));
    }

    let name_end = text
        .char_indices()
        .take(32)
        .find(|(_, c)| matches!(c, '\t' | '\n' | '\u{c}' | ' ' | '<' | '&' | '#' | ';'))
        .map_or_else(
            || text.char_indices().nth(32).map_or(text.len(), |(i, _)| i),
            |(i, _)| i,
        );
    if name_end == 0 {
        return None;
    }
    let end = semicolon(name_end);
    let name = &text[..end];
    if let Some(expansion) = entity(name) {
        return Some((end, expansion.to_string()));
    }
    // The longest prefix of at least two characters that is an entity.
    let boundaries: Vec<usize> = name.char_indices().map(|(i, _)| i).skip(2).collect();
    for &cut in boundaries.iter().rev() {
        if let Some(expansion) = entity(&name[..cut]) {
            return Some((end, format!("{expansion}{}", &name[cut..])));
        }
    }
    Some((end, format!("&{name}")))
}

/// The character of a numeric reference, as Python's `html` decodes it:
/// `None` is a number past `u32`.
fn numeric_reference(number: Option<u32>) -> String {
    let Some(number) = number else {
        return '\u{fffd}'.to_string();
    };
    match number {
        0 => '\u{fffd}'.to_string(),
        0x0d => '\r'.to_string(),
        0x80..=0x9f => WINDOWS_1252_HIGH[number as usize - 0x80].to_string(),
        0xd800..=0xdfff | 0x11_0000.. => '\u{fffd}'.to_string(),
        0x1..=0x8 | 0xb | 0xe..=0x1f | 0x7f | 0xfdd0..=0xfdef => String::new(),
        _ if number & 0xfffe == 0xfffe => String::new(),
        _ => char::from_u32(number).map(String::from).unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entity_table_is_html5() {
        // Python's html.entities.html5 has 2231 names, with and without
        // the semicolon.
        assert_eq!(htmlize::ENTITIES.len(), 2231);
        assert_eq!(entity("amp;"), Some("&"));
        assert_eq!(entity("amp"), Some("&"));
        assert_eq!(entity("eacute"), Some("é"));
        assert_eq!(entity("notin;"), Some("∉"));
    }

    #[test]
    fn html_unescape_matches_python() {
        // Expected values from Python 3.11's html.unescape.
        for (text, expected) in [
            ("&amp;", "&"),
            ("&amp", "&"),
            ("&amp;amp;", "&amp;"),
            ("&ampxyz;", "&xyz;"),
            ("&notit;", "¬it;"),
            ("&notin;", "∉"),
            ("&foo;", "&foo;"),
            ("&#65;&#x41;&#X41", "AAA"),
            ("&#0;&#13;&#128;&#x81;", "\u{fffd}\r€\u{81}"),
            ("&#1;&#xfffe;&#xd800;&#x110000;", "\u{fffd}\u{fffd}"),
            ("&#99999999999999999999;", "\u{fffd}"),
            ("& &# &#x &#xg; a&b", "& &# &#x &#xg; a&b"),
            ("&EACUTE;", "&EACUTE;"),
            ("&lt;b&gt;", "<b>"),
        ] {
            assert_eq!(html_unescape(text), expected, "{text:?}");
        }
    }

    #[test]
    fn ftfy_unescape_matches_ftfy() {
        // Expected values from ftfy 6.3's fixes.unescape_html.
        for (text, expected) in [
            ("P&EACUTE;REZ", "PÉREZ"),
            ("BUNDESSTRA&SZLIG;E", "BUNDESSTRASSE"),
            ("&ntilde; &Ntilde; &NTILDE; &nTILDE;", "ñ Ñ Ñ &nTILDE;"),
            ("this&not that", "this&not that"),
            ("&#x2019;s &#65abc;", "’s &#65abc;"),
            ("&amp;amp;", "&amp;"),
        ] {
            assert_eq!(ftfy_unescape_html(text), expected, "{text:?}");
        }
    }

    #[test]
    fn cleans_like_openai_clip() {
        for (text, expected) in [
            ("  Hello\t\tWORLD \n", "hello world"),
            ("\u{201c}It\u{2019}s\u{201d} ﬁne", "\"it's\" fine"),
            ("ＬＯＵＤ　ＮＯＩＳＥＳ", "loud noises"),
            ("\u{1b}[36;44mblue\u{1b}[0m", "blue"),
            ("a\u{feff}b\u{0}c", "abc"),
            ("fish &amp;amp;amp; chips", "fish & chips"),
            // With a `<` ftfy leaves entities alone: two levels are decoded.
            ("<b>fish &amp;amp;amp; chips</b>", "<b>fish &amp; chips</b>"),
            ("ΟΔΟΣ", "οδος"),
        ] {
            assert_eq!(clean(text), expected, "{text:?}");
        }
    }
}

//! Lexing rustfmt-formatted Rust and plain JavaScript: comments dropped, literal contents
//! masked, tokens with their line numbers, test-only items found, `use` trees flattened.

use std::collections::BTreeSet;

pub(crate) fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// Keeps whitespace (and so line breaks), replaces anything else inside a literal by `_`.
fn blank(c: char) -> char {
    if c.is_whitespace() {
        c
    } else {
        '_'
    }
}

/// `src` without comments (doc comments included) and with the contents of string and char
/// literals replaced by `_`, line by line: line numbers and indentation are unchanged, and no
/// `crate::x` or `{` inside a comment or a string is mistaken for code.
pub fn mask_rust(src: &str) -> Vec<String> {
    let c: Vec<char> = src.chars().collect();
    let at = |i: usize| c.get(i).copied().unwrap_or('\0');
    let mut out = String::with_capacity(src.len());
    let mut i = 0;
    while i < c.len() {
        let ch = c[i];
        let after_ident = i > 0 && is_ident(c[i - 1]);
        let raw_prefix = match ch {
            'r' if !after_ident => 1,
            'b' | 'c' if !after_ident && at(i + 1) == 'r' => 2,
            _ => 0,
        };
        let hashes = if raw_prefix > 0 {
            (i + raw_prefix..).take_while(|&k| at(k) == '#').count()
        } else {
            0
        };
        if ch == '/' && at(i + 1) == '/' {
            while i < c.len() && c[i] != '\n' {
                i += 1;
            }
        } else if ch == '/' && at(i + 1) == '*' {
            let mut depth = 0;
            while i < c.len() {
                if c[i] == '/' && at(i + 1) == '*' {
                    depth += 1;
                    i += 2;
                } else if c[i] == '*' && at(i + 1) == '/' {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    if c[i] == '\n' {
                        out.push('\n');
                    }
                    i += 1;
                }
            }
        } else if raw_prefix > 0 && at(i + raw_prefix + hashes) == '"' {
            let open = i + raw_prefix + hashes + 1;
            out.extend(&c[i..open]);
            let closes = |k: usize| at(k) == '"' && (1..=hashes).all(|h| at(k + h) == '#');
            i = open;
            while i < c.len() && !closes(i) {
                out.push(blank(c[i]));
                i += 1;
            }
            out.extend(&c[i.min(c.len())..(i + 1 + hashes).min(c.len())]);
            i += 1 + hashes;
        } else if ch == '"' || (ch == '\'' && (at(i + 1) == '\\' || at(i + 2) == '\'')) {
            // A string, or a char literal ('x', '\n'); any other quote starts a lifetime.
            out.push(ch);
            i += 1;
            while i < c.len() && c[i] != ch {
                let escaped = c[i] == '\\';
                out.push(blank(c[i]));
                i += 1;
                if escaped && i < c.len() {
                    out.push(blank(c[i]));
                    i += 1;
                }
            }
            if i < c.len() {
                out.push(ch);
                i += 1;
            }
        } else {
            out.push(ch);
            i += 1;
        }
    }
    out.lines().map(str::to_owned).collect()
}

/// `src` (JavaScript) without `//` and `/* */` comments and with the contents of string and
/// template literals replaced by `_`, line by line. Regular-expression literals are not
/// recognised (a `//` inside one could hide the rest of its line).
pub fn mask_js(src: &str) -> Vec<String> {
    let c: Vec<char> = src.chars().collect();
    let at = |i: usize| c.get(i).copied().unwrap_or('\0');
    let mut out = String::with_capacity(src.len());
    let mut i = 0;
    while i < c.len() {
        let ch = c[i];
        if ch == '/' && at(i + 1) == '/' {
            while i < c.len() && c[i] != '\n' {
                i += 1;
            }
        } else if ch == '/' && at(i + 1) == '*' {
            i += 2;
            while i < c.len() && !(c[i] == '*' && at(i + 1) == '/') {
                if c[i] == '\n' {
                    out.push('\n');
                }
                i += 1;
            }
            i += 2;
        } else if matches!(ch, '"' | '\'' | '`') {
            out.push(ch);
            i += 1;
            while i < c.len() && c[i] != ch && (ch == '`' || c[i] != '\n') {
                let escaped = c[i] == '\\';
                out.push(blank(c[i]));
                i += 1;
                if escaped && i < c.len() {
                    out.push(blank(c[i]));
                    i += 1;
                }
            }
            if at(i) == ch {
                out.push(ch);
                i += 1;
            }
        } else {
            out.push(ch);
            i += 1;
        }
    }
    out.lines().map(str::to_owned).collect()
}

/// Non-blank lines of JavaScript `src` that are not comments.
pub fn js_code_lines(src: &str) -> usize {
    mask_js(src).iter().filter(|l| !l.trim().is_empty()).count()
}

/// A token of masked Rust source: an identifier/keyword/number, `::`, or one punctuation char.
#[derive(Debug, Clone)]
pub(crate) struct Tok {
    pub(crate) text: String,
    /// 1-based.
    pub(crate) line: usize,
}

pub(crate) fn tokenize(masked: &[String]) -> Vec<Tok> {
    let mut toks = Vec::new();
    for (n, line) in masked.iter().enumerate() {
        let c: Vec<char> = line.chars().collect();
        let mut i = 0;
        while i < c.len() {
            let start = i;
            if is_ident(c[i]) {
                while i < c.len() && is_ident(c[i]) {
                    i += 1;
                }
            } else if c[i] == ':' && c.get(i + 1) == Some(&':') {
                i += 2;
            } else {
                i += 1;
            }
            if !c[start].is_whitespace() {
                let text = c[start..i].iter().collect();
                toks.push(Tok { text, line: n + 1 });
            }
        }
    }
    toks
}

/// Index of the token that ends the item starting at `from`: the `}` closing its first
/// top-level brace, or a `;` outside any bracket (the last token if neither comes).
pub(crate) fn item_end(toks: &[Tok], from: usize) -> usize {
    let mut stack = Vec::new();
    for (k, t) in toks.iter().enumerate().skip(from) {
        match t.text.as_str() {
            "(" | "[" | "{" => stack.push(()),
            ")" | "]" => drop(stack.pop()),
            "}" => {
                stack.pop();
                if stack.is_empty() {
                    return k;
                }
            }
            ";" if stack.is_empty() => return k,
            _ => {}
        }
    }
    toks.len().saturating_sub(1)
}

fn texts_at(toks: &[Tok], i: usize, want: &[&str]) -> bool {
    want.iter()
        .enumerate()
        .all(|(k, w)| toks.get(i + k).is_some_and(|t| t.text == *w))
}

/// Test-only lines: each item under `#[cfg(test)]` (the `mod tests { … }` block, anything else
/// so marked) through its closing brace or semicolon; the whole file under `#![cfg(test)]`.
pub(crate) fn test_lines(toks: &[Tok], line_count: usize) -> BTreeSet<usize> {
    let mut test = BTreeSet::new();
    let mut i = 0;
    while i < toks.len() {
        if texts_at(toks, i, &["#", "!", "[", "cfg", "(", "test", ")", "]"]) {
            return (1..=line_count).collect();
        }
        if texts_at(toks, i, &["#", "[", "cfg", "(", "test", ")", "]"]) {
            let end = item_end(toks, i + 7);
            test.extend(toks[i].line..=toks[end].line);
            i = end;
        }
        i += 1;
    }
    test
}

/// A path in a `use` tree, flattened: `use a::{b, c::D as E}` gives `a::b` and `a::c::D` (`E`).
pub(crate) struct UsePath {
    pub(crate) segs: Vec<String>,
    pub(crate) alias: Option<String>,
    pub(crate) glob: bool,
}

pub(crate) fn parse_use_tree(
    t: &[Tok],
    pos: &mut usize,
    prefix: Vec<String>,
    out: &mut Vec<UsePath>,
) {
    let mut segs = prefix;
    while let Some(tok) = t.get(*pos) {
        *pos += 1;
        match tok.text.as_str() {
            "::" if segs.is_empty() => segs.push("::".into()), // `::extern_crate`
            "*" => {
                return out.push(UsePath {
                    segs,
                    alias: None,
                    glob: true,
                })
            }
            "{" => {
                while t.get(*pos).is_some_and(|t| t.text != "}") {
                    parse_use_tree(t, pos, segs.clone(), out);
                    if t.get(*pos).is_some_and(|t| t.text == ",") {
                        *pos += 1;
                    }
                }
                *pos += 1;
                return;
            }
            name if name.starts_with(is_ident) => {
                segs.push(name.to_owned());
                match t.get(*pos).map(|t| t.text.as_str()) {
                    Some("::") => *pos += 1,
                    Some("as") => {
                        let alias = t.get(*pos + 1).map(|t| t.text.clone());
                        *pos += 2;
                        return out.push(UsePath {
                            segs,
                            alias,
                            glob: false,
                        });
                    }
                    _ => {
                        return out.push(UsePath {
                            segs,
                            alias: None,
                            glob: false,
                        })
                    }
                }
            }
            _ => return,
        }
    }
}

/// `pub`, `pub(crate)`, `pub(super)`, `pub(in …)` right before token `i`.
pub(crate) fn public_before(t: &[Tok], i: usize) -> bool {
    let mut k = i;
    if k > 0 && t[k - 1].text == ")" {
        while k > 0 && t[k - 1].text != "(" {
            k -= 1;
        }
        k = k.saturating_sub(1);
    }
    k > 0 && t[k - 1].text == "pub"
}

//! Strings that exercise a tokenizer: words and punctuation behind every kind of leading
//! whitespace, digits, Unicode, contractions, code, special tokens.

/// A few hundred strings: words and punctuation behind every kind of leading
/// whitespace, digits, Unicode, contractions, code, special tokens.
pub fn samples() -> Vec<String> {
    let bodies = [
        "The Colosseum is in",
        "Paris",
        "hello, world!",
        "don't stop; we'll see. I'M HERE",
        "2024",
        "3.14159 and 1,000,000",
        "a1b2c3 42nd",
        "café naïve résumé",
        "日本語のテキスト",
        "Привет, мир",
        "Ελληνικά",
        "emoji 😀👍🏽 done",
        "e\u{301} vs é",
        "fn main() { println!(\"hi\"); }",
        "x = [1, 2, 3]  # comment",
        "https://example.com/a?b=c&d=e",
        "...!?--—–“quotes”",
        "tab\tseparated\tvalues",
        "<|im_start|>user\nHi<|im_end|>",
        "The key to the cabinet",
        "    indented line",
        "trailing spaces   ",
        "UPPER lower MiXeD",
        "ﬁ ligature ½ ² ℃",
        "\u{a0}non-breaking\u{a0}space",
    ];
    let leads = [
        "", " ", "  ", "\n", "\n\n", "\t", " \n ", "\r\n", "   ", "\u{3000}", "1 ", "  7",
    ];
    let mut out = Vec::new();
    for body in bodies {
        for lead in leads {
            out.push(format!("{lead}{body}"));
        }
        out.push(format!("{body}\n"));
        out.push(format!("{body} {body}"));
    }
    out
}

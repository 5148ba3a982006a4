//! Parsers for the text formats, written from the formats' definitions (logfmt as go-logfmt
//! reads it, the human format as zrepl documents it), so tests compare values, not strings.

/// logfmt: `key=value` pairs separated by spaces; a value is bare (no space, `=` or `"`) or a
/// double-quoted string with backslash escapes; a key without `=` has no value.
pub fn logfmt(line: &str) -> Result<Vec<(String, Option<String>)>, String> {
    let b: Vec<char> = line.chars().collect();
    let mut i = 0;
    let mut out = Vec::new();
    let is_key = |c: char| c > ' ' && c != '=' && c != '"';
    while i < b.len() {
        if b[i] <= ' ' {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && is_key(b[i]) {
            i += 1;
        }
        if i == start {
            return Err(format!("column {i}: expected a key, found {:?}", b[i]));
        }
        let key: String = b[start..i].iter().collect();
        if i >= b.len() || b[i] <= ' ' {
            out.push((key, None));
            continue;
        }
        if b[i] != '=' {
            return Err(format!("column {i}: unexpected {:?} in key", b[i]));
        }
        i += 1;
        let mut value = String::new();
        if i < b.len() && b[i] == '"' {
            i += 1;
            loop {
                let c = *b.get(i).ok_or("unterminated quoted value")?;
                i += 1;
                match c {
                    '"' => break,
                    '\\' => {
                        let e = *b.get(i).ok_or("dangling backslash")?;
                        i += 1;
                        value.push(match e {
                            '"' => '"',
                            '\\' => '\\',
                            '/' => '/',
                            'b' => '\u{8}',
                            'f' => '\u{c}',
                            'n' => '\n',
                            'r' => '\r',
                            't' => '\t',
                            'u' => {
                                let hex: String =
                                    b.get(i..i + 4).ok_or("short \\u")?.iter().collect();
                                i += 4;
                                char::from_u32(
                                    u32::from_str_radix(&hex, 16).map_err(|e| e.to_string())?,
                                )
                                .ok_or("bad \\u")?
                            }
                            other => return Err(format!("unknown escape \\{other}")),
                        });
                    }
                    c => value.push(c),
                }
            }
            if i < b.len() && b[i] > ' ' {
                return Err(format!("column {i}: garbage after quoted value"));
            }
        } else {
            while i < b.len() && b[i] > ' ' {
                if b[i] == '=' || b[i] == '"' {
                    return Err(format!("column {i}: unexpected {:?} in bare value", b[i]));
                }
                value.push(b[i]);
                i += 1;
            }
        }
        out.push((key, Some(value)));
    }
    Ok(out)
}

/// A parsed human-format line.
#[derive(Debug)]
pub struct Human {
    pub time: Option<String>,
    /// Level (if printed), job, subsystem, span, in order, colors removed.
    pub brackets: Vec<String>,
    pub fields: Vec<(String, String)>,
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::new();
    let mut it = s.chars().peekable();
    while let Some(c) = it.next() {
        if c == '\x1b' && it.peek() == Some(&'[') {
            for d in it.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// `[time ][LEVL][job][subsystem][span]: <message> key="value" ...` where `message` is known.
pub fn human(line: &str, message: &str) -> Result<Human, String> {
    let line = strip_ansi(line);
    let mut rest = line.as_str();
    let mut time = None;
    if !rest.starts_with('[') && !rest.starts_with(message) {
        let (t, r) = rest.split_once(' ').ok_or("no space after time")?;
        time = Some(t.to_string());
        rest = r;
    }
    let mut brackets = Vec::new();
    while let Some(r) = rest.strip_prefix('[') {
        let (b, r) = r.split_once(']').ok_or("unclosed [")?;
        brackets.push(b.to_string());
        rest = r;
    }
    if time.is_some() || !brackets.is_empty() {
        rest = rest.strip_prefix(": ").ok_or("no ': ' after the prefix")?;
    }
    rest = rest
        .strip_prefix(message)
        .ok_or_else(|| format!("message {message:?} not found in {rest:?}"))?;
    let mut fields = Vec::new();
    let c: Vec<char> = rest.chars().collect();
    let mut i = 0;
    while i < c.len() {
        if c[i] != ' ' {
            return Err(format!("expected a space before a field at {i}"));
        }
        i += 1;
        let start = i;
        while i < c.len() && c[i] != '=' {
            i += 1;
        }
        let key: String = c[start..i].iter().collect();
        i += 1;
        if c.get(i) != Some(&'"') {
            return Err(format!("value of {key} is not quoted"));
        }
        i += 1;
        let mut v = String::new();
        loop {
            let ch = *c.get(i).ok_or("unterminated value")?;
            i += 1;
            match ch {
                '"' => break,
                '\\' => {
                    let e = *c.get(i).ok_or("dangling backslash")?;
                    i += 1;
                    let hex = |n: usize, i: &mut usize| -> Result<char, String> {
                        let h: String = c.get(*i..*i + n).ok_or("short escape")?.iter().collect();
                        *i += n;
                        char::from_u32(u32::from_str_radix(&h, 16).map_err(|e| e.to_string())?)
                            .ok_or_else(|| "bad escape".to_string())
                    };
                    v.push(match e {
                        '"' => '"',
                        '\\' => '\\',
                        'a' => '\u{7}',
                        'b' => '\u{8}',
                        'f' => '\u{c}',
                        'n' => '\n',
                        'r' => '\r',
                        't' => '\t',
                        'v' => '\u{b}',
                        'x' => hex(2, &mut i)?,
                        'u' => hex(4, &mut i)?,
                        'U' => hex(8, &mut i)?,
                        other => return Err(format!("unknown escape \\{other}")),
                    });
                }
                ch => v.push(ch),
            }
        }
        fields.push((key, v));
    }
    Ok(Human {
        time,
        brackets,
        fields,
    })
}

#[test]
fn logfmt_parser_follows_the_syntax() {
    type Pairs<'a> = Vec<(&'a str, Option<&'a str>)>;
    let cases: Vec<(&str, Result<Pairs, ()>)> = vec![
        ("a=1 b=two", Ok(vec![("a", Some("1")), ("b", Some("two"))])),
        ("flag x=", Ok(vec![("flag", None), ("x", Some(""))])),
        (
            r#"m="a \"b\" \\ \n\u0007""#,
            Ok(vec![("m", Some("a \"b\" \\ \n\u{7}"))]),
        ),
        ("a=b=c", Err(())),
        (r#"a="open"#, Err(())),
        ("=v", Err(())),
    ];
    for (input, want) in cases {
        let got = logfmt(input).map_err(|_| ());
        let want = want.map(|v| {
            v.into_iter()
                .map(|(k, v)| (k.to_string(), v.map(str::to_string)))
                .collect::<Vec<_>>()
        });
        assert_eq!(got, want, "{input}");
    }
}

//! Reads `target/testenv/env`, a shell file of `export NAME=VALUE` lines, as
//! the shell would for the subset e2e/testenv/up.sh writes: single-quoted,
//! double-quoted and bare words, concatenated; `$NAME` / `${NAME}` expanded
//! (earlier lines first, then the process environment) outside single quotes;
//! `\` escapes outside quotes; comments and blank lines. Anything else (command
//! substitution, several assignments on a line) is an error rather than a guess.

use std::collections::BTreeMap;

/// A line of the environment file that is not in the supported subset.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {what}")]
pub struct EnvFileError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong with it.
    pub what: String,
}

/// Parses the environment file into its variables.
pub fn parse_env_file(text: &str) -> Result<BTreeMap<String, String>, EnvFileError> {
    let mut vars = BTreeMap::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let err = |what: &str| EnvFileError {
            line: i + 1,
            what: what.to_owned(),
        };
        let assignment = line
            .strip_prefix("export ")
            .map(str::trim_start)
            .unwrap_or(line);
        let (name, value) = assignment
            .split_once('=')
            .ok_or_else(|| err("expected NAME=VALUE"))?;
        if !is_name(name) {
            return Err(err(&format!("{name:?} is not a variable name")));
        }
        let value = parse_word(value, &vars).map_err(|what| err(&what))?;
        vars.insert(name.to_owned(), value);
    }
    Ok(vars)
}

fn is_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn lookup(name: &str, vars: &BTreeMap<String, String>) -> String {
    vars.get(name)
        .cloned()
        .or_else(|| std::env::var(name).ok())
        .unwrap_or_default()
}

/// Expands a `$NAME` or `${NAME}` whose `$` was just consumed.
fn expand(
    chars: &mut std::iter::Peekable<std::str::Chars<'_>>,
    vars: &BTreeMap<String, String>,
) -> Result<String, String> {
    if chars.peek() == Some(&'{') {
        chars.next();
        let mut name = String::new();
        for c in chars.by_ref() {
            if c == '}' {
                return if is_name(&name) {
                    Ok(lookup(&name, vars))
                } else {
                    Err(format!("unsupported expansion ${{{name}}}"))
                };
            }
            name.push(c);
        }
        return Err("unterminated ${".to_owned());
    }
    let mut name = String::new();
    while let Some(&c) = chars.peek() {
        if c.is_ascii_alphanumeric() || c == '_' {
            name.push(c);
            chars.next();
        } else {
            break;
        }
    }
    if is_name(&name) {
        Ok(lookup(&name, vars))
    } else {
        Err("unsupported use of $".to_owned())
    }
}

fn parse_word(word: &str, vars: &BTreeMap<String, String>) -> Result<String, String> {
    let mut out = String::new();
    let mut chars = word.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' => loop {
                match chars.next() {
                    Some('\'') => break,
                    Some(c) => out.push(c),
                    None => return Err("unterminated single quote".to_owned()),
                }
            },
            '"' => loop {
                match chars.next() {
                    Some('"') => break,
                    Some('\\') => match chars.next() {
                        Some(c @ ('"' | '\\' | '$' | '`')) => out.push(c),
                        Some(c) => {
                            out.push('\\');
                            out.push(c);
                        }
                        None => return Err("unterminated double quote".to_owned()),
                    },
                    Some('$') => out.push_str(&expand(&mut chars, vars)?),
                    Some('`') => return Err("command substitution is not supported".to_owned()),
                    Some(c) => out.push(c),
                    None => return Err("unterminated double quote".to_owned()),
                }
            },
            '\\' => match chars.next() {
                Some(c) => out.push(c),
                None => return Err("trailing backslash".to_owned()),
            },
            '$' => {
                if chars.peek() == Some(&'(') {
                    return Err("command substitution is not supported".to_owned());
                }
                out.push_str(&expand(&mut chars, vars)?);
            }
            c if c.is_whitespace() => {
                // Only a trailing comment may follow the value.
                let rest: String = chars.collect();
                let rest = rest.trim_start();
                if rest.is_empty() || rest.starts_with('#') {
                    return Ok(out);
                }
                return Err("more than one word after =".to_owned());
            }
            '`' | ';' | '&' | '|' | '<' | '>' | '(' | ')' => {
                return Err(format!("unsupported shell syntax {c:?}"));
            }
            c => out.push(c),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse(text: &str) -> BTreeMap<String, String> {
        parse_env_file(text).expect("valid env file")
    }

    #[test]
    fn reads_what_up_sh_writes() {
        let vars = parse(
            "# Written by e2e/testenv/up.sh\n\
             export PRAPI_TESTENV=1\n\
             export KAFKA_BOOTSTRAP_SERVERS='127.0.0.1:9092'\n\
             \n\
             export KUBECONFIG='/w/target/testenv/k8s/admin.kubeconfig'\n\
             export PATH='/c/k8s/bin':\"$PRAPI_TESTENV:x\"\n",
        );
        assert_eq!(vars["PRAPI_TESTENV"], "1");
        assert_eq!(vars["KAFKA_BOOTSTRAP_SERVERS"], "127.0.0.1:9092");
        assert_eq!(vars["KUBECONFIG"], "/w/target/testenv/k8s/admin.kubeconfig");
        assert_eq!(vars["PATH"], "/c/k8s/bin:1:x");
        assert_eq!(vars.len(), 4);
    }

    #[test]
    fn expands_braced_and_bare_names_and_escapes() {
        let vars = parse("A=x\nB=${A}y$A\"$A\"\\$A\nC=\"q\\\"\\$A\"\nD= # empty\n");
        assert_eq!(vars["B"], "xyxx$A");
        assert_eq!(vars["C"], "q\"$A");
        assert_eq!(vars["D"], "");
    }

    #[test]
    fn rejects_what_it_does_not_understand() {
        for (text, line) in [
            ("A='x", 1),
            ("A=\"x", 1),
            ("ok=1\nA=$(date)", 2),
            ("A=`date`", 1),
            ("A=x y", 1),
            ("A=x;rm", 1),
            ("1A=x", 1),
            ("just words", 1),
            ("A=${B", 1),
            ("A=${B-c}", 1),
            ("A=x\\", 1),
        ] {
            let err = parse_env_file(text).expect_err(text);
            assert_eq!(err.line, line, "{text}: {err}");
        }
    }

    /// Quotes like the shell's `printf %q`-free idiom: '...' with '\'' for quotes.
    fn shell_quote(s: &str) -> String {
        format!("'{}'", s.replace('\'', r"'\''"))
    }

    proptest! {
        #[test]
        fn single_quoted_values_round_trip(value in "[^\n\r]*", name in "[A-Z_][A-Z0-9_]{0,12}") {
            let text = format!("export {name}={}\n", shell_quote(&value));
            let vars = parse_env_file(&text).expect("quoted value parses");
            prop_assert_eq!(vars.get(&name), Some(&value));
        }
    }
}

//! `prapi ring`: which products pod owns each id, for debugging cache placement and parity checks.

use std::io::{self, BufRead, Write};

use super::endpoint::parse_endpoints;
use super::ring::Ring;
use crate::model::ProductId;

/// Reads one product id per line from `input` and writes `id<TAB>owner endpoint` per line to
/// `output`, placing ids exactly as Skipper's `consistentHash` does over `endpoints`.
///
/// Blank lines are skipped; surrounding whitespace (and a trailing `\r`) is ignored. An invalid id
/// gives `id<TAB>error: <reason>` on its line and the command goes on, so output lines stay
/// aligned with input lines. Invalid or missing endpoints are an `InvalidInput` error before
/// anything is read.
pub fn ring_command(
    endpoints: &[String],
    input: impl BufRead,
    output: impl Write,
) -> io::Result<()> {
    let endpoints =
        parse_endpoints(endpoints).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    if endpoints.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "no endpoints given (expected --endpoints http://<ip>:<port>,...)",
        ));
    }
    let ring = Ring::new(&endpoints.iter().map(|e| e.as_str()).collect::<Vec<_>>());
    let mut input = input;
    let mut output = io::BufWriter::new(output);
    let mut line = Vec::new();
    loop {
        line.clear();
        if input.read_until(b'\n', &mut line)? == 0 {
            break;
        }
        // Not UTF-8 is just another invalid id: report it on its line instead of aborting.
        let text = String::from_utf8_lossy(&line);
        let id = text.trim();
        if id.is_empty() {
            continue;
        }
        match ProductId::parse(id) {
            Ok(id) => {
                let owner = ring
                    .owner(id.as_str())
                    .and_then(|m| endpoints.get(m as usize));
                match owner {
                    Some(owner) => writeln!(output, "{id}\t{owner}")?,
                    None => writeln!(output, "{id}\terror: no endpoint owns this id")?,
                }
            }
            Err(e) => writeln!(output, "{}\terror: {e}", id.escape_debug())?,
        }
    }
    output.flush()
}

#[cfg(test)]
mod tests {
    use super::super::skipper_vectors::{OWNERS, SETS};
    use super::*;

    fn run(endpoints: &[&str], input: &[u8]) -> io::Result<String> {
        let eps: Vec<String> = endpoints.iter().map(|s| s.to_string()).collect();
        let mut out = Vec::new();
        ring_command(&eps, input, &mut out)?;
        Ok(String::from_utf8(out).expect("utf-8 output"))
    }

    #[test]
    fn prints_skippers_owner_per_id() {
        let set = 2;
        let rows: Vec<_> = OWNERS.iter().filter(|r| r.0 == set).collect();
        let input: String = rows.iter().map(|r| format!("{}\n", r.1)).collect();
        let out = run(SETS[set], input.as_bytes()).expect("runs");
        let expected: String = rows.iter().map(|r| format!("{}\t{}\n", r.1, r.2)).collect();
        assert_eq!(out, expected);
    }

    #[test]
    fn endpoints_may_come_as_separate_strings_in_any_order_with_spaces() {
        let set = 1;
        let mut eps: Vec<String> = SETS[set].iter().map(|e| format!(" {e} ")).collect();
        eps.reverse();
        let mut out = Vec::new();
        ring_command(&eps, &b"P1\r\n"[..], &mut out).expect("runs");
        let owner = OWNERS
            .iter()
            .find(|r| r.0 == set && r.1 == "P1")
            .expect("vector for P1")
            .2;
        assert_eq!(
            String::from_utf8(out).expect("utf-8"),
            format!("P1\t{owner}\n")
        );
    }

    #[test]
    fn invalid_ids_give_an_error_line_and_the_rest_still_runs() {
        let out = run(
            &["http://10.0.0.1:8080"],
            b"P1\n\n  \nbad id!\n\xff\xfe\nP2",
        )
        .expect("runs");
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 4, "{out}");
        assert_eq!(lines[0], "P1\thttp://10.0.0.1:8080");
        assert!(
            lines[1].starts_with("bad id!\terror: invalid product id:"),
            "{}",
            lines[1]
        );
        assert!(
            lines[2].contains("\terror: invalid product id:"),
            "{}",
            lines[2]
        );
        assert_eq!(lines[3], "P2\thttp://10.0.0.1:8080");
    }

    #[test]
    fn bad_endpoints_are_an_error_before_reading() {
        let e = run(&["10.0.0.1:8080"], b"P1\n").expect_err("no scheme");
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        assert!(e.to_string().contains("missing scheme"), "{e}");
        let e = run(&[], b"P1\n").expect_err("no endpoints");
        assert!(e.to_string().contains("no endpoints"), "{e}");
    }
}

//! The value syntaxes compose files share with Docker's flags: Go durations (`1m30s`), go-units
//! memory sizes (`512M`), decimal CPU counts (`0.5`), and shell-style command lines. Each parser
//! returns what it expected on failure, for the caller to put after the key's path.

/// A Go duration (`5s`, `1m30s`, `300ms`, `1.5h`, `0`) in milliseconds.
pub fn duration_ms(text: &str) -> Result<u64, String> {
    let bad = || "expected a duration like 10s, 1m30s or 300ms".to_string();
    let trimmed = text.trim();
    if trimmed == "0" {
        return Ok(0);
    }
    let mut rest = trimmed.strip_prefix('+').unwrap_or(trimmed);
    if rest.is_empty() {
        return Err(bad());
    }
    let mut total_ms = 0f64;
    while !rest.is_empty() {
        let number_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).ok_or_else(bad)?;
        if number_len == 0 {
            return Err(bad());
        }
        let number: f64 = rest[..number_len].parse().map_err(|_| bad())?;
        rest = &rest[number_len..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let scale_ms = match &rest[..unit_len] {
            "ns" => 1e-6,
            "us" | "µs" | "μs" => 1e-3,
            "ms" => 1.0,
            "s" => 1e3,
            "m" => 60e3,
            "h" => 3600e3,
            _ => return Err(bad()),
        };
        total_ms += number * scale_ms;
        rest = &rest[unit_len..];
    }
    if !total_ms.is_finite() || total_ms >= u64::MAX as f64 {
        return Err(bad());
    }
    Ok(total_ms.round() as u64)
}

/// go-units `RAMInBytes`: `512M`, `1G`, `1gb`, `64m`, `1024` (bytes); binary multiples.
pub fn memory_bytes(text: &str) -> Result<u64, String> {
    let bad = || "expected a memory size like 512M or 1G".to_string();
    let trimmed = text.trim();
    let number_len = trimmed.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(trimmed.len());
    if number_len == 0 {
        return Err(bad());
    }
    let number: f64 = trimmed[..number_len].parse().map_err(|_| bad())?;
    let unit = trimmed[number_len..].trim_start().to_ascii_lowercase();
    let unit = unit.strip_suffix('b').unwrap_or(&unit);
    let unit = unit.strip_suffix('i').unwrap_or(unit);
    let multiplier: f64 = match unit {
        "" => 1.0,
        "k" => 1024.0,
        "m" => 1024.0 * 1024.0,
        "g" => 1024f64.powi(3),
        "t" => 1024f64.powi(4),
        "p" => 1024f64.powi(5),
        _ => return Err(bad()),
    };
    let bytes = number * multiplier;
    if !bytes.is_finite() || bytes >= u64::MAX as f64 {
        return Err(bad());
    }
    Ok(bytes as u64)
}

/// A decimal number of CPUs (`0.5`, `2`) in nano-CPUs, as Swarm's `NanoCPUs`.
pub fn nano_cpus(text: &str) -> Result<u64, String> {
    let bad = || "expected a number of CPUs like 0.5 or 2".to_string();
    let value: f64 = text.trim().parse().map_err(|_| bad())?;
    if !value.is_finite() || value < 0.0 || value * 1e9 >= u64::MAX as f64 {
        return Err(bad());
    }
    Ok((value * 1e9).round() as u64)
}

/// Split a command line as `shellwords.Parse` does for compose's string form of `command:` and
/// `entrypoint:`: whitespace separates words; single quotes, double quotes and backslashes quote.
pub fn shell_words(text: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => word.push(c),
                        None => return Err("expected a closing ' quote".into()),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\' | '$' | '`')) => word.push(c),
                            Some(c) => {
                                word.push('\\');
                                word.push(c);
                            }
                            None => return Err("expected a closing \" quote".into()),
                        },
                        Some(c) => word.push(c),
                        None => return Err("expected a closing \" quote".into()),
                    }
                }
            }
            '\\' => {
                in_word = true;
                match chars.next() {
                    Some(c) => word.push(c),
                    None => return Err("expected a character after the trailing \\".into()),
                }
            }
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            c => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        assert_eq!(duration_ms("1m30s"), Ok(90_000));
        assert_eq!(duration_ms("300ms"), Ok(300));
        assert_eq!(duration_ms("0"), Ok(0));
        assert!(duration_ms("10").is_err());
        assert!(duration_ms("").is_err());
        assert_eq!(memory_bytes("50M"), Ok(50 << 20));
        assert_eq!(memory_bytes("1024"), Ok(1024));
        assert!(memory_bytes("lots").is_err());
        assert_eq!(nano_cpus("0.25"), Ok(250_000_000));
        assert!(nano_cpus("-1").is_err());
    }

    #[test]
    fn shell_words_quote() {
        assert_eq!(
            shell_words(r#"sh -c "echo 'hi there'; sleep 1" a\ b"#).unwrap(),
            ["sh", "-c", "echo 'hi there'; sleep 1", "a b"]
        );
        assert!(shell_words("a 'b").is_err());
    }
}

//! `~/.netrc` (or the file `NETRC` names), as Python's `netrc` module and
//! so pip read it: `machine HOST login USER password PASS` entries, a
//! `default` entry for any other host, `account` and `macdef` skipped.

/// The login and password for `host` (no port), if the file has them.
pub fn lookup(text: &str, host: &str) -> Option<(String, String)> {
    let mut tokens = Tokens::new(text);
    let mut default: Option<(String, String)> = None;
    while let Some(token) = tokens.next() {
        let is_default = match token.as_str() {
            "machine" => false,
            "default" => true,
            "macdef" => {
                tokens.skip_macro();
                continue;
            }
            _ => continue,
        };
        let name = if is_default { None } else { tokens.next() };
        let (mut login, mut password) = (String::new(), String::new());
        while let Some(key) = tokens.peek() {
            match key.as_str() {
                "login" | "password" | "account" => {
                    tokens.next();
                    let value = tokens.next().unwrap_or_default();
                    match key.as_str() {
                        "login" => login = value,
                        "password" => password = value,
                        _ => {}
                    }
                }
                _ => break,
            }
        }
        match name {
            Some(n) if n.eq_ignore_ascii_case(host) => return Some((login, password)),
            None if default.is_none() => default = Some((login, password)),
            _ => {}
        }
    }
    default
}

/// Whitespace-separated tokens, `"quoted"` ones with `\` escapes.
struct Tokens<'a> {
    rest: &'a str,
    peeked: Option<Option<String>>,
}

impl<'a> Tokens<'a> {
    fn new(text: &'a str) -> Self {
        Tokens {
            rest: text,
            peeked: None,
        }
    }

    fn peek(&mut self) -> Option<String> {
        if self.peeked.is_none() {
            let t = self.read();
            self.peeked = Some(t);
        }
        self.peeked.clone().flatten()
    }

    fn read(&mut self) -> Option<String> {
        loop {
            self.rest = self.rest.trim_start();
            // A comment runs to the end of its line.
            if self.rest.starts_with('#') {
                self.rest = self.rest.find('\n').map_or("", |i| &self.rest[i..]);
                continue;
            }
            break;
        }
        if self.rest.is_empty() {
            return None;
        }
        let mut out = String::new();
        let mut chars = self.rest.char_indices();
        if self.rest.starts_with('"') {
            chars.next();
            while let Some((i, c)) = chars.next() {
                match c {
                    '"' => {
                        self.rest = &self.rest[i + 1..];
                        return Some(out);
                    }
                    '\\' => out.extend(chars.next().map(|(_, c)| c)),
                    c => out.push(c),
                }
            }
            self.rest = "";
            return Some(out);
        }
        for (i, c) in chars {
            if c.is_whitespace() {
                self.rest = &self.rest[i..];
                return Some(out);
            }
            out.push(c);
        }
        self.rest = "";
        Some(out)
    }

    /// A macro's body runs to the first empty line.
    fn skip_macro(&mut self) {
        self.peeked = None;
        self.rest = self.rest.find("\n\n").map_or("", |i| &self.rest[i..]);
    }
}

impl Iterator for Tokens<'_> {
    type Item = String;

    fn next(&mut self) -> Option<String> {
        match self.peeked.take() {
            Some(t) => t,
            None => self.read(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn machines_default_quotes_comments_and_macros() {
        let text = "# mine\nmachine a.example login u1 password p1\n\
            macdef init\ncd /\nmachine evil password x\n\n\
            machine B.example\n  login \"u 2\"\n  account acc\n  password \"p\\\"2\"\n\
            default login anon password guest\n";
        assert_eq!(lookup(text, "a.example"), Some(("u1".into(), "p1".into())));
        assert_eq!(
            lookup(text, "b.example"),
            Some(("u 2".into(), "p\"2".into()))
        );
        assert_eq!(lookup(text, "evil"), Some(("anon".into(), "guest".into())));
        assert_eq!(lookup("machine x login a password b", "y"), None);
    }
}

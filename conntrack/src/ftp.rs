//! Reading the FTP control messages that announce a data connection, and writing the address
//! back in the same syntax.
//!
//! This module owns the syntax of `PORT h1,h2,h3,h4,p1,p2` and `227 ... (h1,h2,h3,h4,p1,p2)`
//! (RFC 959), `EPRT |af|addr|port|` and `229 ... (|||port|)` (RFC 2428): where the address and
//! port are, what they say, and what a replacement address looks like. It works on one TCP
//! payload and never reads past it; every number is bounded before it is used. It must not
//! decide whether a message is acceptable for a connection (that is [`crate::alg`]) or touch a
//! frame.
//!
//! What counts as a message follows Open vSwitch's userspace helper: the keyword (`PORT`,
//! `EPRT`, any case) or reply code (`227`, `229`) starts the segment's payload; a message that
//! starts like one but does not parse is malformed (the caller marks the packet invalid, as
//! Open vSwitch does). One deliberate difference: the message must end with its line end in
//! this segment. Open vSwitch parses whatever the segment holds (and drops its last byte), so a
//! command split across segments gets an expectation for a wrong port there, and none here.

use crate::tuple::Addr;
use std::net::{Ipv4Addr, Ipv6Addr};

/// Who will open the data connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// `PORT`/`EPRT`: the message names its sender's address; the peer connects to it.
    Active,
    /// `227`/`229`: the message names the server's address; the client connects to it.
    Passive,
}

/// How the address is written, for writing a replacement.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Syntax {
    /// `h1,h2,h3,h4` (PORT, 227).
    Commas,
    /// Dotted IPv4 or textual IPv6 between delimiters (EPRT).
    Text,
    /// No address at all (229): the data connection goes to the control connection's peer.
    None,
}

/// A recognised message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Msg {
    pub mode: Mode,
    pub syntax: Syntax,
    /// The announced address (`None` for 229).
    pub addr: Option<Addr>,
    pub port: u16,
    /// Where the address text is in the payload (`addr_len` 0 for 229).
    pub addr_at: usize,
    pub addr_len: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Parse {
    /// Not a message that announces a data connection (or not complete in this segment).
    Other,
    /// Starts like one but does not parse.
    Malformed,
    Msg(Msg),
}

/// The longest message looked at: RFC 959 lines are short, and a bound keeps hostile payloads
/// cheap. A longer line is not a message of interest.
pub const MAX_LINE: usize = 256;

fn starts_with_ci(s: &[u8], kw: &[u8]) -> bool {
    s.len() >= kw.len() && s[..kw.len()].eq_ignore_ascii_case(kw)
}

/// Parses `payload` (a TCP segment's data). `v6` is the control connection's family;
/// `extended_v4` accepts `EPRT |1|` and `229` over IPv4 too (Open vSwitch reads the extended
/// forms over IPv6 only, and the classic ones over IPv4 only).
pub fn parse(payload: &[u8], v6: bool, extended_v4: bool) -> Parse {
    let head = &payload[..payload.len().min(MAX_LINE)];
    let classic = !v6;
    let extended = v6 || extended_v4;
    let (mode, kw_len, extended_form) = if classic && starts_with_ci(head, b"PORT") {
        (Mode::Active, 4, false)
    } else if classic && head.starts_with(b"227") {
        (Mode::Passive, 3, false)
    } else if extended && starts_with_ci(head, b"EPRT") {
        (Mode::Active, 4, true)
    } else if extended && head.starts_with(b"229") {
        (Mode::Passive, 3, true)
    } else {
        return Parse::Other;
    };
    // The whole line must be here: a partial one is not parsed (see the module doc).
    let Some(eol) = head.iter().position(|&b| b == b'\n') else {
        return Parse::Other;
    };
    let line = &head[..eol];
    let r = match (extended_form, mode) {
        (false, _) => commas(line, kw_len, mode),
        (true, Mode::Active) => eprt(line, kw_len, v6),
        (true, Mode::Passive) => epsv(line, kw_len),
    };
    r.map_or(Parse::Malformed, Parse::Msg)
}

/// A decimal number of at most `max_digits` digits at `s[i..]`, without a leading zero unless
/// it is `0`; its value and the index after it.
fn number(s: &[u8], i: usize, max_digits: usize) -> Option<(u32, usize)> {
    let digits = s
        .get(i..)?
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .count();
    if digits == 0 || digits > max_digits {
        return None;
    }
    if digits > 1 && s[i] == b'0' {
        return None;
    }
    let v = s[i..i + digits]
        .iter()
        .fold(0u32, |v, &b| v * 10 + (b - b'0') as u32);
    Some((v, i + digits))
}

/// `PORT h1,h2,h3,h4,p1,p2` / `227 text (h1,h2,h3,h4,p1,p2)`: after the keyword, a blank, then
/// the six numbers start at the first digit.
fn commas(line: &[u8], kw_len: usize, mode: Mode) -> Option<Msg> {
    let sp = kw_len + line.get(kw_len..)?.iter().position(|&b| b == b' ')?;
    let start = sp + line[sp..].iter().position(|b| b.is_ascii_digit())?;
    let mut i = start;
    let mut n = [0u32; 6];
    let mut addr_end = start;
    for (k, slot) in n.iter_mut().enumerate() {
        let (v, j) = number(line, i, 3)?;
        if v > 255 {
            return None;
        }
        *slot = v;
        i = j;
        if k == 3 {
            addr_end = i;
        }
        if k < 5 {
            if line.get(i) != Some(&b',') {
                return None;
            }
            i += 1;
        }
    }
    let a = Ipv4Addr::new(n[0] as u8, n[1] as u8, n[2] as u8, n[3] as u8);
    Some(Msg {
        mode,
        syntax: Syntax::Commas,
        addr: Some(Addr::v4(u32::from(a))),
        port: (n[4] << 8 | n[5]) as u16,
        addr_at: start,
        addr_len: addr_end - start,
    })
}

/// `EPRT <d><af><d><addr><d><port><d>` with any printable delimiter `d` (RFC 2428, 2).
fn eprt(line: &[u8], kw_len: usize, v6: bool) -> Option<Msg> {
    let mut i = kw_len;
    if line.get(i) != Some(&b' ') {
        return None;
    }
    while line.get(i) == Some(&b' ') {
        i += 1;
    }
    let d = *line.get(i)?;
    if !(33..=126).contains(&d) || d.is_ascii_alphanumeric() {
        return None;
    }
    let af = *line.get(i + 1)?;
    if line.get(i + 2) != Some(&d) {
        return None;
    }
    let want = if v6 { b'2' } else { b'1' };
    if af != want {
        return None;
    }
    let addr_at = i + 3;
    let addr_len = line.get(addr_at..)?.iter().position(|&b| b == d)?;
    let text = std::str::from_utf8(&line[addr_at..addr_at + addr_len]).ok()?;
    let addr = if v6 {
        Addr::from_u128(u128::from(text.parse::<Ipv6Addr>().ok()?))
    } else {
        Addr::v4(u32::from(text.parse::<Ipv4Addr>().ok()?))
    };
    let (port, j) = number(line, addr_at + addr_len + 1, 5)?;
    if line.get(j) != Some(&d) || port == 0 || port > 65535 {
        return None;
    }
    Some(Msg {
        mode: Mode::Active,
        syntax: Syntax::Text,
        addr: Some(addr),
        port: port as u16,
        addr_at,
        addr_len,
    })
}

/// `229 text (<d><d><d><port><d>)` (RFC 2428, 3).
fn epsv(line: &[u8], kw_len: usize) -> Option<Msg> {
    let open = kw_len + line.get(kw_len..)?.iter().position(|&b| b == b'(')?;
    let d = *line.get(open + 1)?;
    if !(33..=126).contains(&d) || d.is_ascii_alphanumeric() {
        return None;
    }
    if line.get(open + 2) != Some(&d) || line.get(open + 3) != Some(&d) {
        return None;
    }
    let (port, j) = number(line, open + 4, 5)?;
    if line.get(j) != Some(&d) || line.get(j + 1) != Some(&b')') || port == 0 || port > 65535 {
        return None;
    }
    Some(Msg {
        mode: Mode::Passive,
        syntax: Syntax::None,
        addr: None,
        port: port as u16,
        addr_at: open,
        addr_len: 0,
    })
}

/// Longest address text written: an IPv6 address in full.
pub const MAX_ADDR_TEXT: usize = 39;

/// Writes `a` in `syntax` into `out`; returns the length (0 for [`Syntax::None`]).
pub fn format_addr(a: Addr, v6: bool, syntax: Syntax, out: &mut [u8; MAX_ADDR_TEXT]) -> usize {
    use std::io::Write as _;
    let mut cur = std::io::Cursor::new(&mut out[..]);
    let r = match syntax {
        Syntax::None => return 0,
        Syntax::Commas => {
            let o = a.as_v4().to_be_bytes();
            write!(cur, "{},{},{},{}", o[0], o[1], o[2], o[3])
        }
        Syntax::Text if v6 => write!(cur, "{}", Ipv6Addr::from(a.to_u128())),
        Syntax::Text => write!(cur, "{}", Ipv4Addr::from(a.as_v4())),
    };
    // Every form fits (the buffer is as long as the longest); a failure writes nothing.
    if r.is_err() {
        return 0;
    }
    cur.position() as usize
}

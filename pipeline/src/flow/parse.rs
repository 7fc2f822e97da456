//! The flow parser: `ovs-ofctl add-flows` syntax (and `dump-flows` output, which is the same
//! syntax with statistics) into [`FlowSpec`].
//!
//! A hand-written scanner over `&str`: no regular expressions, no tokens materialised; every
//! error carries the byte offset of the offending token, turned into a 1-based line and column
//! at the end. Prerequisites, widths and writability are checked here so a file that parses is a
//! file the pipeline can install. This module must not know how flows are stored or run.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::names::{self, FieldName, CT_STATE_FLAGS, TCP_FLAGS, TUN_FLAGS};
use super::{
    ofp_port, Action, ControllerSpec, CtAction, CtZone, FlowSpec, LearnSpec, Match, NatKind,
    NatSpec, OutputTarget, PortNames,
};
use crate::field::{
    self, Field, Prereq, SubField, ValueFormat, ETH_TYPE_ARP, ETH_TYPE_IP, ETH_TYPE_IPV6,
    IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_SCTP, IPPROTO_TCP, IPPROTO_UDP, TUN_METADATA_MAPPED,
};
use crate::key::{loc, FieldLoc, FRAG_ANY, FRAG_LATER, VLAN_CFI};

pub use super::error::FlowParseError;

/// What the parser needs to know beyond the text: port names.
#[derive(Clone, Debug, Default)]
pub struct ParseContext {
    pub ports: PortNames,
}

impl ParseContext {
    pub fn with_ports(ports: PortNames) -> Self {
        ParseContext { ports }
    }
}

/// Which command a flow text belongs to; it decides what is allowed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlowModKind {
    /// `add-flow(s)`: `actions=` required, no `cookie` mask, no `out_port`.
    Add,
    /// `mod-flows`: `actions=` required; `cookie=V/M` selects flows. `table` defaults to 255
    /// (every table).
    Modify,
    /// `del-flows`: no actions; `cookie=V/M`, `out_port` allowed. `table` defaults to 255
    /// (every table).
    Delete,
}

/// Table number meaning "every table" in modify/delete commands.
pub const ALL_TABLES: u8 = 255;

/// Parses one flow in `add-flows` syntax. Errors are on line 1.
pub fn parse_flow(line: &str, ctx: &ParseContext) -> Result<FlowSpec, FlowParseError> {
    parse_flow_mod(line, ctx, FlowModKind::Add)
}

/// Parses one `add`/`mod`/`del` flow argument.
pub fn parse_flow_mod(
    text: &str,
    ctx: &ParseContext,
    kind: FlowModKind,
) -> Result<FlowSpec, FlowParseError> {
    Parser::new(ctx, text, kind)
        .flow()
        .map_err(|e| e.locate(text, 1))
}

/// Parses a bare match (`ofproto/trace`-style: fields only, no flow fields, no actions).
pub fn parse_match(text: &str, ctx: &ParseContext) -> Result<Match, FlowParseError> {
    let p = Parser::new(ctx, text, FlowModKind::Delete);
    let mut st = MatchState::default();
    p.match_items(Tok { s: text, pos: 0 }, &mut st, None)
        .map_err(|e| e.locate(text, 1))?;
    p.finish_match(&mut st).map_err(|e| e.locate(text, 1))?;
    Ok(st.m)
}

/// Parses a whole flow file: one flow per line, blank lines and `#` comments skipped. Every bad
/// line is reported, not just the first.
pub fn parse_flows(text: &str, ctx: &ParseContext) -> Result<Vec<FlowSpec>, Vec<FlowParseError>> {
    // One flow per line at most: sizing up front avoids re-copying a large vector as it grows.
    let mut flows = Vec::with_capacity(text.bytes().filter(|b| *b == b'\n').count() + 1);
    let mut errors = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        let t = line.trim_start();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        match Parser::new(ctx, line, FlowModKind::Add).flow() {
            Ok(f) => flows.push(f),
            Err(e) => errors.push(e.locate(line, i + 1)),
        }
    }
    if errors.is_empty() {
        Ok(flows)
    } else {
        Err(errors)
    }
}

// ---------------------------------------------------------------------------------------------
// Errors with byte positions.

struct PErr {
    pos: usize,
    msg: String,
}

impl PErr {
    fn locate(self, line: &str, lineno: usize) -> FlowParseError {
        let pos = self.pos.min(line.len());
        // Column in characters; a position inside a multi-byte character counts the character.
        let col = line.char_indices().take_while(|(i, _)| *i < pos).count() + 1;
        FlowParseError {
            line: lineno,
            col,
            message: self.msg,
        }
    }
}

type PResult<T> = Result<T, PErr>;

fn err<T>(pos: usize, msg: impl Into<String>) -> PResult<T> {
    Err(PErr {
        pos,
        msg: msg.into(),
    })
}

// ---------------------------------------------------------------------------------------------
// A slice of the line that remembers where it starts.

#[derive(Clone, Copy, Debug)]
struct Tok<'a> {
    s: &'a str,
    pos: usize,
}

impl<'a> Tok<'a> {
    fn trim(self) -> Tok<'a> {
        let start = self.s.len() - self.s.trim_start().len();
        Tok {
            s: self.s[start..].trim_end(),
            pos: self.pos + start,
        }
    }

    fn at(self, from: usize) -> Tok<'a> {
        Tok {
            s: &self.s[from..],
            pos: self.pos + from,
        }
    }

    fn range(self, from: usize, to: usize) -> Tok<'a> {
        Tok {
            s: &self.s[from..to],
            pos: self.pos + from,
        }
    }

    fn is_empty(self) -> bool {
        self.s.is_empty()
    }

    /// Splits at the first `sep` (a byte) outside parentheses, brackets and quotes.
    fn split_once_top(self, sep: u8) -> Option<(Tok<'a>, Tok<'a>)> {
        // Most values have no separator at all: a plain byte search settles those.
        if !self.s.as_bytes().contains(&sep) {
            return None;
        }
        let i = find_top(self.s, 0, |b| b == sep)?;
        Some((self.range(0, i), self.at(i + 1)))
    }

    /// Splits at the first occurrence of `pat` outside parentheses and quotes.
    fn split_str(self, pat: &str) -> Option<(Tok<'a>, Tok<'a>)> {
        let b = self.s.as_bytes();
        let p = pat.as_bytes();
        let (mut depth, mut quoted) = (0i32, false);
        let mut i = 0;
        while i < b.len() {
            match b[i] {
                b'"' => quoted = !quoted,
                b'(' | b'[' if !quoted => depth += 1,
                b')' | b']' if !quoted => depth -= 1,
                _ if !quoted && depth == 0 && b[i..].starts_with(p) => {
                    return Some((self.range(0, i), self.at(i + p.len())));
                }
                _ => {}
            }
            i += 1;
        }
        None
    }

    /// Iterates over the comma-separated items at nesting depth 0.
    fn items(self) -> TopItems<'a> {
        TopItems {
            t: self,
            off: 0,
            done: false,
        }
    }
}

/// Index of the first byte at nesting depth 0 (outside quotes) satisfying `pred`.
fn find_top(s: &str, from: usize, pred: impl Fn(u8) -> bool) -> Option<usize> {
    let b = s.as_bytes();
    let (mut depth, mut quoted) = (0i32, false);
    for (i, &c) in b.iter().enumerate().skip(from) {
        if c == b'"' {
            quoted = !quoted;
            continue;
        }
        if quoted {
            continue;
        }
        if depth == 0 && pred(c) {
            return Some(i);
        }
        match c {
            b'(' | b'[' => depth += 1,
            b')' | b']' => depth -= 1,
            _ => {}
        }
    }
    None
}

struct TopItems<'a> {
    t: Tok<'a>,
    off: usize,
    done: bool,
}

impl<'a> Iterator for TopItems<'a> {
    type Item = Tok<'a>;
    fn next(&mut self) -> Option<Tok<'a>> {
        if self.done {
            return None;
        }
        match find_top(self.t.s, self.off, |b| b == b',') {
            Some(i) => {
                let item = self.t.range(self.off, i);
                self.off = i + 1;
                Some(item)
            }
            None => {
                self.done = true;
                Some(self.t.at(self.off))
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Scalar values.

/// Parses an unsigned integer: decimal, or hexadecimal with `0x`.
fn parse_uint(s: &str) -> Option<u128> {
    let b = s.as_bytes();
    if b.len() > 2 && b[0] == b'0' && (b[1] == b'x' || b[1] == b'X') {
        let h = &s[2..];
        if h.len() > 32 {
            // Leading zeros are fine; more than 128 significant bits are not.
            let t = h.trim_start_matches('0');
            if t.len() > 32 {
                return None;
            }
            return u128::from_str_radix(if t.is_empty() { "0" } else { t }, 16).ok();
        }
        if !h.bytes().all(|c| c.is_ascii_hexdigit()) {
            return None;
        }
        u128::from_str_radix(h, 16).ok()
    } else if !b.is_empty() && b.iter().all(u8::is_ascii_digit) {
        s.parse().ok()
    } else {
        None
    }
}

fn uint(t: Tok, what: &str, max: u128) -> PResult<u128> {
    match parse_uint(t.s) {
        Some(v) if v <= max => Ok(v),
        Some(v) => err(
            t.pos,
            format!("{what} value {v} is out of range (maximum {max})"),
        ),
        None if t.s.is_empty() => err(t.pos, format!("{what} needs a value")),
        None => err(t.pos, format!("invalid number `{}` for {what}", t.s)),
    }
}

fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut out = [0u8; 6];
    let mut n = 0;
    for part in s.split(':') {
        if n == 6 || part.is_empty() || part.len() > 2 {
            return None;
        }
        out[n] = u8::from_str_radix(part, 16).ok()?;
        n += 1;
    }
    (n == 6).then_some(out)
}

fn mac_u128(m: [u8; 6]) -> u128 {
    m.iter().fold(0u128, |a, b| (a << 8) | *b as u128)
}

fn mac(t: Tok) -> PResult<[u8; 6]> {
    parse_mac(t.s).map_or_else(
        || err(t.pos, format!("invalid Ethernet address `{}`", t.s)),
        Ok,
    )
}

fn ipv4(t: Tok) -> PResult<Ipv4Addr> {
    t.s.parse().map_or_else(
        |_| err(t.pos, format!("invalid IPv4 address `{}`", t.s)),
        Ok,
    )
}

fn ipv6(t: Tok) -> PResult<Ipv6Addr> {
    t.s.parse().map_or_else(
        |_| err(t.pos, format!("invalid IPv6 address `{}`", t.s)),
        Ok,
    )
}

fn prefix_mask(bits: u32, width: u32) -> u128 {
    let full = if width >= 128 {
        u128::MAX
    } else {
        (1u128 << width) - 1
    };
    if bits == 0 {
        0
    } else {
        (full << (width - bits)) & full
    }
}

fn full_mask(width: u32) -> u128 {
    if width >= 128 {
        u128::MAX
    } else {
        (1u128 << width) - 1
    }
}

// ---------------------------------------------------------------------------------------------
// The parser.

struct Parser<'c, 'l> {
    ctx: &'c ParseContext,
    line: &'l str,
    kind: FlowModKind,
    /// The flow's match, known once the match part is parsed: actions that read or write a
    /// field need the field's prerequisites in it.
    matched: std::cell::Cell<Option<Match>>,
}

/// A field the match sets, remembered for duplicate and prerequisite checks.
#[derive(Clone, Copy)]
struct Seen {
    field: Field,
    pos: usize,
}

/// The fields a match names, on the stack: one flow's parse should not allocate for this.
#[derive(Clone, Copy)]
struct SeenList {
    items: [Seen; 128],
    len: usize,
}

impl Default for SeenList {
    fn default() -> Self {
        SeenList {
            items: [Seen {
                field: Field::InPort,
                pos: 0,
            }; 128],
            len: 0,
        }
    }
}

impl SeenList {
    fn as_slice(&self) -> &[Seen] {
        &self.items[..self.len]
    }
    fn iter(&self) -> std::slice::Iter<'_, Seen> {
        self.as_slice().iter()
    }
    /// Records a field; false when the list is full (more fields than exist).
    fn push(&mut self, s: Seen) -> bool {
        match self.items.get_mut(self.len) {
            Some(slot) => {
                *slot = s;
                self.len += 1;
                true
            }
            None => false,
        }
    }
}

#[derive(Default)]
struct MatchState {
    m: Match,
    seen: SeenList,
    /// Position of the protocol shorthand or `dl_type`, for conflict messages.
    dl_type_pos: Option<usize>,
    nw_proto_pos: Option<usize>,
}

impl MatchState {
    fn put(&mut self, l: FieldLoc, value: u128, mask: u128, region: u128) {
        self.m.value.set_masked(l, value & mask, region);
        self.m.mask.set_masked(l, mask, region);
    }
}

impl<'c, 'l> Parser<'c, 'l> {
    fn new(ctx: &'c ParseContext, line: &'l str, kind: FlowModKind) -> Self {
        Parser {
            ctx,
            line,
            kind,
            matched: std::cell::Cell::new(None),
        }
    }

    fn flow(&self) -> PResult<FlowSpec> {
        let whole = Tok {
            s: self.line,
            pos: 0,
        };
        let mut spec = FlowSpec::default();
        if self.kind != FlowModKind::Add {
            spec.table = ALL_TABLES;
        }
        let mut st = MatchState::default();
        let actions = self.match_items(whole, &mut st, Some(&mut spec))?;
        self.finish_match(&mut st)?;
        spec.matches = st.m;
        self.matched.set(Some(st.m));
        match (self.kind, actions) {
            (FlowModKind::Delete, Some((kw, _))) => {
                return err(kw.pos, "del-flows takes no actions");
            }
            (FlowModKind::Delete, None) => {}
            (_, None) => {
                return err(
                    self.line.trim_end().len(),
                    "missing `actions=`: every flow needs actions (use `actions=drop`)",
                );
            }
            (_, Some((_, acts))) => {
                spec.actions = self.actions(acts, ActCtx::Top)?;
            }
        }
        Ok(spec)
    }

    /// Reads `key[=value]` items separated by commas or blanks until `actions=`. Returns the
    /// `actions` keyword and the text after `actions=`.
    fn match_items<'a>(
        &self,
        t: Tok<'a>,
        st: &mut MatchState,
        mut spec: Option<&mut FlowSpec>,
    ) -> PResult<Option<(Tok<'a>, Tok<'a>)>> {
        let b = t.s.as_bytes();
        let mut i = 0;
        let is_sep = |c: u8| c == b',' || c.is_ascii_whitespace();
        let mut flow_fields_seen = 0u32;
        loop {
            while i < b.len() && is_sep(b[i]) {
                i += 1;
            }
            if i >= b.len() {
                return Ok(None);
            }
            let key_start = i;
            while i < b.len() && !is_sep(b[i]) && b[i] != b'=' && b[i] != b':' {
                i += 1;
            }
            let key = t.range(key_start, i);
            let value = if i < b.len() && (b[i] == b'=' || b[i] == b':') {
                if b[i] == b':' && key.s != "actions" {
                    return err(t.pos + i, format!("expected `=` after `{}`", key.s));
                }
                i += 1;
                if key.s == "actions" {
                    return Ok(Some((key, t.at(i))));
                }
                let vstart = i;
                let end = find_top(t.s, vstart, is_sep).unwrap_or(b.len());
                i = end;
                Some(t.range(vstart, end))
            } else {
                None
            };
            if key.s.is_empty() {
                return err(key.pos, "expected a field name");
            }
            if key.s == "actions" {
                return err(key.pos, "expected `=` after `actions`");
            }
            self.match_item(key, value, st, spec.as_deref_mut(), &mut flow_fields_seen)?;
        }
    }

    fn match_item<'a>(
        &self,
        key: Tok<'a>,
        value: Option<Tok<'a>>,
        st: &mut MatchState,
        spec: Option<&mut FlowSpec>,
        flow_seen: &mut u32,
    ) -> PResult<()> {
        // Protocol shorthands.
        let short = match key.s {
            "eth" => Some((None, None)),
            "ip" => Some((Some(ETH_TYPE_IP), None)),
            "ipv6" => Some((Some(ETH_TYPE_IPV6), None)),
            "arp" => Some((Some(ETH_TYPE_ARP), None)),
            "rarp" => Some((Some(0x8035), None)),
            "icmp" => Some((Some(ETH_TYPE_IP), Some(IPPROTO_ICMP))),
            "icmp6" => Some((Some(ETH_TYPE_IPV6), Some(IPPROTO_ICMPV6))),
            "tcp" => Some((Some(ETH_TYPE_IP), Some(IPPROTO_TCP))),
            "udp" => Some((Some(ETH_TYPE_IP), Some(IPPROTO_UDP))),
            "sctp" => Some((Some(ETH_TYPE_IP), Some(IPPROTO_SCTP))),
            "tcp6" => Some((Some(ETH_TYPE_IPV6), Some(IPPROTO_TCP))),
            "udp6" => Some((Some(ETH_TYPE_IPV6), Some(IPPROTO_UDP))),
            "sctp6" => Some((Some(ETH_TYPE_IPV6), Some(IPPROTO_SCTP))),
            _ => None,
        };
        if let Some((dl, proto)) = short {
            if let Some(v) = value {
                return err(v.pos, format!("`{}` takes no value", key.s));
            }
            if let Some(dl) = dl {
                self.set_dl_type(st, dl, key)?;
            }
            if let Some(p) = proto {
                self.set_nw_proto(st, p, key)?;
            }
            return Ok(());
        }

        // Flow fields (not part of the match).
        if let Some(spec) = spec {
            let flag = |f: &mut bool| -> PResult<()> {
                if let Some(v) = value {
                    return err(v.pos, format!("`{}` takes no value", key.s));
                }
                *f = true;
                Ok(())
            };
            const FLOW_FIELDS: [&str; 12] = [
                "table",
                "priority",
                "cookie",
                "idle_timeout",
                "hard_timeout",
                "importance",
                "out_port",
                "send_flow_rem",
                "check_overlap",
                "reset_counts",
                "no_packet_counts",
                "no_byte_counts",
            ];
            if let Some(i) = FLOW_FIELDS.iter().position(|f| *f == key.s) {
                if *flow_seen & (1 << i) != 0 {
                    return err(key.pos, format!("`{}` given twice", key.s));
                }
                *flow_seen |= 1 << i;
            }
            let need = |v: Option<Tok<'a>>| {
                v.map_or_else(
                    || {
                        err(
                            key.end(),
                            format!("`{}` needs a value (`{}=...`)", key.s, key.s),
                        )
                    },
                    Ok,
                )
            };
            match key.s {
                "table" => {
                    let v = need(value)?;
                    let max = if self.kind == FlowModKind::Add {
                        254
                    } else {
                        255
                    };
                    spec.table = uint(v, "table", max)? as u8;
                    return Ok(());
                }
                "priority" => {
                    spec.priority = uint(need(value)?, "priority", 65535)? as u16;
                    return Ok(());
                }
                "cookie" => {
                    let v = need(value)?;
                    match v.split_once_top(b'/') {
                        Some((a, m)) => {
                            if self.kind == FlowModKind::Add {
                                return err(m.pos - 1, "a cookie mask is only allowed when modifying or deleting flows");
                            }
                            spec.cookie = uint(a, "cookie", u64::MAX as u128)? as u64;
                            spec.cookie_mask = uint(m, "cookie mask", u64::MAX as u128)? as u64;
                        }
                        None => spec.cookie = uint(v, "cookie", u64::MAX as u128)? as u64,
                    }
                    return Ok(());
                }
                "idle_timeout" => {
                    spec.idle_timeout = uint(need(value)?, "idle_timeout", 65535)? as u16;
                    return Ok(());
                }
                "hard_timeout" => {
                    spec.hard_timeout = uint(need(value)?, "hard_timeout", 65535)? as u16;
                    return Ok(());
                }
                "importance" => {
                    spec.importance = uint(need(value)?, "importance", 65535)? as u16;
                    return Ok(());
                }
                "out_port" => {
                    if self.kind == FlowModKind::Add {
                        return err(
                            key.pos,
                            "`out_port` is only allowed when modifying or deleting flows",
                        );
                    }
                    spec.out_port = Some(self.port(need(value)?)?);
                    return Ok(());
                }
                "send_flow_rem" => return flag(&mut spec.flags.send_flow_rem),
                "check_overlap" => return flag(&mut spec.flags.check_overlap),
                "reset_counts" => return flag(&mut spec.flags.reset_counts),
                "no_packet_counts" => return flag(&mut spec.flags.no_packet_counts),
                "no_byte_counts" => return flag(&mut spec.flags.no_byte_counts),
                // Statistics printed by dump-flows: accepted so a dump loads as it is.
                "duration" | "n_packets" | "n_bytes" | "idle_age" | "hard_age" => {
                    let v = need(value)?;
                    let digits = if key.s == "duration" {
                        v.s.strip_suffix('s').unwrap_or(v.s)
                    } else {
                        v.s
                    };
                    let ok = !digits.is_empty()
                        && digits.bytes().all(|c| c.is_ascii_digit() || c == b'.');
                    if !ok {
                        return err(v.pos, format!("invalid `{}` value `{}`", key.s, v.s));
                    }
                    return Ok(());
                }
                _ => {}
            }
        }

        let Some(fname) = names::lookup(key.s) else {
            return err(key.pos, format!("unknown field `{}`", key.s));
        };
        let Some(value) = value else {
            return err(
                key.end(),
                format!("`{}` needs a value (`{}=...`)", key.s, key.s),
            );
        };
        self.match_field(fname, key, value, st)
    }

    fn set_dl_type(&self, st: &mut MatchState, dl: u16, at: Tok) -> PResult<()> {
        if st.dl_type_pos.is_some() && st.m.value.dl_type() != dl {
            return err(
                at.pos,
                format!(
                    "`{}` conflicts with the Ethernet type already matched (0x{:04x})",
                    at.s,
                    st.m.value.dl_type()
                ),
            );
        }
        st.dl_type_pos = Some(at.pos);
        st.put(loc::DL_TYPE, dl as u128, 0xffff, 0xffff);
        Ok(())
    }

    fn set_nw_proto(&self, st: &mut MatchState, p: u8, at: Tok) -> PResult<()> {
        if st.nw_proto_pos.is_some() && st.m.value.nw_proto() != p {
            return err(
                at.pos,
                format!(
                    "`{}` conflicts with the IP protocol already matched ({})",
                    at.s,
                    st.m.value.nw_proto()
                ),
            );
        }
        st.nw_proto_pos = Some(at.pos);
        st.put(loc::NW_PROTO, p as u128, 0xff, 0xff);
        Ok(())
    }

    /// `FIELD=VALUE[/MASK]` in a match.
    fn match_field(&self, fname: FieldName, key: Tok, v: Tok, st: &mut MatchState) -> PResult<()> {
        let f = fname.field;
        if let Field::TunMetadata(i) = f {
            if i >= TUN_METADATA_MAPPED {
                return err(key.pos, tun_meta_msg(key.s));
            }
        }
        if st.seen.iter().any(|s| s.field == f) {
            return err(
                key.pos,
                format!("field `{}` is matched more than once", key.s),
            );
        }
        if !st.seen.push(Seen {
            field: f,
            pos: key.pos,
        }) {
            return err(key.pos, "too many fields in one match");
        }
        let info = f.info();
        if v.is_empty() {
            return err(v.pos, format!("`{}` needs a value", key.s));
        }
        match f {
            Field::DlType => {
                let d = uint(v, key.s, 0xffff)? as u16;
                return self.set_dl_type(st, d, key);
            }
            Field::NwProto => {
                let p = uint(v, key.s, 0xff)? as u8;
                return self.set_nw_proto(st, p, key);
            }
            Field::InPort => {
                let p = self.port(v)?;
                st.put(loc::IN_PORT, p as u128, 0xffff_ffff, 0xffff_ffff);
                return Ok(());
            }
            Field::DlVlan => {
                let n = uint(v, key.s, 0xffff)? as u16;
                if n == 0xffff {
                    // OpenFlow 1.0's "no VLAN tag".
                    st.put(loc::VLAN_TCI, 0, 0xffff, 0xffff);
                } else if n > 0x0fff {
                    return err(
                        v.pos,
                        format!("dl_vlan {n} is out of range (0-4095, or 0xffff for no tag)"),
                    );
                } else {
                    st.put(loc::VLAN_TCI, (VLAN_CFI | n) as u128, 0x1fff, 0x1fff);
                }
                return Ok(());
            }
            Field::DlVlanPcp => {
                let n = uint(v, key.s, 7)? as u16;
                st.put(
                    loc::VLAN_TCI,
                    (VLAN_CFI | (n << 13)) as u128,
                    0xf000,
                    0xf000,
                );
                return Ok(());
            }
            Field::NwTos => {
                let n = uint(v, key.s, 255)?;
                if n & 3 != 0 {
                    return err(v.pos, format!("nw_tos {n} has ECN bits set (the value must be a multiple of 4; use nw_ecn for ECN)"));
                }
                st.put(loc::NW_TOS, n, 0xfc, 0xfc);
                return Ok(());
            }
            Field::IpDscp => {
                let n = uint(v, key.s, 63)?;
                st.put(loc::NW_TOS, n << 2, 0xfc, 0xfc);
                return Ok(());
            }
            Field::NwEcn => {
                let n = uint(v, key.s, 3)?;
                st.put(loc::NW_TOS, n, 0x3, 0x3);
                return Ok(());
            }
            Field::IpFrag => {
                let (val, mask) = match v.s {
                    "no" => (0, FRAG_ANY),
                    "yes" => (FRAG_ANY, FRAG_ANY),
                    "first" => (FRAG_ANY, FRAG_ANY | FRAG_LATER),
                    "later" => (FRAG_ANY | FRAG_LATER, FRAG_ANY | FRAG_LATER),
                    "not_later" => (0, FRAG_LATER),
                    _ => {
                        let (val, mask) = self.value_mask(v, key.s, 8, true)?;
                        if (val | mask) & !3 != 0 {
                            return err(v.pos, format!("invalid ip_frag `{}` (no, yes, first, later, not_later, or value/mask of bits 0x3)", v.s));
                        }
                        (val as u8, mask as u8)
                    }
                };
                st.put(loc::NW_FRAG, val as u128, mask as u128, 0xff);
                return Ok(());
            }
            _ => {}
        }
        let l = f.loc().expect("mapped field has storage");
        let (val, mask) = match info.format {
            ValueFormat::CtState => self.flags(v, key.s, &CT_STATE_FLAGS, 0xff, 0xffff_ffff)?,
            ValueFormat::TcpFlags => self.flags(v, key.s, &TCP_FLAGS, 0xfff, 0xfff)?,
            _ if f == Field::TunFlags => self.flags(v, key.s, &TUN_FLAGS, 0x1, 0x1)?,
            _ => self.typed_value(f, fname.width as u32, key.s, v, info.maskable)?,
        };
        st.put(l, val, mask, full_mask(l.width()));
        Ok(())
    }

    /// A value in the field's own notation (MAC, IPv4, IPv6 or integer), with an optional mask.
    fn typed_value(
        &self,
        f: Field,
        width: u32,
        name: &str,
        v: Tok,
        maskable: bool,
    ) -> PResult<(u128, u128)> {
        let (a, m) = match v.split_once_top(b'/') {
            Some((a, m)) => (a, Some(m)),
            None => (v, None),
        };
        if let (Some(m), false) = (m, maskable) {
            return err(m.pos - 1, format!("field `{name}` does not support masks"));
        }
        match f.info().format {
            ValueFormat::Mac => {
                let val = mac_u128(mac(a)?);
                let mask = match m {
                    Some(m) => mac_u128(mac(m)?),
                    None => full_mask(48),
                };
                Ok((val, mask))
            }
            ValueFormat::Ipv4 => {
                let val = u32::from(ipv4(a)?) as u128;
                let mask = match m {
                    Some(m) if m.s.contains('.') => u32::from(ipv4(m)?) as u128,
                    Some(m) => prefix_mask(uint(m, "prefix length", 32)? as u32, 32),
                    None => full_mask(32),
                };
                Ok((val, mask))
            }
            ValueFormat::Ipv6 => {
                let val = u128::from(ipv6(a)?);
                let mask = match m {
                    Some(m) if m.s.contains(':') => u128::from(ipv6(m)?),
                    Some(m) => prefix_mask(uint(m, "prefix length", 128)? as u32, 128),
                    None => u128::MAX,
                };
                Ok((val, mask))
            }
            _ => self.value_mask(v, name, width, maskable),
        }
    }

    /// `INT[/INT]` within `width` bits.
    fn value_mask(&self, v: Tok, name: &str, width: u32, maskable: bool) -> PResult<(u128, u128)> {
        let max = full_mask(width);
        match v.split_once_top(b'/') {
            Some((a, m)) => {
                if !maskable {
                    return err(m.pos - 1, format!("field `{name}` does not support masks"));
                }
                Ok((fits(a, name, width)?, fits_mask(m, name, width)?))
            }
            None => Ok((fits(v, name, width)?, max)),
        }
    }

    /// Flag syntax (`+trk-new`, `syn|ack`) or `VALUE[/MASK]`. `known` limits the flag bits,
    /// `full` is the mask a bare value gets.
    fn flags(
        &self,
        v: Tok,
        name: &str,
        names: &[&str],
        known: u128,
        full: u128,
    ) -> PResult<(u128, u128)> {
        let first = v.s.as_bytes()[0];
        if first.is_ascii_digit() {
            let (val, mask) = match v.split_once_top(b'/') {
                Some((a, m)) => (fits(a, name, 32)?, fits_mask(m, name, 32)?),
                None => (fits(v, name, 32)?, full),
            };
            if val & !known != 0 {
                return err(
                    v.pos,
                    format!("`{}`: unknown {name} flag bits 0x{:x}", v.s, val & !known),
                );
            }
            return Ok((val, mask & full));
        }
        let bit_of = |word: &str, pos: usize| -> PResult<u128> {
            if let Some(i) = names.iter().position(|n| *n == word) {
                return Ok(1 << i);
            }
            // `[800]`: a bit with no name, as printed for tcp_flags.
            if let Some(h) = word.strip_prefix('[').and_then(|w| w.strip_suffix(']')) {
                if let Ok(b) = u128::from_str_radix(h, 16) {
                    if b.count_ones() == 1 && b & known != 0 {
                        return Ok(b);
                    }
                }
            }
            err(
                pos,
                format!("unknown {name} flag `{word}` (known: {})", names.join(", ")),
            )
        };
        if first == b'+' || first == b'-' {
            let (mut val, mut mask) = (0u128, 0u128);
            let b = v.s.as_bytes();
            let mut i = 0;
            while i < b.len() {
                let sign = b[i];
                if sign != b'+' && sign != b'-' {
                    return err(
                        v.pos + i,
                        format!("expected `+` or `-` before a {name} flag"),
                    );
                }
                let start = i + 1;
                let mut j = start;
                while j < b.len() && b[j] != b'+' && b[j] != b'-' {
                    j += 1;
                }
                let bit = bit_of(&v.s[start..j], v.pos + start)?;
                if mask & bit != 0 {
                    return err(
                        v.pos + start,
                        format!("{name} flag `{}` given twice", &v.s[start..j]),
                    );
                }
                mask |= bit;
                if sign == b'+' {
                    val |= bit;
                }
                i = j;
            }
            return Ok((val, mask));
        }
        let mut val = 0u128;
        let mut off = 0;
        for word in v.s.split('|') {
            val |= bit_of(word, v.pos + off)?;
            off += word.len() + 1;
        }
        Ok((val, full))
    }

    /// Checks prerequisites once the whole match is known (fields may come before `ip`).
    fn finish_match(&self, st: &mut MatchState) -> PResult<()> {
        let k = st.m.value;
        let dl_known = st.m.mask.dl_type() == 0xffff;
        let proto_known = st.m.mask.nw_proto() == 0xff;
        for s in st.seen.iter() {
            let info = s.field.info();
            let (ok, need) = match s.field {
                Field::NwSrc | Field::NwDst => (
                    field::prereq_met(Prereq::Ipv4OrArp, &k) && dl_known,
                    "`ip` or `arp` (dl_type=0x0800 or 0x0806)",
                ),
                Field::IcmpType | Field::IcmpCode => (
                    (field::prereq_met(Prereq::Icmpv4, &k)
                        || field::prereq_met(Prereq::Icmpv6, &k))
                        && proto_known,
                    "`icmp` or `icmp6`",
                ),
                Field::NwProto => (
                    field::prereq_met(Prereq::Ip, &k) && dl_known,
                    "`ip` or `ipv6`",
                ),
                Field::DlType | Field::InPort => (true, ""),
                f => {
                    let p = info.prereq;
                    let met = field::prereq_met(p, &k)
                        && (p == Prereq::None || p == Prereq::Tracked || dl_known)
                        && (!matches!(
                            p,
                            Prereq::Tcp
                                | Prereq::Udp
                                | Prereq::Sctp
                                | Prereq::Transport
                                | Prereq::Icmpv4
                                | Prereq::Icmpv6
                                | Prereq::Nd
                                | Prereq::NdSolicit
                                | Prereq::NdAdvert
                        ) || proto_known);
                    let nd_type_known = st.m.mask.get(loc::ICMP_TYPE) == 0xff;
                    let met = met
                        && (!matches!(p, Prereq::Nd | Prereq::NdSolicit | Prereq::NdAdvert)
                            || nd_type_known);
                    let _ = f;
                    (met, prereq_text(p))
                }
            };
            if !ok {
                return err(
                    s.pos,
                    format!("`{}` requires {need} in the match", info.name),
                );
            }
        }
        Ok(())
    }

    // --- Ports ----------------------------------------------------------------------------

    /// A port: number, special name or (quoted or bare) port name.
    fn port(&self, t: Tok) -> PResult<u32> {
        let s = t.s;
        if let Some(inner) = s.strip_prefix('"') {
            let Some(name) = inner.strip_suffix('"') else {
                return err(t.pos, "unterminated quoted port name");
            };
            return self
                .ctx
                .ports
                .number(name)
                .map_or_else(|| err(t.pos, format!("unknown port `{name}`")), Ok);
        }
        if let Some(n) = parse_uint(s) {
            if n == 0
                || (n >= ofp_port::MAX as u128 && special_port_name(n as u32).is_none())
                || n > 0xffff
            {
                return err(
                    t.pos,
                    format!("port {s} is not a valid port number (1-65279 or a reserved port)"),
                );
            }
            return Ok(n as u32);
        }
        if let Some(p) = special_port(s) {
            return Ok(p);
        }
        if s.is_empty() {
            return err(t.pos, "expected a port");
        }
        self.ctx
            .ports
            .number(s)
            .map_or_else(|| err(t.pos, format!("unknown port `{s}`")), Ok)
    }

    // --- Subfields ------------------------------------------------------------------------

    /// `NAME`, `NAME[]`, `NAME[..]`, `NAME[BIT]` or `NAME[START..END]`.
    fn subfield(&self, t: Tok) -> PResult<SubField> {
        let t = t.trim();
        let (name, range) = match t.s.find('[') {
            Some(i) => (t.range(0, i), Some(t.at(i))),
            None => (t, None),
        };
        let Some(fname) = names::lookup(name.s) else {
            if name.s.is_empty() {
                return err(name.pos, "expected a field name");
            }
            return err(name.pos, format!("unknown field `{}`", name.s));
        };
        if let Field::TunMetadata(i) = fname.field {
            if i >= TUN_METADATA_MAPPED {
                return err(name.pos, tun_meta_msg(name.s));
            }
        }
        let width = fname.width;
        let Some(r) = range else {
            return Ok(SubField {
                field: fname.field,
                ofs: 0,
                n_bits: width,
            });
        };
        let Some(inner) = r.s.strip_prefix('[').and_then(|x| x.strip_suffix(']')) else {
            return err(
                r.pos,
                format!("expected `]` to close the bit range in `{}`", t.s),
            );
        };
        let inner_tok = Tok {
            s: inner,
            pos: r.pos + 1,
        };
        if inner.is_empty() || inner == ".." {
            return Ok(SubField {
                field: fname.field,
                ofs: 0,
                n_bits: width,
            });
        }
        let (start, end) = match inner_tok.split_str("..") {
            Some((a, b)) => (
                uint(a, "bit offset", 1023)? as u16,
                uint(b, "bit offset", 1023)? as u16,
            ),
            None => {
                let b = uint(inner_tok, "bit offset", 1023)? as u16;
                (b, b)
            }
        };
        if start > end {
            return err(
                inner_tok.pos,
                format!("bit range [{start}..{end}] of `{}` is reversed", name.s),
            );
        }
        if end >= width {
            return err(
                inner_tok.pos,
                format!(
                    "bit range [{start}..{end}] exceeds `{}`, which is {width} bits wide",
                    name.s
                ),
            );
        }
        Ok(SubField {
            field: fname.field,
            ofs: start,
            n_bits: end - start + 1,
        })
    }

    // --- Actions --------------------------------------------------------------------------

    fn actions(&self, t: Tok, actx: ActCtx) -> PResult<Vec<Action>> {
        let t = t.trim();
        let mut out = Vec::new();
        if t.is_empty() {
            if actx == ActCtx::Top {
                return Ok(out);
            }
            return Ok(out);
        }
        let mut drop_at = None;
        let mut conj_only = None::<bool>;
        for item in t.items() {
            let item = item.trim();
            if item.is_empty() {
                return err(item.pos, "empty action (stray comma?)");
            }
            if item.s.eq_ignore_ascii_case("drop") {
                drop_at = Some(item.pos);
                continue;
            }
            let a = self.action(item, actx)?;
            let is_conj = matches!(a, Action::Conjunction { .. });
            match conj_only {
                Some(c) if c != is_conj => {
                    return err(
                        item.pos,
                        "conjunction actions cannot be mixed with other actions",
                    );
                }
                _ => conj_only = Some(is_conj),
            }
            out.push(a);
        }
        if actx == ActCtx::Top {
            check_instruction_order(&out, t)?;
        }
        if let Some(p) = drop_at {
            if !out.is_empty() {
                return err(p, "`drop` must be the only action");
            }
        }
        Ok(out)
    }

    fn action(&self, t: Tok, actx: ActCtx) -> PResult<Action> {
        let b = t.s.as_bytes();
        let mut i = 0;
        while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
            i += 1;
        }
        let name = t.range(0, i);
        let rest = t.at(i);
        // `name:ARG` (blanks after the colon tolerated) or `name(ARGS)`.
        let (colon_arg, paren_arg) = match rest.s.as_bytes().first() {
            None => (None, None),
            Some(b':') => (Some(rest.at(1).trim()), None),
            Some(b'(') => {
                let close = find_top(rest.s, 0, |c| c == b')');
                let _ = close;
                match matching_paren(rest.s) {
                    Some(end) => {
                        let tail = rest.at(end + 1);
                        (None, Some((rest.range(1, end), tail)))
                    }
                    None => return err(rest.pos, format!("unbalanced parentheses in `{}`", t.s)),
                }
            }
            Some(_) => {
                if name.is_empty() && rest.s.starts_with('"') {
                    // A quoted port name on its own: `actions="patch-brAtlas-t"`.
                    return Ok(Action::Output {
                        target: OutputTarget::Port(self.port(t)?),
                        max_len: None,
                    });
                }
                return err(
                    rest.pos,
                    format!(
                        "unexpected `{}` in action `{}`",
                        rest.s.chars().next().unwrap_or(' '),
                        t.s
                    ),
                );
            }
        };
        let mut lbuf = [0u8; 32];
        let lname = names::ascii_case(name.s, &mut lbuf, false).unwrap_or("");
        let need_colon = |what: &str| -> PResult<Tok> {
            match colon_arg {
                Some(a) if !a.is_empty() => Ok(a),
                Some(a) => err(a.pos, format!("`{}` needs a value ({what})", name.s)),
                None => err(
                    rest.pos,
                    format!("`{}` needs an argument: `{}:{what}`", name.s, name.s),
                ),
            }
        };
        let no_args = || -> PResult<()> {
            if colon_arg.is_some() || paren_arg.is_some() {
                return err(rest.pos, format!("`{}` takes no argument", name.s));
            }
            Ok(())
        };
        let paren_only = |tail_ok: bool| -> PResult<(Tok, Tok)> {
            match paren_arg {
                Some((inner, tail)) => {
                    if !tail_ok && !tail.trim().is_empty() {
                        return err(tail.pos, format!("unexpected text after `{}(...)`", name.s));
                    }
                    Ok((inner, tail))
                }
                None => err(
                    rest.pos,
                    format!("`{}` needs parentheses: `{}(...)`", name.s, name.s),
                ),
            }
        };
        if actx == ActCtx::CtExec && !matches!(lname, "set_field" | "load") {
            return err(
                name.pos,
                format!(
                    "ct(exec(...)) only allows set_field or load to ct_mark or ct_label, not `{}`",
                    name.s
                ),
            );
        }
        let out = |target| {
            Ok(Action::Output {
                target,
                max_len: None,
            })
        };
        match lname {
            "output" => {
                if let Some((inner, _)) = paren_arg {
                    paren_only(false)?;
                    return self.output_paren(inner);
                }
                let a = need_colon("PORT")?;
                if a.s.contains('[')
                    || (self.ctx.ports.number(a.s).is_none()
                        && special_port(a.s).is_none()
                        && parse_uint(a.s).is_none()
                        && names::lookup(a.s).is_some())
                {
                    let sf = self.subfield(a)?;
                    return out(OutputTarget::Field(sf));
                }
                out(self.output_target(a)?)
            }
            "in_port" => {
                no_args()?;
                out(OutputTarget::InPort)
            }
            "normal" => {
                no_args()?;
                out(OutputTarget::Normal)
            }
            "flood" => {
                no_args()?;
                out(OutputTarget::Flood)
            }
            "all" => {
                no_args()?;
                out(OutputTarget::All)
            }
            "local" => {
                no_args()?;
                out(OutputTarget::Local)
            }
            "controller" => self.controller(name, colon_arg, paren_arg),
            "resubmit" => self.resubmit(name, colon_arg, paren_arg),
            "goto_table" => Ok(Action::GotoTable(
                uint(need_colon("TABLE")?, "goto_table", 254)? as u8,
            )),
            "load" => {
                let a = need_colon("VALUE->FIELD[range]")?;
                let Some((v, dst)) = a.split_str("->") else {
                    return err(a.pos, format!("`load:{}` needs `->FIELD`", a.s));
                };
                let dst = self.subfield(dst)?;
                self.check_writable(dst.field, dst_tok(a, &dst), actx)?;
                self.check_action_prereq(dst.field, dst_tok(a, &dst))?;
                let v = v.trim();
                let value = match parse_uint(v.s) {
                    Some(x) => x,
                    None => return err(v.pos, format!("invalid load value `{}`", v.s)),
                };
                if dst.n_bits < 128 && value >> dst.n_bits != 0 {
                    return err(
                        v.pos,
                        format!(
                            "value {} does not fit into the {} bits of the destination",
                            v.s, dst.n_bits
                        ),
                    );
                }
                Ok(Action::Load { value, dst })
            }
            "set_field" => {
                let a = need_colon("VALUE[/MASK]->FIELD")?;
                let Some((v, dst)) = a.split_str("->") else {
                    return err(a.pos, format!("`set_field:{}` needs `->FIELD`", a.s));
                };
                let dst = dst.trim();
                if dst.s.contains('[') {
                    return err(
                        dst.pos,
                        format!(
                            "set_field takes a whole field, not a bit range (`{}`); use load",
                            dst.s
                        ),
                    );
                }
                let Some(fname) = names::lookup(dst.s) else {
                    return err(dst.pos, format!("unknown field `{}`", dst.s));
                };
                let f = fname.field;
                if let Field::TunMetadata(i) = f {
                    if i >= TUN_METADATA_MAPPED {
                        return err(dst.pos, tun_meta_msg(dst.s));
                    }
                }
                self.check_writable(f, dst, actx)?;
                self.check_action_prereq(f, dst)?;
                let v = v.trim();
                let (value, mask) = self.set_field_value(f, fname.width as u32, dst.s, v)?;
                Ok(Action::SetField {
                    field: f,
                    value,
                    mask,
                })
            }
            "move" => {
                let a = need_colon("SRC[range]->DST[range]")?;
                let Some((src, dst)) = a.split_str("->") else {
                    return err(a.pos, format!("`move:{}` needs `->DST`", a.s));
                };
                let s = self.subfield(src)?;
                let d = self.subfield(dst)?;
                self.check_writable(d.field, dst.trim(), actx)?;
                self.check_action_prereq(s.field, src.trim())?;
                self.check_action_prereq(d.field, dst.trim())?;
                if s.n_bits != d.n_bits {
                    return err(
                        a.pos,
                        format!(
                            "move source is {} bits wide but the destination is {} bits",
                            s.n_bits, d.n_bits
                        ),
                    );
                }
                Ok(Action::Move { src: s, dst: d })
            }
            "mod_vlan_vid" => Ok(Action::SetVlanVid(
                uint(need_colon("VID")?, "mod_vlan_vid", 4095)? as u16,
            )),
            "mod_vlan_pcp" => Ok(Action::SetVlanPcp(
                uint(need_colon("PCP")?, "mod_vlan_pcp", 7)? as u8,
            )),
            "strip_vlan" => {
                no_args()?;
                Ok(Action::StripVlan {
                    pop_vlan_spelling: false,
                })
            }
            "pop_vlan" => {
                no_args()?;
                Ok(Action::StripVlan {
                    pop_vlan_spelling: true,
                })
            }
            "push_vlan" => {
                let a = need_colon("ETHERTYPE")?;
                let e = uint(a, "push_vlan", 0xffff)? as u16;
                if e != field::ETH_TYPE_VLAN && e != field::ETH_TYPE_VLAN_8021AD {
                    return err(
                        a.pos,
                        format!("push_vlan ethertype must be 0x8100 or 0x88a8, not {}", a.s),
                    );
                }
                Ok(Action::PushVlan(e))
            }
            "mod_dl_src" => Ok(Action::SetDlSrc(mac(need_colon("MAC")?)?)),
            "mod_dl_dst" => Ok(Action::SetDlDst(mac(need_colon("MAC")?)?)),
            "mod_nw_src" => Ok(Action::SetNwSrc(ipv4(need_colon("IP")?)?)),
            "mod_nw_dst" => Ok(Action::SetNwDst(ipv4(need_colon("IP")?)?)),
            "mod_nw_tos" => {
                let a = need_colon("TOS")?;
                let v = uint(a, "mod_nw_tos", 255)?;
                if v & 3 != 0 {
                    return err(
                        a.pos,
                        format!("mod_nw_tos {v} has ECN bits set (must be a multiple of 4)"),
                    );
                }
                Ok(Action::SetNwTos(v as u8))
            }
            // Unlike mod_nw_src/tos and mod_tp_*, these two are field writes in OpenFlow 1.0
            // and carry the field's prerequisite, as in Open vSwitch.
            "mod_nw_ecn" => {
                self.check_action_prereq(Field::NwEcn, name)?;
                Ok(Action::SetNwEcn(
                    uint(need_colon("ECN")?, "mod_nw_ecn", 3)? as u8
                ))
            }
            "mod_nw_ttl" => {
                self.check_action_prereq(Field::NwTtl, name)?;
                Ok(Action::SetNwTtl(
                    uint(need_colon("TTL")?, "mod_nw_ttl", 255)? as u8,
                ))
            }
            "mod_tp_src" => Ok(Action::SetTpSrc(
                uint(need_colon("PORT")?, "mod_tp_src", 65535)? as u16,
            )),
            "mod_tp_dst" => Ok(Action::SetTpDst(
                uint(need_colon("PORT")?, "mod_tp_dst", 65535)? as u16,
            )),
            "dec_ttl" => {
                let mut ids = Vec::new();
                if let Some((inner, _)) = paren_arg {
                    paren_only(false)?;
                    for id in inner.items() {
                        ids.push(uint(id.trim(), "dec_ttl controller id", 65535)? as u16);
                    }
                } else if colon_arg.is_some() {
                    return err(
                        rest.pos,
                        "dec_ttl takes controller ids in parentheses: dec_ttl(ID,...)",
                    );
                }
                Ok(Action::DecTtl {
                    controller_ids: ids,
                })
            }
            "set_tunnel" => Ok(Action::SetTunnel {
                value: uint(need_colon("ID")?, "set_tunnel", u64::MAX as u128)? as u64,
                wide: false,
            }),
            "set_tunnel64" => Ok(Action::SetTunnel {
                value: uint(need_colon("ID")?, "set_tunnel64", u64::MAX as u128)? as u64,
                wide: true,
            }),
            "set_queue" => {
                Ok(Action::SetQueue(
                    uint(need_colon("QUEUE")?, "set_queue", u32::MAX as u128)? as u32,
                ))
            }
            "pop_queue" => {
                no_args()?;
                Ok(Action::PopQueue)
            }
            "exit" => {
                no_args()?;
                Ok(Action::Exit)
            }
            "ct_clear" => {
                no_args()?;
                Ok(Action::CtClear)
            }
            "ct" => {
                if colon_arg.is_some() {
                    return err(
                        rest.pos,
                        "ct takes its arguments in parentheses: ct(commit,zone=...)",
                    );
                }
                let inner = match paren_arg {
                    Some(_) => Some(paren_only(false)?.0),
                    None => None,
                };
                self.ct(name, inner)
            }
            "conjunction" => {
                let (inner, _) = paren_only(false)?;
                let Some((id, kn)) = inner.split_once_top(b',') else {
                    return err(inner.pos, "conjunction needs `(ID,K/N)`");
                };
                let id = uint(id.trim(), "conjunction id", u32::MAX as u128)? as u32;
                let kn = kn.trim();
                let Some((k, n)) = kn.split_once_top(b'/') else {
                    return err(kn.pos, "conjunction needs `K/N` after the id");
                };
                let n_v = uint(n, "conjunction clause count", 64)? as u8;
                if n_v < 2 {
                    return err(n.pos, "a conjunction needs at least 2 clauses");
                }
                let k_v = uint(k, "conjunction clause", 64)? as u8;
                if k_v < 1 || k_v > n_v {
                    return err(
                        k.pos,
                        format!("conjunction clause {k_v} is outside 1..={n_v}"),
                    );
                }
                Ok(Action::Conjunction {
                    id,
                    clause: k_v,
                    n_clauses: n_v,
                })
            }
            "clone" => {
                let (inner, _) = paren_only(false)?;
                Ok(Action::Clone(self.actions(inner, ActCtx::Nested)?))
            }
            "note" => {
                let a = colon_arg.unwrap_or(Tok {
                    s: "",
                    pos: rest.pos,
                });
                let mut bytes = Vec::new();
                let hex: Vec<u8> = a.s.bytes().filter(|c| *c != b'.').collect();
                if !hex.len().is_multiple_of(2) || !hex.iter().all(u8::is_ascii_hexdigit) {
                    return err(
                        a.pos,
                        format!("note takes hex bytes (`note:01.02.ab`), not `{}`", a.s),
                    );
                }
                for pair in hex.chunks(2) {
                    let s = std::str::from_utf8(pair).unwrap_or("00");
                    bytes.push(u8::from_str_radix(s, 16).unwrap_or(0));
                }
                // Pad like the NX note action on the wire (10-byte header, 8-byte multiple), so
                // the note prints the way Open vSwitch prints it.
                let total = (10 + bytes.len()).div_ceil(8) * 8;
                bytes.resize(total - 10, 0);
                Ok(Action::Note(bytes))
            }
            "write_metadata" => {
                let a = need_colon("VALUE[/MASK]")?;
                let (v, m) = match a.split_once_top(b'/') {
                    Some((v, m)) => (
                        uint(v, "write_metadata", u64::MAX as u128)?,
                        uint(m, "write_metadata mask", u64::MAX as u128)?,
                    ),
                    None => (
                        uint(a, "write_metadata", u64::MAX as u128)?,
                        u64::MAX as u128,
                    ),
                };
                Ok(Action::WriteMetadata {
                    value: v as u64 & m as u64,
                    mask: m as u64,
                })
            }
            "check_pkt_larger" => {
                let (inner, tail) = paren_only(true)?;
                let len = uint(inner.trim(), "check_pkt_larger length", 65535)? as u16;
                let tail = tail.trim();
                let Some(dst_t) = tail.s.strip_prefix("->") else {
                    return err(
                        tail.pos,
                        "check_pkt_larger needs `->FIELD[bit]` after the length",
                    );
                };
                let dt = Tok {
                    s: dst_t,
                    pos: tail.pos + 2,
                };
                let dst = self.subfield(dt)?;
                if dst.n_bits != 1 {
                    return err(
                        dt.pos,
                        format!(
                            "check_pkt_larger writes one bit, but `{}` is {} bits",
                            dt.s.trim(),
                            dst.n_bits
                        ),
                    );
                }
                self.check_writable(dst.field, dt.trim(), actx)?;
                Ok(Action::CheckPktLarger { len, dst })
            }
            "learn" => {
                let (inner, _) = paren_only(false)?;
                Ok(Action::Learn(LearnSpec {
                    text: inner.trim().s.to_string(),
                }))
            }
            "drop" => err(name.pos, "`drop` must be the only action"),
            _ => {
                if names::UNSUPPORTED_ACTIONS.contains(&lname) {
                    return err(
                        name.pos,
                        format!("action `{}` is not supported by xvs", name.s),
                    );
                }
                // A bare port number or name.
                if colon_arg.is_none() && paren_arg.is_none() {
                    if parse_uint(t.s).is_some() || self.ctx.ports.number(t.s).is_some() {
                        return out(self.output_target(t)?);
                    }
                    // The same ports are refused as after `output:` (a bare `none` used to
                    // become an output to NONE, printed as `output:NONE`, which does not parse).
                    if special_port(t.s).is_some() {
                        return out(self.output_target(t)?);
                    }
                }
                if name.is_empty() {
                    return err(t.pos, format!("unknown action `{}`", t.s));
                }
                err(name.pos, format!("unknown action `{}`", name.s))
            }
        }
    }

    fn output_target(&self, a: Tok) -> PResult<OutputTarget> {
        let p = self.port(a)?;
        Ok(match p {
            ofp_port::IN_PORT => OutputTarget::InPort,
            ofp_port::NORMAL => OutputTarget::Normal,
            ofp_port::FLOOD => OutputTarget::Flood,
            ofp_port::ALL => OutputTarget::All,
            ofp_port::LOCAL => OutputTarget::Local,
            ofp_port::CONTROLLER => OutputTarget::Controller(ControllerSpec::default()),
            ofp_port::TABLE | ofp_port::NONE => {
                return err(a.pos, format!("cannot output to port `{}`", a.s));
            }
            p => OutputTarget::Port(p),
        })
    }

    /// `output(port=P,max_len=N)`.
    fn output_paren(&self, inner: Tok) -> PResult<Action> {
        let mut port = None;
        let mut max_len = None;
        for kv in inner.items() {
            let kv = kv.trim();
            let Some((k, v)) = kv.split_once_top(b'=') else {
                return err(
                    kv.pos,
                    format!(
                        "expected `port=` or `max_len=` in output(...), found `{}`",
                        kv.s
                    ),
                );
            };
            match k.s.trim() {
                "port" => {
                    let v = v.trim();
                    port = Some(if v.s.contains('[') {
                        OutputTarget::Field(self.subfield(v)?)
                    } else {
                        self.output_target(v)?
                    });
                }
                "max_len" => max_len = Some(uint(v.trim(), "max_len", 65535)? as u16),
                other => return err(k.pos, format!("unknown output(...) argument `{other}`")),
            }
        }
        let Some(target) = port else {
            return err(inner.pos, "output(...) needs `port=`");
        };
        Ok(Action::Output { target, max_len })
    }

    fn controller(
        &self,
        name: Tok,
        colon: Option<Tok>,
        paren: Option<(Tok, Tok)>,
    ) -> PResult<Action> {
        let mut spec = ControllerSpec::default();
        if let Some(c) = colon {
            let v = uint(c, "controller max_len", 65535)? as u16;
            spec.max_len = (v != u16::MAX).then_some(v);
        } else if let Some((inner, tail)) = paren {
            if !tail.trim().is_empty() {
                return err(tail.pos, "unexpected text after `controller(...)`");
            }
            for kv in inner.items() {
                let kv = kv.trim();
                if kv.is_empty() {
                    continue;
                }
                let (k, v) = match kv.split_once_top(b'=') {
                    Some((k, v)) => (k.trim(), Some(v.trim())),
                    None => (kv, None),
                };
                let val = |what: &str| {
                    v.map_or_else(
                        || {
                            err(
                                k.pos,
                                format!("controller `{}` needs a value ({what})", k.s),
                            )
                        },
                        Ok,
                    )
                };
                match k.s {
                    "max_len" => {
                        let n = uint(val("bytes")?, "controller max_len", 65535)? as u16;
                        spec.max_len = (n != u16::MAX).then_some(n);
                    }
                    "reason" => {
                        let r = val("action, no_match, invalid_ttl, ...")?;
                        const REASONS: [&str; 6] = [
                            "action",
                            "no_match",
                            "invalid_ttl",
                            "action_set",
                            "group",
                            "packet_out",
                        ];
                        if !REASONS.contains(&r.s) {
                            return err(r.pos, format!("unknown controller reason `{}`", r.s));
                        }
                        spec.reason = (r.s != "action").then(|| r.s.to_string());
                    }
                    "id" => {
                        let n = uint(val("number")?, "controller id", 65535)? as u16;
                        spec.controller_id = (n != 0).then_some(n);
                    }
                    "userdata" => {
                        let u = val("hex bytes")?;
                        let mut bytes = Vec::new();
                        for part in u.s.split('.') {
                            if part.len() != 2 {
                                return err(
                                    u.pos,
                                    format!(
                                        "controller userdata is dot-separated hex bytes, not `{}`",
                                        u.s
                                    ),
                                );
                            }
                            match u8::from_str_radix(part, 16) {
                                Ok(b) => bytes.push(b),
                                Err(_) => return err(u.pos, format!("invalid userdata `{}`", u.s)),
                            }
                        }
                        spec.userdata = bytes;
                    }
                    "pause" => {
                        if let Some(v) = v {
                            return err(v.pos, "`pause` takes no value");
                        }
                        spec.pause = true;
                    }
                    "meter_id" => return err(k.pos, "controller meter_id is not supported by xvs"),
                    other => return err(k.pos, format!("unknown controller argument `{other}`")),
                }
            }
        }
        let _ = name;
        Ok(Action::Output {
            target: OutputTarget::Controller(spec),
            max_len: None,
        })
    }

    fn resubmit(
        &self,
        name: Tok,
        colon: Option<Tok>,
        paren: Option<(Tok, Tok)>,
    ) -> PResult<Action> {
        let port_of = |t: Tok| -> PResult<Option<u32>> {
            let t = t.trim();
            if t.is_empty() || t.s.eq_ignore_ascii_case("in_port") {
                return Ok(None);
            }
            let p = self.port(t)?;
            Ok((p != ofp_port::IN_PORT).then_some(p))
        };
        if let Some(c) = colon {
            // As in Open vSwitch, a resubmit must name a port other than in_port or a table.
            let port = port_of(c)?;
            if port.is_none() {
                return err(
                    c.pos,
                    "resubmit needs a port other than in_port, or a table",
                );
            }
            return Ok(Action::Resubmit {
                port,
                table: None,
                ct: false,
            });
        }
        let Some((inner, tail)) = paren else {
            return err(
                name.pos + name.s.len(),
                "resubmit needs `:PORT` or `(PORT,TABLE)`",
            );
        };
        if !tail.trim().is_empty() {
            return err(tail.pos, "unexpected text after `resubmit(...)`");
        }
        let mut it = inner.items();
        let port = port_of(it.next().unwrap_or(inner))?;
        let mut table = None;
        let mut ct = false;
        if let Some(t) = it.next() {
            let t = t.trim();
            if !t.is_empty() && t.s != "255" {
                table = Some(uint(t, "resubmit table", 254)? as u8);
            }
        }
        if let Some(c) = it.next() {
            let c = c.trim();
            if c.s != "ct" {
                return err(
                    c.pos,
                    format!(
                        "expected `ct` as resubmit's third argument, found `{}`",
                        c.s
                    ),
                );
            }
            ct = true;
        }
        if let Some(x) = it.next() {
            return err(x.pos, "resubmit takes at most three arguments");
        }
        if port.is_none() && table.is_none() {
            return err(
                inner.pos,
                "resubmit needs a port other than in_port, or a table",
            );
        }
        Ok(Action::Resubmit { port, table, ct })
    }

    fn ct(&self, name: Tok, inner: Option<Tok>) -> PResult<Action> {
        let mut ct = CtAction {
            commit: false,
            force: false,
            zone: CtZone::Imm(0),
            table: None,
            nat: None,
            exec: Vec::new(),
            alg: None,
        };
        let mut nat_pos = 0;
        let mut exec_pos = 0;
        let mut force_pos = 0;
        if let Some(inner) = inner.filter(|t| !t.trim().is_empty()) {
            for arg in inner.items() {
                let arg = arg.trim();
                if arg.is_empty() {
                    return err(arg.pos, "empty ct argument (stray comma?)");
                }
                let (k, v) = match arg.split_once_top(b'=') {
                    Some((k, v)) => (k.trim(), Some(v.trim())),
                    None => (arg, None),
                };
                let kname = k.s.split('(').next().unwrap_or("");
                match kname {
                    "commit" if v.is_none() && k.s == "commit" => ct.commit = true,
                    "force" if v.is_none() && k.s == "force" => {
                        ct.force = true;
                        force_pos = k.pos;
                    }
                    "zone" => {
                        let Some(v) = v else {
                            return err(
                                k.pos,
                                "ct zone needs a value: zone=N or zone=FIELD[range]",
                            );
                        };
                        if let Some(n) = parse_uint(v.s) {
                            if n > 0xffff {
                                return err(
                                    v.pos,
                                    format!("ct zone {n} is out of range (0-65535)"),
                                );
                            }
                            ct.zone = CtZone::Imm(n as u16);
                        } else {
                            let sf = self.subfield(v)?;
                            if sf.n_bits != 16 {
                                return err(
                                    v.pos,
                                    format!(
                                        "ct zone field must be 16 bits wide, `{}` is {}",
                                        v.s, sf.n_bits
                                    ),
                                );
                            }
                            ct.zone = CtZone::Field(sf);
                        }
                    }
                    "table" => {
                        let Some(v) = v else {
                            return err(k.pos, "ct table needs a value: table=N");
                        };
                        ct.table = Some(uint(v, "ct table", 254)? as u8);
                    }
                    "alg" => {
                        let Some(v) = v else {
                            return err(k.pos, "ct alg needs a value: alg=ftp or alg=tftp");
                        };
                        if v.s != "ftp" && v.s != "tftp" {
                            return err(v.pos, format!("unknown ct alg `{}` (ftp or tftp)", v.s));
                        }
                        ct.alg = Some(v.s.to_string());
                    }
                    "nat" => {
                        if v.is_some() {
                            return err(
                                k.pos,
                                "nat takes its arguments in parentheses: nat(src=ADDR)",
                            );
                        }
                        nat_pos = k.pos;
                        ct.nat = Some(self.nat(arg)?);
                    }
                    "exec" => {
                        exec_pos = k.pos;
                        let body = arg
                            .s
                            .strip_prefix("exec(")
                            .and_then(|s| s.strip_suffix(')'));
                        let Some(body) = body else {
                            return err(
                                arg.pos,
                                "exec needs parentheses: exec(set_field:...->ct_mark)",
                            );
                        };
                        let bt = Tok {
                            s: body,
                            pos: arg.pos + 5,
                        };
                        ct.exec = self.actions(bt, ActCtx::CtExec)?;
                    }
                    _ => return err(k.pos, format!("unknown ct argument `{}`", arg.s)),
                }
            }
        }
        if ct.force && !ct.commit {
            return err(force_pos, "ct(force) requires commit");
        }
        if !ct.exec.is_empty() && !ct.commit {
            return err(exec_pos, "ct(exec(...)) requires commit");
        }
        if let Some(n) = &ct.nat {
            if n.kind.is_some() && !ct.commit {
                return err(
                    nat_pos,
                    "ct(nat(src|dst=...)) requires commit (only bare `nat` works without it)",
                );
            }
        }
        let _ = name;
        Ok(Action::Ct(ct))
    }

    /// `nat`, `nat(src=A[-B][:P[-Q]][,random|hash][,persistent])`.
    fn nat(&self, t: Tok) -> PResult<NatSpec> {
        let mut n = NatSpec::default();
        if t.s == "nat" {
            return Ok(n);
        }
        let Some(body) = t.s.strip_prefix("nat(").and_then(|s| s.strip_suffix(')')) else {
            return err(t.pos, format!("malformed nat `{}`", t.s));
        };
        let bt = Tok {
            s: body,
            pos: t.pos + 4,
        };
        for arg in bt.items() {
            let arg = arg.trim();
            let (k, v) = match arg.split_once_top(b'=') {
                Some((k, v)) => (k.trim(), Some(v.trim())),
                None => (arg, None),
            };
            match k.s {
                "src" | "dst" => {
                    if n.kind.is_some() {
                        return err(k.pos, "nat takes one of src or dst");
                    }
                    n.kind = Some(if k.s == "src" {
                        NatKind::Src
                    } else {
                        NatKind::Dst
                    });
                    if let Some(v) = v {
                        self.nat_range(v, &mut n)?;
                    }
                }
                "random" | "hash" | "persistent" if v.is_none() => match k.s {
                    "random" => n.random = true,
                    "hash" => n.hash = true,
                    _ => n.persistent = true,
                },
                _ => return err(k.pos, format!("unknown nat argument `{}`", arg.s)),
            }
        }
        if n.random && n.hash {
            return err(bt.pos, "nat takes random or hash, not both");
        }
        if n.kind.is_none() && (n.random || n.hash || n.persistent) {
            return err(bt.pos, "nat flags need src= or dst=");
        }
        Ok(n)
    }

    fn nat_range(&self, v: Tok, n: &mut NatSpec) -> PResult<()> {
        // Addresses: `A`, `A-B`, `[A6]`, `[A6]-[B6]`; then an optional `:P` or `:P-Q`.
        let (addrs, ports) = if v.s.starts_with('[') {
            // IPv6 in brackets; the port separator is the colon after the last `]`.
            let close = v.s.rfind(']').ok_or(PErr {
                pos: v.pos,
                msg: "missing `]` in IPv6 nat address".into(),
            })?;
            match v.s[close..].find(':') {
                Some(c) => (v.range(0, close + c), Some(v.at(close + c + 1))),
                None => (v, None),
            }
        } else if v.s.bytes().filter(|c| *c == b':').count() >= 2 {
            (v, None) // bare IPv6 without ports
        } else {
            match v.s.find(':') {
                Some(c) => (v.range(0, c), Some(v.at(c + 1))),
                None => (v, None),
            }
        };
        let addr = |t: Tok| -> PResult<IpAddr> {
            let s =
                t.s.strip_prefix('[')
                    .and_then(|x| x.strip_suffix(']'))
                    .unwrap_or(t.s);
            s.parse::<IpAddr>()
                .map_or_else(|_| err(t.pos, format!("invalid nat address `{}`", t.s)), Ok)
        };
        let (lo, hi) = match split_dash(addrs) {
            Some((a, b)) => (addr(a)?, Some(addr(b)?)),
            None => (addr(addrs)?, None),
        };
        if let Some(h) = hi {
            if lo.is_ipv4() != h.is_ipv4() {
                return err(addrs.pos, "nat address range mixes IPv4 and IPv6");
            }
            let bad = match (lo, h) {
                (IpAddr::V4(a), IpAddr::V4(b)) => a > b,
                (IpAddr::V6(a), IpAddr::V6(b)) => a > b,
                _ => false,
            };
            if bad {
                return err(addrs.pos, "nat address range is reversed");
            }
        }
        n.addr_min = Some(lo);
        n.addr_max = hi;
        if let Some(p) = ports {
            match split_dash(p) {
                Some((a, b)) => {
                    let a_v = uint(a, "nat port", 65535)? as u16;
                    let b_v = uint(b, "nat port", 65535)? as u16;
                    if a_v > b_v {
                        return err(p.pos, "nat port range is reversed");
                    }
                    n.port_min = Some(a_v);
                    n.port_max = Some(b_v);
                }
                None => n.port_min = Some(uint(p, "nat port", 65535)? as u16),
            }
        }
        Ok(())
    }

    /// Reading or writing a field in an action needs the field's prerequisite in the match
    /// (`set_field:...->tcp_dst` needs `tcp`), as in Open vSwitch.
    fn check_action_prereq(&self, f: Field, at: Tok) -> PResult<()> {
        let Some(m) = self.matched.get() else {
            return Ok(());
        };
        let p = match f {
            Field::NwSrc | Field::NwDst => Prereq::Ipv4,
            _ => f.info().prereq,
        };
        if p == Prereq::None || p == Prereq::Tracked {
            return Ok(());
        }
        let mut st = MatchState {
            m,
            ..Default::default()
        };
        st.dl_type_pos = Some(0);
        let _ = st.seen.push(Seen {
            field: f,
            pos: at.pos,
        });
        if self.finish_match(&mut st).is_err() || !field::prereq_met(p, &m.value) {
            return err(
                at.pos,
                format!(
                    "an action on `{}` requires {} in the match",
                    f.info().name,
                    prereq_text(p)
                ),
            );
        }
        Ok(())
    }

    fn check_writable(&self, f: Field, at: Tok, actx: ActCtx) -> PResult<()> {
        let is_ct = matches!(f, Field::CtMark | Field::CtLabel);
        if actx == ActCtx::CtExec {
            if !is_ct {
                return err(
                    at.pos,
                    format!(
                        "ct(exec(...)) may only write ct_mark or ct_label, not `{}`",
                        f.info().name
                    ),
                );
            }
            return Ok(());
        }
        if is_ct {
            return err(
                at.pos,
                format!(
                    "`{}` can only be written inside ct(commit,exec(...))",
                    f.info().name
                ),
            );
        }
        if !f.info().writable {
            return err(at.pos, format!("field `{}` is read-only", f.info().name));
        }
        Ok(())
    }

    fn set_field_value(&self, f: Field, width: u32, name: &str, v: Tok) -> PResult<(u128, u128)> {
        let info = f.info();
        let (val, mask) = match info.format {
            ValueFormat::Port => {
                if v.s.contains('/') {
                    return err(v.pos, "in_port cannot be masked");
                }
                (self.port(v)? as u128, full_mask(width))
            }
            ValueFormat::CtState | ValueFormat::TcpFlags | ValueFormat::Frag => {
                self.value_mask(v, name, width, true)?
            }
            _ => self.typed_value(f, width, name, v, true)?,
        };
        if f == Field::NwTos && val & mask & 3 != 0 {
            return err(
                v.pos,
                format!("nw_tos {} has ECN bits set (must be a multiple of 4)", v.s),
            );
        }
        if mask == 0 {
            return err(v.pos, "set_field with an all-zero mask changes nothing");
        }
        Ok((val & mask, mask))
    }
}

impl Tok<'_> {
    fn end(self) -> usize {
        self.pos + self.s.len()
    }
}

fn dst_tok<'a>(a: Tok<'a>, _d: &SubField) -> Tok<'a> {
    match a.split_str("->") {
        Some((_, d)) => d.trim(),
        None => a,
    }
}

/// Splits `A-B` at the dash between two addresses or ports (IPv6 inside brackets may not
/// contain a dash, so the first top-level dash is the separator).
fn split_dash(t: Tok) -> Option<(Tok, Tok)> {
    let i = find_top(t.s, 0, |c| c == b'-')?;
    Some((t.range(0, i), t.at(i + 1)))
}

fn matching_paren(s: &str) -> Option<usize> {
    let mut depth = 0i32;
    let mut quoted = false;
    for (i, c) in s.bytes().enumerate() {
        match c {
            b'"' => quoted = !quoted,
            b'(' if !quoted => depth += 1,
            b')' if !quoted => {
                depth -= 1;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => {}
        }
    }
    None
}

fn fits_mask(t: Tok, name: &str, width: u32) -> PResult<u128> {
    fits(t, name, width).map_err(|e| PErr {
        pos: e.pos,
        msg: e.msg.replacen(name, &format!("{name} mask"), 1),
    })
}

fn fits(t: Tok, name: &str, width: u32) -> PResult<u128> {
    match parse_uint(t.s) {
        Some(v) if width >= 128 || v >> width == 0 => Ok(v),
        Some(_) => err(
            t.pos,
            format!("value {} does not fit in `{name}` ({width} bits)", t.s),
        ),
        None if t.s.is_empty() => err(t.pos, format!("`{name}` needs a value")),
        None => err(t.pos, format!("invalid number `{}` for `{name}`", t.s)),
    }
}

/// `write_metadata` and `goto_table` are OpenFlow 1.1 instructions, not actions: each may
/// appear once, `goto_table` last and `write_metadata` after every plain action, as Open
/// vSwitch requires so the flow can be expressed in any OpenFlow version.
fn check_instruction_order(acts: &[Action], t: Tok) -> PResult<()> {
    let pos_of = |n: usize| t.items().nth(n).map_or(t.pos, |i| i.trim().pos);
    let mut seen_meta = false;
    let mut seen_goto = false;
    for (i, a) in acts.iter().enumerate() {
        match a {
            Action::GotoTable(_) if seen_goto => return err(pos_of(i), "goto_table given twice"),
            Action::GotoTable(_) => seen_goto = true,
            Action::WriteMetadata { .. } if seen_meta => {
                return err(pos_of(i), "write_metadata given twice")
            }
            Action::WriteMetadata { .. } if seen_goto => {
                return err(pos_of(i), "write_metadata must come before goto_table")
            }
            Action::WriteMetadata { .. } => seen_meta = true,
            _ if seen_goto => return err(pos_of(i), "goto_table must be the last action"),
            _ if seen_meta => {
                return err(
                    pos_of(i),
                    "write_metadata must come after every action except goto_table",
                )
            }
            _ => {}
        }
    }
    Ok(())
}

fn tun_meta_msg(name: &str) -> String {
    format!("`{name}` has no storage: xvs maps tun_metadata0-7, 32 bits each")
}

fn prereq_text(p: Prereq) -> &'static str {
    match p {
        Prereq::None => "nothing",
        Prereq::Ipv4 => "`ip` (dl_type=0x0800)",
        Prereq::Ipv6 => "`ipv6` (dl_type=0x86dd)",
        Prereq::Ip => "`ip` or `ipv6`",
        Prereq::Arp => "`arp` (dl_type=0x0806)",
        Prereq::Ipv4OrArp => "`ip` or `arp`",
        Prereq::Tcp => "`tcp` or `tcp6`",
        Prereq::Udp => "`udp` or `udp6`",
        Prereq::Sctp => "`sctp` or `sctp6`",
        Prereq::Transport => "`tcp`, `udp` or `sctp` (or their IPv6 forms)",
        Prereq::Icmpv4 => "`icmp`",
        Prereq::Icmpv6 => "`icmp6`",
        Prereq::Nd => "`icmp6` with icmp_type=135 or 136",
        Prereq::NdSolicit => "`icmp6` with icmp_type=135",
        Prereq::NdAdvert => "`icmp6` with icmp_type=136",
        Prereq::Tracked => "ct_state=+trk",
    }
}

/// Where an action list sits: the flow's own list, inside `clone(...)`, or inside
/// `ct(exec(...))` (which only allows writes to `ct_mark`/`ct_label`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ActCtx {
    Top,
    Nested,
    CtExec,
}

/// The reserved port names (case-insensitive), with their OpenFlow 1.0 numbers.
pub fn special_port(s: &str) -> Option<u32> {
    const T: [(&str, u32); 8] = [
        ("IN_PORT", ofp_port::IN_PORT),
        ("TABLE", ofp_port::TABLE),
        ("NORMAL", ofp_port::NORMAL),
        ("FLOOD", ofp_port::FLOOD),
        ("ALL", ofp_port::ALL),
        ("CONTROLLER", ofp_port::CONTROLLER),
        ("LOCAL", ofp_port::LOCAL),
        ("NONE", ofp_port::NONE),
    ];
    T.iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(s))
        .map(|(_, p)| *p)
}

/// The reserved name of a port number, if it has one.
pub fn special_port_name(p: u32) -> Option<&'static str> {
    Some(match p {
        ofp_port::IN_PORT => "IN_PORT",
        ofp_port::TABLE => "TABLE",
        ofp_port::NORMAL => "NORMAL",
        ofp_port::FLOOD => "FLOOD",
        ofp_port::ALL => "ALL",
        ofp_port::CONTROLLER => "CONTROLLER",
        ofp_port::LOCAL => "LOCAL",
        ofp_port::NONE => "NONE",
        _ => return None,
    })
}

#[cfg(test)]
#[path = "parse_tests.rs"]
mod tests;

//! TCP connection state: the handshake/teardown state machine and sequence-window checks.
//!
//! This module owns how one TCP segment moves a connection's state and whether it is
//! acceptable. States and their timeouts follow the Linux netfilter model; the window checks
//! follow the classic "in window" rules (a segment must fall inside what the receiver
//! advertised, and its acknowledgement inside what the other side sent). It must not touch
//! frames, tables or clocks.

use crate::packet::{TcpSeg, TCP_ACK, TCP_FIN, TCP_PSH, TCP_RST, TCP_SYN, TCP_URG};

/// Connection-level TCP states (the `state=` of a dump).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum TcpState {
    SynSent = 1,
    SynRecv = 2,
    Established = 3,
    FinWait = 4,
    CloseWait = 5,
    LastAck = 6,
    TimeWait = 7,
    Close = 8,
}

impl TcpState {
    pub fn from_u8(v: u8) -> TcpState {
        match v {
            1 => TcpState::SynSent,
            2 => TcpState::SynRecv,
            3 => TcpState::Established,
            4 => TcpState::FinWait,
            5 => TcpState::CloseWait,
            6 => TcpState::LastAck,
            7 => TcpState::TimeWait,
            _ => TcpState::Close,
        }
    }

    /// The name a conntrack dump prints.
    pub fn name(self) -> &'static str {
        match self {
            TcpState::SynSent => "SYN_SENT",
            TcpState::SynRecv => "SYN_RECV",
            TcpState::Established => "ESTABLISHED",
            TcpState::FinWait => "FIN_WAIT_1",
            TcpState::CloseWait => "CLOSE_WAIT",
            TcpState::LastAck => "LAST_ACK",
            TcpState::TimeWait => "TIME_WAIT",
            TcpState::Close => "CLOSED",
        }
    }
}

/// Per-direction sequence tracking (the sender's view).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Peer {
    /// Highest sequence number sent, plus one (seq + len).
    pub end: u32,
    /// Highest sequence number this side may send (the other side's ack + window).
    pub maxend: u32,
    /// Largest window this side advertised (scaled).
    pub maxwin: u32,
    pub wscale: u8,
    pub flags: u8,
}

pub const P_FIN_SENT: u8 = 0x01;
pub const P_FIN_ACKED: u8 = 0x02;
pub const P_WSCALE: u8 = 0x04;
/// No sequence checks for this side (connection picked up mid-stream).
pub const P_LIBERAL: u8 = 0x08;
/// Lower bound of how far behind an acknowledgement may lag (as in the classic checks).
const MAX_ACK_WINDOW_MIN: u32 = 66_000;

#[inline]
fn before(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) < 0
}
#[inline]
fn after(a: u32, b: u32) -> bool {
    before(b, a)
}

/// Flag combinations no TCP sends.
pub fn invalid_flags(f: u8) -> bool {
    if f & TCP_SYN != 0 {
        if f & (TCP_RST | TCP_FIN) != 0 {
            return true;
        }
    } else if f & (TCP_ACK | TCP_RST) == 0 {
        return true;
    }
    if f & TCP_ACK == 0 && f & (TCP_FIN | TCP_PSH | TCP_URG) != 0 {
        return true;
    }
    false
}

/// What a segment that finds no connection may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NewVerdict {
    /// A SYN: a proper new connection.
    Syn,
    /// A segment picked up mid-stream (ACK without SYN), accepted liberally.
    Pickup,
    Invalid,
}

pub fn classify_new(seg: &TcpSeg, pickup: bool) -> NewVerdict {
    let f = seg.flags;
    if invalid_flags(f) || f & TCP_RST != 0 {
        return NewVerdict::Invalid;
    }
    if f & TCP_SYN != 0 {
        if f & TCP_ACK != 0 {
            NewVerdict::Invalid
        } else {
            NewVerdict::Syn
        }
    } else if pickup {
        NewVerdict::Pickup
    } else {
        NewVerdict::Invalid
    }
}

fn seg_end(seg: &TcpSeg) -> u32 {
    let mut end = seg.seq.wrapping_add(seg.data_len);
    if seg.flags & TCP_SYN != 0 {
        end = end.wrapping_add(1);
    }
    if seg.flags & TCP_FIN != 0 {
        end = end.wrapping_add(1);
    }
    end
}

/// State of a connection created by `seg` (already classified), and its two peers.
pub fn start(seg: &TcpSeg, v: NewVerdict) -> (TcpState, [Peer; 2]) {
    let end = seg_end(seg);
    let mut p = Peer {
        end,
        maxend: end,
        maxwin: (seg.win as u32).max(1),
        ..Peer::default()
    };
    if let Some(ws) = seg.wscale {
        p.wscale = ws;
        p.flags |= P_WSCALE;
    }
    if v == NewVerdict::Pickup {
        p.flags |= P_LIBERAL;
        let q = Peer {
            flags: P_LIBERAL,
            ..Peer::default()
        };
        (TcpState::Established, [p, q])
    } else {
        (TcpState::SynSent, [p, Peer::default()])
    }
}

/// Outcome of a segment on an existing connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Update {
    Valid,
    Invalid,
    /// A SYN reopening a closed connection: replace it with a new one.
    Reopen,
}

/// Checks `seg` (sent by side `dir`: 0 original, 1 reply) against the window and moves the
/// connection state. On `Invalid` nothing is changed.
#[inline]
pub fn update(state: &mut u8, peers: &mut [Peer; 2], dir: usize, seg: &TcpSeg) -> Update {
    match update_established(state, peers, dir, seg) {
        Some(u) => u,
        None => update_any(state, peers, dir, seg),
    }
}

/// [`update_any`] for what nearly every segment is: one without SYN, FIN or RST, with ACK, on
/// an established connection whose sides are both known, checked strictly and with no FIN
/// seen. On those the general rules reduce to the window check and the bounds moving forward,
/// and the state stays. `None` (nothing changed) for every other segment. A property test
/// holds it to [`update_any`] on every segment it accepts.
#[inline(always)]
fn update_established(
    state: &mut u8,
    peers: &mut [Peer; 2],
    dir: usize,
    seg: &TcpSeg,
) -> Option<Update> {
    let f = seg.flags;
    if *state != TcpState::Established as u8
        || f & (TCP_SYN | TCP_FIN | TCP_RST | TCP_ACK) != TCP_ACK
    {
        return None;
    }
    let [a, b] = peers;
    let (s, r) = if dir == 0 { (a, b) } else { (b, a) };
    if s.maxwin == 0 || (s.flags | r.flags) & (P_LIBERAL | P_FIN_SENT) != 0 {
        return None;
    }
    let end = seg.seq.wrapping_add(seg.data_len);
    let mut win = seg.win as u32;
    if s.flags & r.flags & P_WSCALE != 0 {
        win <<= s.wscale;
    }
    let ack = seg.ack;
    if !in_window(s, r, seg.seq, end, ack) {
        return Some(Update::Invalid);
    }
    s.maxwin = s.maxwin.max(win);
    if after(end, s.end) {
        s.end = end;
    }
    let lim = ack.wrapping_add(win.max(1));
    if after(lim, r.maxend) {
        r.maxend = lim;
    }
    Some(Update::Valid)
}

/// The window check of a segment from `s` to `r` spanning `seq..end` and acknowledging `ack`:
/// it starts no later than the receiver allows, ends no earlier than a window behind what the
/// sender already sent, and acknowledges nothing unsent and nothing too far back.
#[inline(always)]
fn in_window(s: &Peer, r: &Peer, seq: u32, end: u32, ack: u32) -> bool {
    let max_ack_win = s.maxwin.max(MAX_ACK_WINDOW_MIN);
    !after(seq, s.maxend)
        && after(end, s.end.wrapping_sub(r.maxwin).wrapping_sub(1))
        && !after(ack, r.end)
        && after(ack, r.end.wrapping_sub(max_ack_win).wrapping_sub(1))
}

/// [`update`] for every segment and state.
fn update_any(state: &mut u8, peers: &mut [Peer; 2], dir: usize, seg: &TcpSeg) -> Update {
    let f = seg.flags;
    if invalid_flags(f) {
        return Update::Invalid;
    }
    let st = TcpState::from_u8(*state);
    if f & TCP_SYN != 0
        && f & TCP_ACK == 0
        && dir == 0
        && matches!(st, TcpState::TimeWait | TcpState::Close)
    {
        return Update::Reopen;
    }
    // Handshake legality, before touching windows.
    let syn = f & TCP_SYN != 0;
    match st {
        TcpState::SynSent => {
            if dir == 0 && !syn {
                // Nothing but SYN retransmits (or an abort) before the peer answers.
                if f & TCP_RST == 0 {
                    return Update::Invalid;
                }
            }
            if dir == 1 && f & TCP_RST == 0 && !syn {
                return Update::Invalid;
            }
        }
        _ => {
            if syn && dir == 0 && st != TcpState::SynRecv {
                return Update::Invalid;
            }
        }
    }
    let (s, r) = if dir == 0 {
        let [a, b] = peers;
        (a, b)
    } else {
        let [a, b] = peers;
        (b, a)
    };
    let end = seg_end(seg);
    let mut win = seg.win as u32;
    if !syn && s.flags & r.flags & P_WSCALE != 0 {
        win <<= s.wscale;
    }
    let liberal = s.flags & P_LIBERAL != 0 || r.flags & P_LIBERAL != 0;
    if s.maxwin == 0 {
        // First segment from this side (the SYN-ACK, or the reply side of a pickup).
        s.end = end;
        s.maxend = end;
        s.maxwin = win.max(1);
        if syn {
            if let Some(ws) = seg.wscale {
                s.wscale = ws;
                s.flags |= P_WSCALE;
            }
            if s.flags & r.flags & P_WSCALE == 0 {
                s.wscale = 0;
                r.wscale = 0;
            }
        }
        if f & TCP_ACK != 0 {
            r.maxend = seg.ack.wrapping_add(win.max(1));
        }
    } else if !liberal {
        let ack = if f & TCP_ACK != 0 { seg.ack } else { r.end };
        if !in_window(s, r, seg.seq, end, ack) {
            // Includes out-of-window RSTs: accepting them would allow blind resets.
            return Update::Invalid;
        }
    }
    if s.maxwin < win {
        s.maxwin = win;
    }
    if after(end, s.end) {
        s.end = end;
    }
    if f & TCP_ACK != 0 {
        let lim = seg.ack.wrapping_add(win.max(1));
        if after(lim, r.maxend) {
            r.maxend = lim;
        }
        if r.flags & P_FIN_SENT != 0 && !before(seg.ack, r.end) {
            r.flags |= P_FIN_ACKED;
        }
    }
    if liberal {
        // Keep the picked-up side's bounds moving so checks stay meaningful if tightened later.
        if after(seg.ack, r.end) && f & TCP_ACK != 0 {
            r.end = seg.ack;
        }
    }
    if f & TCP_FIN != 0 {
        s.flags |= P_FIN_SENT;
    }
    *state = next_state(st, dir, f, peers) as u8;
    Update::Valid
}

fn next_state(st: TcpState, dir: usize, f: u8, peers: &[Peer; 2]) -> TcpState {
    if f & TCP_RST != 0 {
        return TcpState::Close;
    }
    let fins = (peers[0].flags & P_FIN_SENT != 0) as u8 + (peers[1].flags & P_FIN_SENT != 0) as u8;
    let acked =
        (peers[0].flags & P_FIN_ACKED != 0) as u8 + (peers[1].flags & P_FIN_ACKED != 0) as u8;
    match st {
        TcpState::SynSent => {
            if dir == 1 && f & TCP_SYN != 0 {
                TcpState::SynRecv
            } else {
                st
            }
        }
        TcpState::SynRecv if dir == 0 && f & TCP_ACK != 0 && f & TCP_SYN == 0 => {
            if fins > 0 {
                TcpState::FinWait
            } else {
                TcpState::Established
            }
        }
        TcpState::SynRecv => st,
        TcpState::Close | TcpState::TimeWait => st,
        _ => match (fins, acked) {
            (0, _) => TcpState::Established,
            (1, 0) => TcpState::FinWait,
            (1, _) => TcpState::CloseWait,
            (_, 2) => TcpState::TimeWait,
            _ => TcpState::LastAck,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn flag_sanity() {
        assert!(invalid_flags(TCP_SYN | TCP_FIN));
        assert!(invalid_flags(TCP_SYN | TCP_RST));
        assert!(invalid_flags(0));
        assert!(invalid_flags(TCP_FIN));
        assert!(!invalid_flags(TCP_SYN));
        assert!(!invalid_flags(TCP_ACK | TCP_FIN));
        assert!(!invalid_flags(TCP_RST));
    }

    fn peer_strategy() -> impl Strategy<Value = Peer> {
        // Sequence numbers near one another (and near the wrap) so that both in- and
        // out-of-window segments are common.
        let near =
            || (0u32..4, -70_000i32..70_000).prop_map(|(q, d)| (q << 30).wrapping_add(d as u32));
        let flags = prop_oneof![Just(0), Just(P_WSCALE), 0u8..16];
        (near(), near(), 0u32..140_000, 0u8..15, flags).prop_map(
            |(end, maxend, maxwin, wscale, flags)| Peer {
                end,
                maxend,
                maxwin,
                wscale,
                flags,
            },
        )
    }

    fn seg_strategy() -> impl Strategy<Value = TcpSeg> {
        let near =
            (0u32..4, -70_000i32..70_000).prop_map(|(q, d)| (q << 30).wrapping_add(d as u32));
        let flags = prop_oneof![Just(TCP_ACK), Just(TCP_ACK | TCP_PSH), any::<u8>()];
        (flags, near.clone(), near, any::<u16>(), 0u32..3000).prop_map(
            |(flags, seq, ack, win, data_len)| TcpSeg {
                flags,
                seq,
                ack,
                win,
                data_len,
                wscale: None,
            },
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 4096, ..ProptestConfig::default() })]

        /// The established fast path answers and moves the connection exactly as the general
        /// rules do, whenever it answers at all.
        #[test]
        fn established_fast_path_agrees_with_the_general_rules(
            state in prop_oneof![Just(TcpState::Established as u8), 0u8..10],
            peers in [peer_strategy(), peer_strategy()],
            dir in 0usize..2,
            seg in seg_strategy(),
        ) {
            let (mut st_fast, mut peers_fast) = (state, peers);
            let (mut st_any, mut peers_any) = (state, peers);
            let fast = update_established(&mut st_fast, &mut peers_fast, dir, &seg);
            let any = update_any(&mut st_any, &mut peers_any, dir, &seg);
            match fast {
                Some(u) => {
                    prop_assert_eq!(u, any);
                    prop_assert_eq!(st_fast, st_any);
                    prop_assert_eq!(peers_fast, peers_any);
                }
                None => {
                    prop_assert_eq!(st_fast, state);
                    prop_assert_eq!(peers_fast, peers);
                }
            }
        }
    }

    #[test]
    fn seq_comparisons_wrap() {
        assert!(before(u32::MAX, 1));
        assert!(after(1, u32::MAX));
        assert!(!before(5, 5));
    }
}

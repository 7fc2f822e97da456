//! The OpenFlow tables of one bridge: flow mods, atomic batches, snapshots for the datapath,
//! dumps and timeouts.
//!
//! This module owns the rule set ([`FlowTables`]) and how it changes. It keeps an immutable
//! [`Snapshot`] behind an [`ArcSwap`]: datapath threads `load()` one per batch of frames and never
//! see a half-applied change; writers build the next snapshot and swap it in. Snapshots are
//! copy-on-write per table: a change to one table shares every other table's classifier, and
//! unchanged rules are shared `Arc<Rule>`s (so their counters carry over). Every published change
//! bumps [`Snapshot::generation`], which the flow cache uses to invalidate.
//!
//! It must not execute actions, parse text or read a clock: times come in as `now` arguments.
//!
//! Semantics follow Open vSwitch 3.1 with OpenFlow 1.0 flow mods, as checked against it:
//! - add: a flow with the same match and priority in the table is replaced, and the new flow
//!   starts with zeroed counters and a new creation time (even if its actions are the same);
//! - modify: replaces the actions (and the cookie when one is given without a mask) of the
//!   selected flows, keeping counters (unless `reset_counts`) and creation time; when it selects
//!   nothing and has no cookie mask, it adds the flow instead (to table 0 if all tables were
//!   named);
//! - modify/delete without a table (table [`ALL_TABLES`]) act on every table;
//! - non-strict selection takes every flow whose match is at least as specific as the given
//!   one, at any priority; strict selection takes the flow with exactly that match and priority.

use crate::classifier::{Classifier, ConjClause};
use crate::ct::Nanos;
use crate::flow::{ofp_port, Action, FlowSpec, Match, OutputTarget, N_TABLES};
use crate::key::FlowKey;
use arc_swap::{ArcSwap, Guard};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// `table=255`: every table (modify, delete, dump).
pub const ALL_TABLES: u8 = 255;

const NS_PER_SEC: u64 = 1_000_000_000;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TableError {
    #[error("table {0} does not exist (tables are 0..=254)")]
    BadTableId(u8),
    #[error("table {table}: an overlapping flow with priority {priority} exists (check_overlap)")]
    Overlap { table: u8, priority: u16 },
    #[error("\"conjunction\" actions may be used along with \"note\" but not with other actions")]
    ConjunctionMixed,
    #[error("conjunction({id},{clause}/{n_clauses}): need 2 <= n <= 64 and 1 <= k <= n")]
    BadConjunction { id: u32, clause: u8, n_clauses: u8 },
    #[error("flow mod #{index}: {source}")]
    InBatch {
        index: usize,
        #[source]
        source: Box<TableError>,
    },
}

/// A rule's counters. Shared between a rule and the rules that modify-in-place it, so counts
/// that datapath threads add to an old snapshot's rule are not lost.
#[derive(Debug, Default)]
pub struct RuleStats {
    n_packets: AtomicU64,
    n_bytes: AtomicU64,
    used: AtomicU64,
}

impl RuleStats {
    fn new(now: Nanos) -> Self {
        RuleStats {
            n_packets: AtomicU64::new(0),
            n_bytes: AtomicU64::new(0),
            used: AtomicU64::new(now),
        }
    }
    pub fn n_packets(&self) -> u64 {
        self.n_packets.load(Ordering::Relaxed)
    }
    pub fn n_bytes(&self) -> u64 {
        self.n_bytes.load(Ordering::Relaxed)
    }
    /// Last time a packet hit the rule (its creation time if none has).
    pub fn last_used(&self) -> Nanos {
        self.used.load(Ordering::Relaxed)
    }
}

/// One installed flow.
#[derive(Debug)]
pub struct Rule {
    /// The flow as installed (`cookie_mask` and `out_port` are zero/`None`).
    pub spec: FlowSpec,
    pub stats: Arc<RuleStats>,
    pub created: Nanos,
    /// Last add or modify; the hard timeout counts from here, as in Open vSwitch.
    pub modified: Nanos,
}

impl Rule {
    fn new(mut spec: FlowSpec, now: Nanos) -> Rule {
        spec.cookie_mask = 0;
        spec.out_port = None;
        spec.matches.value = spec.matches.value.and(&spec.matches.mask);
        Rule {
            spec,
            stats: Arc::new(RuleStats::new(now)),
            created: now,
            modified: now,
        }
    }

    #[inline]
    pub fn add_stats(&self, packets: u64, bytes: u64, now: Nanos) {
        self.stats.n_packets.fetch_add(packets, Ordering::Relaxed);
        self.stats.n_bytes.fetch_add(bytes, Ordering::Relaxed);
        // A plain store when newer: `fetch_max` is a compare-and-swap loop on a line every
        // thread crediting this flow writes.
        if self.stats.used.load(Ordering::Relaxed) < now {
            self.stats.used.store(now, Ordering::Relaxed);
        }
    }

    pub fn table(&self) -> u8 {
        self.spec.table
    }

    pub fn priority(&self) -> u16 {
        self.spec.priority
    }

    /// True when the rule's actions are conjunction clauses.
    pub fn is_conjunctive(&self) -> bool {
        self.spec
            .actions
            .iter()
            .any(|a| matches!(a, Action::Conjunction { .. }))
    }

    /// Why the rule has expired at `now`, if it has.
    pub fn expiry(&self, now: Nanos) -> Option<Expiry> {
        let s = &self.spec;
        if s.hard_timeout > 0
            && now
                >= self
                    .modified
                    .saturating_add(s.hard_timeout as u64 * NS_PER_SEC)
        {
            return Some(Expiry::Hard);
        }
        let used = self.stats.last_used().max(self.modified);
        if s.idle_timeout > 0 && now >= used.saturating_add(s.idle_timeout as u64 * NS_PER_SEC) {
            return Some(Expiry::Idle);
        }
        None
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expiry {
    Idle,
    Hard,
}

/// Conjunction clauses of a flow's actions; validates Open vSwitch's rules for them.
pub fn conj_clauses(actions: &[Action]) -> Result<Vec<ConjClause>, TableError> {
    let mut out = Vec::new();
    let mut other = false;
    for a in actions {
        match *a {
            Action::Conjunction {
                id,
                clause,
                n_clauses,
            } => {
                if !(2..=64).contains(&n_clauses) || clause == 0 || clause > n_clauses {
                    return Err(TableError::BadConjunction {
                        id,
                        clause,
                        n_clauses,
                    });
                }
                out.push(ConjClause {
                    id,
                    clause,
                    n_clauses,
                });
            }
            Action::Note(_) => {}
            _ => other = true,
        }
    }
    if !out.is_empty() && other {
        return Err(TableError::ConjunctionMixed);
    }
    Ok(out)
}

type Table = Classifier<Arc<Rule>>;

/// An immutable view of every table.
#[derive(Clone)]
pub struct Snapshot {
    generation: u64,
    tables: Vec<Arc<Table>>,
    /// Rules with an idle or hard timeout, so `expire` can skip scanning when there are none.
    n_timed: usize,
}

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshot")
            .field("generation", &self.generation)
            .field("n_rules", &self.n_rules())
            .finish()
    }
}

impl Snapshot {
    fn empty() -> Self {
        let t = Arc::new(Table::new());
        Snapshot {
            generation: 0,
            tables: vec![t; N_TABLES],
            n_timed: 0,
        }
    }

    /// Strictly increases with every published change.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The rule a key hits in `table`; ORs the bits the answer depended on into `wc`.
    #[inline]
    pub fn lookup(&self, table: u8, key: &FlowKey, wc: &mut FlowKey) -> Option<&Arc<Rule>> {
        self.tables.get(table as usize)?.lookup(key, wc)
    }

    pub fn table(&self, table: u8) -> Option<&Classifier<Arc<Rule>>> {
        self.tables.get(table as usize).map(|t| &**t)
    }

    pub fn n_rules(&self) -> usize {
        self.tables.iter().map(|t| t.len()).sum()
    }

    /// Rules selected by `filter`, by table, then priority (highest first), then match.
    pub fn dump(&self, filter: &FlowFilter) -> Vec<Arc<Rule>> {
        let mut out: Vec<Arc<Rule>> = Vec::new();
        for t in filter.tables() {
            let mut v: Vec<Arc<Rule>> = self.tables[t as usize]
                .iter()
                .map(|(_, _, r)| r)
                .filter(|r| filter.selects(r))
                .cloned()
                .collect();
            v.sort_by(|a, b| {
                b.spec
                    .priority
                    .cmp(&a.spec.priority)
                    .then_with(|| match_order(&a.spec.matches, &b.spec.matches))
            });
            out.extend(v);
        }
        out
    }
}

fn match_order(a: &Match, b: &Match) -> std::cmp::Ordering {
    a.mask
        .w
        .cmp(&b.mask.w)
        .then_with(|| a.value.w.cmp(&b.value.w))
}

/// Which flows a modify, delete or dump acts on.
#[derive(Clone, Debug)]
pub struct FlowFilter {
    /// A table, or [`ALL_TABLES`].
    pub table: u8,
    pub matches: Match,
    /// `Some(priority)`: strict (exact match and priority); `None`: every flow at least as
    /// specific as `matches`.
    pub strict_priority: Option<u16>,
    pub cookie: u64,
    /// Zero: no cookie filter.
    pub cookie_mask: u64,
    /// Only flows that output to this port; `None` or `Some(OFPP_NONE)`: no filter.
    pub out_port: Option<u32>,
}

impl FlowFilter {
    /// Every flow in every table.
    pub fn all() -> Self {
        FlowFilter {
            table: ALL_TABLES,
            matches: Match::CATCH_ALL,
            strict_priority: None,
            cookie: 0,
            cookie_mask: 0,
            out_port: None,
        }
    }

    /// The filter a `mod-flows`/`del-flows`/`dump-flows` line describes.
    pub fn from_spec(spec: &FlowSpec, strict: bool) -> Self {
        FlowFilter {
            table: spec.table,
            matches: spec.matches,
            strict_priority: strict.then_some(spec.priority),
            cookie: spec.cookie,
            cookie_mask: spec.cookie_mask,
            out_port: spec.out_port,
        }
    }

    fn tables(&self) -> std::ops::Range<u8> {
        if self.table == ALL_TABLES {
            0..ALL_TABLES
        } else {
            self.table..self.table + 1
        }
    }

    /// Match and cookie and out_port criteria.
    pub fn selects(&self, r: &Rule) -> bool {
        let m = &r.spec.matches;
        let f = &self.matches;
        let match_ok = match self.strict_priority {
            Some(p) => {
                r.spec.priority == p
                    && *m
                        == Match {
                            value: f.value.and(&f.mask),
                            mask: f.mask,
                        }
            }
            None => {
                // At least as specific: every filter mask bit is in the flow's mask, with the
                // same value.
                (0..m.mask.w.len()).all(|i| {
                    m.mask.w[i] & f.mask.w[i] == f.mask.w[i]
                        && m.value.w[i] & f.mask.w[i] == f.value.w[i] & f.mask.w[i]
                })
            }
        };
        match_ok
            && (r.spec.cookie & self.cookie_mask) == (self.cookie & self.cookie_mask)
            && match self.out_port {
                None | Some(ofp_port::NONE) => true,
                Some(p) => outputs_to(&r.spec.actions, p),
            }
    }
}

/// True when the actions can send a frame to OpenFlow port `port`.
pub fn outputs_to(actions: &[Action], port: u32) -> bool {
    actions.iter().any(|a| match a {
        Action::Output { target, .. } => match target {
            OutputTarget::Port(p) => *p == port,
            OutputTarget::InPort => port == ofp_port::IN_PORT,
            OutputTarget::Normal => port == ofp_port::NORMAL,
            OutputTarget::Flood => port == ofp_port::FLOOD,
            OutputTarget::All => port == ofp_port::ALL,
            OutputTarget::Local => port == ofp_port::LOCAL,
            OutputTarget::Controller(_) => port == ofp_port::CONTROLLER,
            OutputTarget::Field(_) => false,
        },
        Action::Clone(inner) => outputs_to(inner, port),
        _ => false,
    })
}

/// True when some key matches both.
pub fn overlaps(a: &Match, b: &Match) -> bool {
    (0..a.mask.w.len()).all(|i| {
        let common = a.mask.w[i] & b.mask.w[i];
        a.value.w[i] & common == b.value.w[i] & common
    })
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlowModCommand {
    Add,
    Modify { strict: bool },
    Delete { strict: bool },
}

/// One flow mod: the command and the flow line it carries. For modify and delete,
/// `spec.table == ALL_TABLES` selects every table (callers parsing `mod-flows`/`del-flows`
/// without `table=` set it), `spec.cookie_mask` and `spec.out_port` filter. A cookie given
/// without a mask (non-zero `cookie`, zero `cookie_mask`) becomes the modified flows' cookie.
#[derive(Clone, Debug)]
pub struct FlowMod {
    pub command: FlowModCommand,
    pub spec: FlowSpec,
}

impl FlowMod {
    pub fn add(spec: FlowSpec) -> Self {
        FlowMod {
            command: FlowModCommand::Add,
            spec,
        }
    }
    pub fn modify(spec: FlowSpec, strict: bool) -> Self {
        FlowMod {
            command: FlowModCommand::Modify { strict },
            spec,
        }
    }
    pub fn delete(spec: FlowSpec, strict: bool) -> Self {
        FlowMod {
            command: FlowModCommand::Delete { strict },
            spec,
        }
    }
}

/// What a successful batch did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ApplyOutcome {
    pub added: usize,
    pub modified: usize,
    pub deleted: usize,
    /// Generation now published (unchanged when the batch changed nothing).
    pub generation: u64,
}

/// A snapshot being built. Tables are unshared on first write (`Arc::make_mut`).
struct Draft {
    snap: Snapshot,
    changed: bool,
    outcome: ApplyOutcome,
}

impl Draft {
    fn table_mut(&mut self, t: u8) -> &mut Table {
        self.changed = true;
        Arc::make_mut(&mut self.snap.tables[t as usize])
    }

    fn install(&mut self, rule: Arc<Rule>) -> Result<(), TableError> {
        let conj = conj_clauses(&rule.spec.actions)?;
        let (t, m, p) = (rule.spec.table, rule.spec.matches, rule.spec.priority);
        let timed = has_timeout(&rule.spec);
        if let Some(old) = self.table_mut(t).insert(&m, p, &conj, rule) {
            if has_timeout(&old.spec) {
                self.snap.n_timed -= 1;
            }
        }
        if timed {
            self.snap.n_timed += 1;
        }
        Ok(())
    }

    fn uninstall(&mut self, r: &Rule) {
        if self
            .table_mut(r.spec.table)
            .remove(&r.spec.matches, r.spec.priority)
            .is_some()
            && has_timeout(&r.spec)
        {
            self.snap.n_timed -= 1;
        }
    }

    fn add(&mut self, spec: &FlowSpec, now: Nanos) -> Result<(), TableError> {
        if spec.table as usize >= N_TABLES {
            return Err(TableError::BadTableId(spec.table));
        }
        conj_clauses(&spec.actions)?;
        let rule = Rule::new(spec.clone(), now);
        if spec.flags.check_overlap {
            let t = &self.snap.tables[spec.table as usize];
            if t.iter()
                .any(|(m, p, _)| p == spec.priority && overlaps(&m, &rule.spec.matches))
            {
                return Err(TableError::Overlap {
                    table: spec.table,
                    priority: spec.priority,
                });
            }
        }
        self.install(Arc::new(rule))?;
        self.outcome.added += 1;
        Ok(())
    }

    fn modify(&mut self, spec: &FlowSpec, strict: bool, now: Nanos) -> Result<(), TableError> {
        if spec.table as usize >= N_TABLES && spec.table != ALL_TABLES {
            return Err(TableError::BadTableId(spec.table));
        }
        conj_clauses(&spec.actions)?;
        // Open vSwitch ignores out_port on modify.
        let filter = FlowFilter {
            out_port: None,
            ..FlowFilter::from_spec(spec, strict)
        };
        let targets = self.snap.dump(&filter);
        if targets.is_empty() {
            if spec.cookie_mask == 0 {
                let mut add = spec.clone();
                if add.table == ALL_TABLES {
                    add.table = 0;
                }
                return self.add(&add, now);
            }
            return Ok(());
        }
        for old in targets {
            let mut new_spec = old.spec.clone();
            new_spec.actions = spec.actions.clone();
            if spec.cookie_mask == 0 && spec.cookie != 0 {
                new_spec.cookie = spec.cookie;
            }
            let stats = if spec.flags.reset_counts {
                Arc::new(RuleStats::new(now))
            } else {
                old.stats.clone()
            };
            let rule = Rule {
                spec: new_spec,
                stats,
                created: old.created,
                modified: now,
            };
            self.install(Arc::new(rule))?;
            self.outcome.modified += 1;
        }
        Ok(())
    }

    fn delete(&mut self, spec: &FlowSpec, strict: bool) -> Result<Vec<Arc<Rule>>, TableError> {
        if spec.table as usize >= N_TABLES && spec.table != ALL_TABLES {
            return Err(TableError::BadTableId(spec.table));
        }
        let targets = self.snap.dump(&FlowFilter::from_spec(spec, strict));
        for r in &targets {
            self.uninstall(r);
        }
        self.outcome.deleted += targets.len();
        Ok(targets)
    }
}

fn has_timeout(s: &FlowSpec) -> bool {
    s.idle_timeout > 0 || s.hard_timeout > 0
}

/// Every table of a bridge. Cheap to read from many threads; writes are serialised.
pub struct FlowTables {
    current: ArcSwap<Snapshot>,
    writer: Mutex<()>,
    /// Bumped after every publication (see [`FlowTables::published`]).
    published: AtomicU64,
}

impl Default for FlowTables {
    fn default() -> Self {
        Self::new()
    }
}

impl FlowTables {
    pub fn new() -> Self {
        FlowTables {
            current: ArcSwap::from_pointee(Snapshot::empty()),
            writer: Mutex::new(()),
            published: AtomicU64::new(0),
        }
    }

    /// The current snapshot (cheap; datapath threads call it once per batch of frames).
    #[inline]
    pub fn load(&self) -> Guard<Arc<Snapshot>> {
        self.current.load()
    }

    /// The current snapshot as an owned `Arc`, for holding across long work.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    pub fn generation(&self) -> u64 {
        self.current.load().generation
    }

    /// How many snapshots have been published. It changes only after the new snapshot is in
    /// place, so a reader that keeps a snapshot between batches and finds this unchanged since
    /// before it took it holds the current one: one atomic load per batch instead of a guarded
    /// load and a reference count.
    #[inline]
    pub fn published(&self) -> u64 {
        self.published.load(Ordering::Acquire)
    }

    /// Runs `f` on a draft of the next snapshot and publishes it if `f` succeeds and changed
    /// something. On error nothing is published.
    fn write<T>(
        &self,
        f: impl FnOnce(&mut Draft) -> Result<T, TableError>,
    ) -> Result<(T, ApplyOutcome), TableError> {
        // A poisoned lock only means another writer panicked before publishing: the published
        // snapshot is still whole.
        let _w = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let cur = self.current.load_full();
        let mut draft = Draft {
            snap: (*cur).clone(),
            changed: false,
            outcome: ApplyOutcome::default(),
        };
        let v = f(&mut draft)?;
        if draft.changed {
            draft.snap.generation = cur.generation + 1;
            draft.outcome.generation = draft.snap.generation;
            self.current.store(Arc::new(draft.snap));
            self.published.fetch_add(1, Ordering::Release);
        } else {
            draft.outcome.generation = cur.generation;
        }
        Ok((v, draft.outcome))
    }

    /// Applies a batch of flow mods atomically: all of them, or (on the first error, which
    /// names the failing mod's index) none.
    pub fn apply(&self, mods: &[FlowMod], now: Nanos) -> Result<ApplyOutcome, TableError> {
        self.write(|d| {
            for (index, fm) in mods.iter().enumerate() {
                let r = match fm.command {
                    FlowModCommand::Add => d.add(&fm.spec, now),
                    FlowModCommand::Modify { strict } => d.modify(&fm.spec, strict, now),
                    FlowModCommand::Delete { strict } => d.delete(&fm.spec, strict).map(|_| ()),
                };
                r.map_err(|e| TableError::InBatch {
                    index,
                    source: Box::new(e),
                })?;
            }
            Ok(())
        })
        .map(|((), o)| o)
    }

    /// Adds flows as one atomic batch (a flow file).
    pub fn add_flows(&self, specs: &[FlowSpec], now: Nanos) -> Result<ApplyOutcome, TableError> {
        self.write(|d| {
            for (index, s) in specs.iter().enumerate() {
                d.add(s, now).map_err(|e| TableError::InBatch {
                    index,
                    source: Box::new(e),
                })?;
            }
            Ok(())
        })
        .map(|((), o)| o)
    }

    /// Makes the flow set exactly `specs` (as `ovs-ofctl replace-flows`), atomically. A flow
    /// already installed with the same table, match, priority, actions, cookie, timeouts and
    /// flags is kept as is, counters included; the others are added (counters from zero) or
    /// deleted. Tables whose flows do not change keep their classifier.
    pub fn replace_flows(
        &self,
        specs: &[FlowSpec],
        now: Nanos,
    ) -> Result<ApplyOutcome, TableError> {
        // Validate everything before touching anything.
        let mut wanted: Vec<HashMap<(Match, u16), FlowSpec>> = vec![HashMap::new(); N_TABLES];
        for (index, s) in specs.iter().enumerate() {
            let bad = |e| TableError::InBatch {
                index,
                source: Box::new(e),
            };
            if s.table as usize >= N_TABLES {
                return Err(bad(TableError::BadTableId(s.table)));
            }
            conj_clauses(&s.actions).map_err(bad)?;
            // Later lines replace earlier ones with the same match and priority, as adds would.
            let s = Rule::new(s.clone(), now).spec;
            wanted[s.table as usize].insert((s.matches, s.priority), s);
        }
        self.write(|d| {
            for (t, want) in wanted.iter().enumerate() {
                let cur = d.snap.tables[t].clone();
                let mut keep = 0usize;
                let mut stale = Vec::new();
                for (m, p, r) in cur.iter() {
                    match want.get(&(m, p)) {
                        Some(s) if same_flow(&r.spec, s) => keep += 1,
                        _ => stale.push(r.clone()),
                    }
                }
                if stale.is_empty() && keep == want.len() {
                    continue;
                }
                for r in &stale {
                    d.uninstall(r);
                }
                d.outcome.deleted += stale.len();
                for ((m, p), s) in want {
                    if cur.get(m, *p).is_some_and(|r| same_flow(&r.spec, s)) {
                        continue;
                    }
                    d.install(Arc::new(Rule::new(s.clone(), now)))?;
                    d.outcome.added += 1;
                }
            }
            Ok(())
        })
        .map(|((), o)| o)
    }

    /// Rules selected by `filter`, by table, then priority (highest first), then match.
    pub fn dump(&self, filter: &FlowFilter) -> Vec<Arc<Rule>> {
        self.current.load().dump(filter)
    }

    /// Removes and returns the flows whose idle or hard timeout has passed at `now`.
    pub fn expire(&self, now: Nanos) -> Vec<Arc<Rule>> {
        if self.current.load().n_timed == 0 {
            return Vec::new();
        }
        self.write(|d| {
            let dead: Vec<Arc<Rule>> = d
                .snap
                .tables
                .iter()
                .flat_map(|t| t.iter().map(|(_, _, r)| r))
                .filter(|r| r.expiry(now).is_some())
                .cloned()
                .collect();
            for r in &dead {
                d.uninstall(r);
            }
            d.outcome.deleted = dead.len();
            Ok(dead)
        })
        .map(|(v, _)| v)
        .unwrap_or_default()
    }
}

/// Same flow for `replace-flows`: everything a flow file can say about it.
fn same_flow(a: &FlowSpec, b: &FlowSpec) -> bool {
    a.table == b.table
        && a.priority == b.priority
        && a.matches == b.matches
        && a.actions == b.actions
        && a.cookie == b.cookie
        && a.idle_timeout == b.idle_timeout
        && a.hard_timeout == b.hard_timeout
        && a.importance == b.importance
        && a.flags == b.flags
}

impl crate::xlate::RuleHandle for Rule {
    fn spec(&self) -> &FlowSpec {
        &self.spec
    }

    fn add_stats(&self, packets: u64, bytes: u64, now: Nanos) {
        Rule::add_stats(self, packets, bytes, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::field::Field;
    use crate::flow::FlowFlags;
    use crate::key::{loc, VLAN_CFI, VLAN_VID_MASK};

    const S: Nanos = NS_PER_SEC;

    fn spec(table: u8, priority: u16, fields: &[(Field, u128)], actions: Vec<Action>) -> FlowSpec {
        let mut s = FlowSpec {
            table,
            priority,
            actions,
            ..FlowSpec::default()
        };
        for &(f, v) in fields {
            let l = f.loc().unwrap();
            s.matches.mask.set_all(l);
            s.matches.value.set(l, v);
        }
        s
    }

    fn out(p: u32) -> Vec<Action> {
        vec![Action::Output {
            target: OutputTarget::Port(p),
            max_len: None,
        }]
    }

    fn with_vlan(mut s: FlowSpec, vid: u16) -> FlowSpec {
        let mask = (VLAN_VID_MASK | VLAN_CFI) as u128;
        s.matches.mask.set(loc::VLAN_TCI, mask);
        s.matches.value.set(loc::VLAN_TCI, (vid | VLAN_CFI) as u128);
        s
    }

    fn key(fields: &[(Field, u128)]) -> FlowKey {
        let mut k = FlowKey::ZERO;
        for &(f, v) in fields {
            k.set(f.loc().unwrap(), v);
        }
        k
    }

    fn hit(t: &FlowTables, table: u8, k: &FlowKey) -> Option<Arc<Rule>> {
        let mut wc = FlowKey::ZERO;
        t.load().lookup(table, k, &mut wc).cloned()
    }

    fn actions_of(t: &FlowTables, table: u8, k: &FlowKey) -> Option<Vec<Action>> {
        hit(t, table, k).map(|r| r.spec.actions.clone())
    }

    fn all_specs(t: &FlowTables) -> Vec<(u8, u16, Vec<Action>)> {
        t.dump(&FlowFilter::all())
            .iter()
            .map(|r| (r.spec.table, r.spec.priority, r.spec.actions.clone()))
            .collect()
    }

    use Field::{InPort, Reg, TpDst};

    /// OVS 3.1 (OpenFlow 1.0 and 1.3): re-adding a flow with the same match and priority
    /// replaces it with zeroed counters and a new duration, even with the same actions.
    #[test]
    fn add_replaces_identical_flow_and_resets_counters() {
        let t = FlowTables::new();
        t.add_flows(&[spec(0, 10, &[(InPort, 1)], out(2))], S)
            .unwrap();
        let r = hit(&t, 0, &key(&[(InPort, 1)])).unwrap();
        r.add_stats(2, 212, 2 * S);
        t.add_flows(&[spec(0, 10, &[(InPort, 1)], out(3))], 3 * S)
            .unwrap();
        let r2 = hit(&t, 0, &key(&[(InPort, 1)])).unwrap();
        assert_eq!(r2.spec.actions, out(3));
        assert_eq!(
            (r2.stats.n_packets(), r2.stats.n_bytes(), r2.created),
            (0, 0, 3 * S)
        );
        assert_eq!(t.load().n_rules(), 1);
        // A different priority is a different flow.
        t.add_flows(&[spec(0, 11, &[(InPort, 1)], out(4))], 3 * S)
            .unwrap();
        assert_eq!(t.load().n_rules(), 2);
        assert_eq!(actions_of(&t, 0, &key(&[(InPort, 1)])), Some(out(4)));
    }

    #[test]
    fn check_overlap_refuses_same_priority_overlap_only() {
        let t = FlowTables::new();
        t.add_flows(&[spec(0, 10, &[(InPort, 1)], out(2))], 0)
            .unwrap();
        let mut s = spec(0, 10, &[(TpDst, 80)], out(3));
        s.flags.check_overlap = true;
        let err = t.add_flows(&[s.clone()], 0).unwrap_err();
        assert_eq!(
            err,
            TableError::InBatch {
                index: 0,
                source: Box::new(TableError::Overlap {
                    table: 0,
                    priority: 10
                })
            }
        );
        // Disjoint matches at the same priority do not overlap.
        let mut d = spec(0, 10, &[(InPort, 2)], out(3));
        d.flags.check_overlap = true;
        t.add_flows(&[d], 0).unwrap();
        // Another priority or table is fine.
        s.priority = 11;
        t.add_flows(&[s.clone()], 0).unwrap();
        s.priority = 10;
        s.table = 1;
        t.add_flows(&[s], 0).unwrap();
        // An identical flow overlaps itself.
        let mut same = spec(0, 10, &[(InPort, 1)], out(9));
        same.flags.check_overlap = true;
        assert!(t.add_flows(&[same], 0).is_err());
        assert_eq!(t.load().n_rules(), 4);
    }

    #[test]
    fn modify_non_strict_takes_more_specific_flows_and_keeps_counters() {
        let t = FlowTables::new();
        t.add_flows(
            &[
                spec(0, 10, &[(InPort, 1)], out(2)),
                spec(0, 20, &[(InPort, 1), (TpDst, 80)], out(2)),
                spec(0, 30, &[(TpDst, 80)], out(2)),
                spec(1, 5, &[(InPort, 1)], out(2)),
            ],
            S,
        )
        .unwrap();
        let before = hit(&t, 0, &key(&[(InPort, 1)])).unwrap();
        before.add_stats(5, 500, 2 * S);
        let o = t
            .apply(
                &[FlowMod::modify(spec(0, 999, &[(InPort, 1)], out(7)), false)],
                4 * S,
            )
            .unwrap();
        assert_eq!(o.modified, 2);
        let got = all_specs(&t);
        assert_eq!(
            got,
            vec![
                (0, 30, out(2)),
                (0, 20, out(7)),
                (0, 10, out(7)),
                (1, 5, out(2))
            ],
            "only table 0's flows with in_port=1 (any priority) change"
        );
        let after = hit(&t, 0, &key(&[(InPort, 1)])).unwrap();
        assert_eq!(
            (after.stats.n_packets(), after.created, after.modified),
            (5, S, 4 * S)
        );
        // Counts added through the old rule still land on the new one.
        before.add_stats(1, 100, 5 * S);
        assert_eq!(after.stats.n_packets(), 6);
        // reset_counts zeroes them.
        let mut r = spec(0, 10, &[(InPort, 1)], out(8));
        r.flags.reset_counts = true;
        t.apply(&[FlowMod::modify(r, true)], 6 * S).unwrap();
        assert_eq!(
            hit(&t, 0, &key(&[(InPort, 1)])).unwrap().stats.n_packets(),
            0
        );
    }

    #[test]
    fn modify_strict_needs_exact_match_and_priority() {
        let t = FlowTables::new();
        t.add_flows(
            &[
                spec(0, 10, &[(InPort, 1)], out(2)),
                spec(0, 20, &[(InPort, 1), (TpDst, 80)], out(2)),
            ],
            0,
        )
        .unwrap();
        let o = t
            .apply(
                &[FlowMod::modify(
                    spec(0, 20, &[(InPort, 1), (TpDst, 80)], out(9)),
                    true,
                )],
                0,
            )
            .unwrap();
        assert_eq!(o.modified, 1);
        assert_eq!(all_specs(&t), vec![(0, 20, out(9)), (0, 10, out(2))]);
    }

    /// OVS 3.1 with OpenFlow 1.0: mod-flows that selects nothing adds the flow, unless it has a
    /// cookie mask; without table= it lands in table 0.
    #[test]
    fn modify_of_nothing_adds_unless_cookie_masked() {
        let t = FlowTables::new();
        t.apply(
            &[FlowMod::modify(
                spec(ALL_TABLES, 5, &[(InPort, 2)], out(1)),
                false,
            )],
            0,
        )
        .unwrap();
        assert_eq!(all_specs(&t), vec![(0, 5, out(1))]);
        let mut c = spec(3, 5, &[(InPort, 3)], out(1));
        c.cookie = 5;
        c.cookie_mask = u64::MAX;
        let o = t.apply(&[FlowMod::modify(c, false)], 0).unwrap();
        assert_eq!(
            o,
            ApplyOutcome {
                generation: 1,
                ..ApplyOutcome::default()
            }
        );
        assert_eq!(t.load().n_rules(), 1);
    }

    #[test]
    fn modify_cookie_filter_and_new_cookie() {
        let t = FlowTables::new();
        let mut a = spec(0, 10, &[(InPort, 1)], out(2));
        a.cookie = 0x11;
        let mut b = spec(0, 10, &[(InPort, 2)], out(2));
        b.cookie = 0x21;
        t.add_flows(&[a, b], 0).unwrap();
        let mut m = spec(ALL_TABLES, 0, &[], out(5));
        m.cookie = 0x20;
        m.cookie_mask = 0xf0;
        assert_eq!(
            t.apply(&[FlowMod::modify(m, false)], 0).unwrap().modified,
            1
        );
        assert_eq!(actions_of(&t, 0, &key(&[(InPort, 2)])), Some(out(5)));
        assert_eq!(actions_of(&t, 0, &key(&[(InPort, 1)])), Some(out(2)));
        // A cookie without a mask is the new cookie (OVS 3.1).
        let mut n = spec(0, 0, &[(InPort, 1)], out(6));
        n.cookie = 0x7;
        t.apply(&[FlowMod::modify(n, false)], 0).unwrap();
        assert_eq!(hit(&t, 0, &key(&[(InPort, 1)])).unwrap().spec.cookie, 0x7);
        assert_eq!(hit(&t, 0, &key(&[(InPort, 2)])).unwrap().spec.cookie, 0x21);
    }

    #[test]
    fn delete_non_strict_strict_cookie_out_port_and_tables() {
        let t = FlowTables::new();
        let mut flows = vec![
            spec(0, 10, &[(InPort, 1)], out(2)),
            spec(0, 20, &[(InPort, 1), (TpDst, 80)], out(3)),
            spec(0, 30, &[(TpDst, 80)], out(2)),
            spec(1, 10, &[(InPort, 1)], out(2)),
            spec(2, 10, &[(Reg(14), 1)], vec![Action::Clone(out(4))]),
        ];
        flows[1].cookie = 0xab00;
        t.add_flows(&flows, 0).unwrap();

        // Strict: the priority must match too.
        let o = t
            .apply(
                &[FlowMod::delete(spec(0, 11, &[(InPort, 1)], vec![]), true)],
                0,
            )
            .unwrap();
        assert_eq!(o.deleted, 0);
        // Cookie mask filters.
        let mut c = spec(ALL_TABLES, 0, &[], vec![]);
        c.cookie = 0xab00;
        c.cookie_mask = 0xff00;
        assert_eq!(t.apply(&[FlowMod::delete(c, false)], 0).unwrap().deleted, 1);
        assert_eq!(t.load().n_rules(), 4);
        // out_port filter, looking inside clone().
        let mut op = spec(ALL_TABLES, 0, &[], vec![]);
        op.out_port = Some(4);
        assert_eq!(
            t.apply(&[FlowMod::delete(op, false)], 0).unwrap().deleted,
            1
        );
        // One table, non-strict: every flow at least as specific, any priority.
        assert_eq!(
            t.apply(
                &[FlowMod::delete(spec(1, 0, &[(InPort, 1)], vec![]), false)],
                0
            )
            .unwrap()
            .deleted,
            1
        );
        assert_eq!(all_specs(&t), vec![(0, 30, out(2)), (0, 10, out(2))]);
        // out_port=none is no filter; table=all deletes everything.
        let mut everything = spec(ALL_TABLES, 0, &[], vec![]);
        everything.out_port = Some(ofp_port::NONE);
        assert_eq!(
            t.apply(&[FlowMod::delete(everything, false)], 0)
                .unwrap()
                .deleted,
            2
        );
        assert_eq!(t.load().n_rules(), 0);
    }

    #[test]
    fn failing_batch_changes_nothing() {
        let t = FlowTables::new();
        t.add_flows(&[spec(0, 10, &[(InPort, 1)], out(2))], 0)
            .unwrap();
        let g = t.generation();
        let before = t.snapshot();
        let bad = vec![
            FlowMod::add(spec(0, 50, &[(InPort, 1)], out(3))),
            FlowMod::delete(spec(ALL_TABLES, 0, &[], vec![]), false),
            FlowMod::add(spec(ALL_TABLES, 1, &[], out(3))),
        ];
        let err = t.apply(&bad, 0).unwrap_err();
        assert_eq!(
            err,
            TableError::InBatch {
                index: 2,
                source: Box::new(TableError::BadTableId(255))
            }
        );
        assert_eq!(t.generation(), g);
        assert!(Arc::ptr_eq(&before, &t.snapshot()));
        assert_eq!(actions_of(&t, 0, &key(&[(InPort, 1)])), Some(out(2)));
        let mixed = vec![
            Action::Conjunction {
                id: 1,
                clause: 1,
                n_clauses: 2,
            },
            out(1).remove(0),
        ];
        let err = t
            .add_flows(&[spec(0, 1, &[], out(1)), spec(0, 2, &[], mixed)], 0)
            .unwrap_err();
        assert_eq!(
            err,
            TableError::InBatch {
                index: 1,
                source: Box::new(TableError::ConjunctionMixed)
            }
        );
        let one = vec![Action::Conjunction {
            id: 1,
            clause: 1,
            n_clauses: 1,
        }];
        assert!(matches!(
            t.replace_flows(&[spec(0, 2, &[], one)], 0),
            Err(TableError::InBatch { index: 0, source }) if matches!(*source, TableError::BadConjunction { .. })
        ));
        assert_eq!(t.generation(), g);
        assert_eq!(t.load().n_rules(), 1);
    }

    #[test]
    fn generation_bumps_on_every_change_only() {
        let t = FlowTables::new();
        let mut gens = vec![t.generation()];
        t.add_flows(&[spec(0, 10, &[(InPort, 1)], out(2))], 0)
            .unwrap();
        gens.push(t.generation());
        t.apply(
            &[FlowMod::modify(spec(0, 10, &[(InPort, 1)], out(3)), true)],
            0,
        )
        .unwrap();
        gens.push(t.generation());
        t.apply(
            &[FlowMod::delete(spec(0, 10, &[(InPort, 1)], vec![]), true)],
            0,
        )
        .unwrap();
        gens.push(t.generation());
        assert!(gens.windows(2).all(|w| w[1] > w[0]), "{gens:?}");
        // Deleting nothing publishes nothing.
        let o = t
            .apply(
                &[FlowMod::delete(spec(ALL_TABLES, 0, &[], vec![]), false)],
                0,
            )
            .unwrap();
        assert_eq!((o.generation, t.generation()), (gens[3], gens[3]));
    }

    #[test]
    fn readers_keep_their_snapshot_and_tables_are_copy_on_write() {
        let t = FlowTables::new();
        t.add_flows(
            &[
                spec(0, 10, &[(InPort, 1)], out(2)),
                spec(1, 10, &[(InPort, 1)], out(2)),
            ],
            0,
        )
        .unwrap();
        let old = t.snapshot();
        t.add_flows(&[spec(1, 20, &[(InPort, 1)], out(3))], 0)
            .unwrap();
        let new = t.snapshot();
        let mut wc = FlowKey::ZERO;
        let k = key(&[(InPort, 1)]);
        assert_eq!(old.lookup(1, &k, &mut wc).unwrap().spec.priority, 10);
        assert_eq!(new.lookup(1, &k, &mut wc).unwrap().spec.priority, 20);
        assert!(
            std::ptr::eq(old.table(0).unwrap(), new.table(0).unwrap()),
            "table 0 is shared"
        );
        assert!(!std::ptr::eq(old.table(1).unwrap(), new.table(1).unwrap()));
        assert!(Arc::ptr_eq(
            old.lookup(0, &k, &mut wc).unwrap(),
            new.lookup(0, &k, &mut wc).unwrap()
        ));
    }

    #[test]
    fn replace_flows_keeps_unchanged_flows_and_tables() {
        let t = FlowTables::new();
        let keep = spec(0, 10, &[(InPort, 1)], out(2));
        let change = spec(0, 20, &[(InPort, 2)], out(2));
        let gone = spec(0, 30, &[(InPort, 3)], out(2));
        let other = spec(5, 1, &[(InPort, 1)], out(2));
        t.add_flows(&[keep.clone(), change.clone(), gone, other.clone()], S)
            .unwrap();
        for p in 1..=2 {
            hit(&t, 0, &key(&[(InPort, p)]))
                .unwrap()
                .add_stats(1, 10, 2 * S);
        }
        let old = t.snapshot();
        let mut changed = change.clone();
        changed.actions = out(9);
        let new_flow = spec(0, 40, &[(InPort, 4)], out(1));
        let o = t
            .replace_flows(&[keep, changed, new_flow, other], 3 * S)
            .unwrap();
        assert_eq!((o.added, o.deleted), (2, 2));
        assert_eq!(
            all_specs(&t),
            vec![
                (0, 40, out(1)),
                (0, 20, out(9)),
                (0, 10, out(2)),
                (5, 1, out(2))
            ]
        );
        assert_eq!(
            hit(&t, 0, &key(&[(InPort, 1)])).unwrap().stats.n_packets(),
            1
        );
        assert_eq!(
            hit(&t, 0, &key(&[(InPort, 2)])).unwrap().stats.n_packets(),
            0
        );
        let new = t.snapshot();
        assert!(std::ptr::eq(old.table(5).unwrap(), new.table(5).unwrap()));
        // Same set again: nothing changes, no new generation.
        let g = t.generation();
        let again: Vec<FlowSpec> = t
            .dump(&FlowFilter::all())
            .iter()
            .map(|r| r.spec.clone())
            .collect();
        assert_eq!(t.replace_flows(&again, 4 * S).unwrap().generation, g);
        t.replace_flows(&[], 4 * S).unwrap();
        assert_eq!(t.load().n_rules(), 0);
    }

    #[test]
    fn dump_order_and_filters() {
        let t = FlowTables::new();
        t.add_flows(
            &[
                spec(3, 5, &[(InPort, 2)], out(1)),
                spec(0, 5, &[(InPort, 2)], out(1)),
                spec(0, 5, &[(InPort, 1)], out(1)),
                spec(0, 9, &[(TpDst, 1)], out(1)),
            ],
            0,
        )
        .unwrap();
        let d: Vec<(u8, u16, u32)> = t
            .dump(&FlowFilter::all())
            .iter()
            .map(|r| {
                (
                    r.spec.table,
                    r.spec.priority,
                    r.spec.matches.value.get(loc::IN_PORT) as u32,
                )
            })
            .collect();
        assert_eq!(d, vec![(0, 9, 0), (0, 5, 1), (0, 5, 2), (3, 5, 2)]);
        let f = FlowFilter::from_spec(&spec(ALL_TABLES, 0, &[(InPort, 2)], vec![]), false);
        assert_eq!(t.dump(&f).len(), 2);
        let f = FlowFilter::from_spec(&spec(3, 0, &[], vec![]), false);
        assert_eq!(t.dump(&f).len(), 1);
    }

    #[test]
    fn expire_idle_and_hard() {
        let t = FlowTables::new();
        let mut idle = spec(0, 10, &[(InPort, 1)], out(2));
        idle.idle_timeout = 10;
        let mut hard = spec(0, 10, &[(InPort, 2)], out(2));
        hard.hard_timeout = 20;
        t.add_flows(&[idle, hard, spec(0, 1, &[], out(3))], 0)
            .unwrap();
        assert!(t.expire(9 * S).is_empty());
        hit(&t, 0, &key(&[(InPort, 1)]))
            .unwrap()
            .add_stats(1, 1, 9 * S);
        hit(&t, 0, &key(&[(InPort, 2)]))
            .unwrap()
            .add_stats(1, 1, 9 * S);
        assert!(t.expire(18 * S).is_empty(), "used at 9s: idle until 19s");
        let g = t.generation();
        let e = t.expire(19 * S);
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].expiry(19 * S), Some(Expiry::Idle));
        assert!(t.generation() > g);
        let e = t.expire(20 * S);
        assert_eq!((e.len(), e[0].spec.matches.value.get(loc::IN_PORT)), (1, 2));
        assert_eq!(t.load().n_rules(), 1);
        assert!(t.expire(1000 * S).is_empty());
    }

    /// The seed's table 0 (conjunction 100 lacks its clause 1/2): checked with OVS 3.1's
    /// `ofproto/trace`, `in_port=1,dl_vlan=2207` hits the priority-150 flow.
    #[test]
    fn seed_conjunction_through_tables() {
        let t = FlowTables::new();
        let mut conj_flow = with_vlan(
            spec(0, 180, &[(Field::ConjId, 100), (InPort, 1)], out(8)),
            2207,
        );
        conj_flow.flags = FlowFlags::default();
        let clause2 = with_vlan(
            spec(
                0,
                180,
                &[],
                vec![Action::Conjunction {
                    id: 100,
                    clause: 2,
                    n_clauses: 2,
                }],
            ),
            2207,
        );
        let p150 = with_vlan(spec(0, 150, &[(InPort, 1)], out(5)), 2207);
        t.add_flows(&[conj_flow, clause2, p150], 0).unwrap();
        let k = key(&[(InPort, 1), (Field::VlanTci, (VLAN_CFI | 2207) as u128)]);
        assert_eq!(actions_of(&t, 0, &k), Some(out(5)));
        let clause1 = spec(
            0,
            180,
            &[(InPort, 1)],
            vec![Action::Conjunction {
                id: 100,
                clause: 1,
                n_clauses: 2,
            }],
        );
        t.add_flows(&[clause1], 0).unwrap();
        assert_eq!(actions_of(&t, 0, &k), Some(out(8)));
        assert!(
            t.dump(&FlowFilter::all())
                .iter()
                .filter(|r| r.is_conjunctive())
                .count()
                == 2
        );
    }
}

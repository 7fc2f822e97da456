//! The switch configuration file: a TOML document naming the datapath settings, the bridges and
//! their ports, read by `xvs run --config FILE` and `xvs replay --config FILE`.
//!
//! This module owns the file format, its typed form ([`Config`] and the structs below it) and
//! every rule a configuration must satisfy before anything starts. [`load`] either returns a
//! fully checked configuration, with every port's final OpenFlow number assigned, or one
//! [`ConfigError`] that names the file, line, column, the table and the key at fault. It must
//! not touch the system beyond reading files: creating interfaces, sockets and threads is the
//! daemon's job.
//!
//! # Format
//!
//! ```toml
//! [datapath]                # optional table; every key has a default
//! mode = "poll"             # "poll" (default) or "interrupt"
//! threads = 1               # datapath threads, >= 1 (default 1)
//! cpus = [1]                # optional CPU pinning, one entry per thread
//! coalesce_us = 50          # interrupt mode: after a burst, wait this long for more frames
//!                           # before polling again (0..=1000, default 30; 0 polls at once)
//! fdb_aging = 300           # MAC learning aging in seconds (default 300)
//! fdb_max = 8192            # MAC learning table size (default 8192)
//! ct_max = 3000000          # connection tracking limit (default 3000000)
//! ct_zone_limits = { 9 = 1000 }   # per-zone connection limits, zone numbers as keys
//!
//! [[bridge]]
//! name = "br0"
//! fail_mode = "standalone"  # or "secure" (default "standalone")
//! flows = "br0.flows"       # optional flow file, relative to this file's directory
//! tlv_map = [ { class = 0x0102, type = 0x80, len = 4, field = "tun_metadata0" } ]
//!
//! [[bridge.port]]
//! name = "eth1"
//! type = "afxdp"            # afxdp | patch | internal | pcap | geneve | memory
//! ofport = 10               # optional; otherwise the lowest free number from 1
//! ```
//!
//! Keys every port accepts: `name`, `type`, `ofport`, `tag`, `trunks`, `vlan_mode`, `no_flood`.
//! Keys by type: afxdp `ifname`, `xdp_mode`, `queues`, `mtu`, `frames`; internal `ifname`, `mtu`; patch
//! `peer`; pcap `rx_pcap`, `tx_pcap`; geneve `remote_ip`, `local_ip`, `key`, `csum`,
//! `dst_port`; memory none. A key that exists but belongs to another port type is an error, as
//! is any unknown key.
//!
//! # Rules checked
//!
//! Bridge names are unique; port names are unique across the whole switch (and no port takes
//! another bridge's name, which is that bridge's LOCAL port); chosen `ofport`s are unique within
//! a bridge and in 1..=0xfeff, the others take the lowest free numbers from 1 in file order;
//! patch ports name an existing patch port of another bridge that names them back; an
//! interface (`ifname`) and a `tx_pcap` file belong to one port; two Geneve ports of a bridge
//! differ in `remote_ip`, `local_ip`, `key` or `dst_port`; `flows` and `rx_pcap` files exist.
//!
//! # The LOCAL port
//!
//! As in Open vSwitch, a bridge's internal port named like the bridge is its LOCAL port
//! (OpenFlow port 0xfffe). Every bridge has one: if the file does not declare it, one is added
//! with [`PortConfig::implicit`] set. The daemon creates a TAP device for the LOCAL port only
//! when it is declared explicitly, so a configuration that never mentions it does not grow a
//! host interface.
//!
//! # VLANs
//!
//! `tag`, `trunks` and `vlan_mode` follow the Open vSwitch Port table. Without `vlan_mode`, the
//! mode is derived: `tag` alone is an access port, `trunks` alone a trunk, both native-untagged,
//! neither a trunk of every VLAN. See [`PortVlan`].

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use toml::Spanned;

/// OpenFlow number of a bridge's LOCAL port.
pub const OFPP_LOCAL: u32 = pipeline::flow::ofp_port::LOCAL;
/// Highest OpenFlow number a configured port may have (the reserved range starts above it).
pub const OFPORT_MAX: u32 = pipeline::flow::ofp_port::MAX - 1;
/// Default interrupt-mode coalescing wait, microseconds: at 100-200 kpps it gathers 3-6 frames
/// per wakeup, and a frame crossing the switch twice (a round trip) waits at most twice this.
pub const DEFAULT_COALESCE_US: u32 = 30;
/// Longest coalescing wait the configuration accepts, microseconds.
pub const MAX_COALESCE_US: i64 = 1000;
/// Default UMEM chunks per AF_XDP queue (`frames`): the port's own default.
pub const DEFAULT_FRAMES: u32 = crate::port::afxdp::DEFAULT_FRAME_COUNT;
/// Fewest and most UMEM chunks per queue `frames` accepts: the port's least, and the most that
/// keeps one queue's UMEM at 256 MiB.
pub const MIN_FRAMES: i64 = crate::port::afxdp::MIN_FRAME_COUNT as i64;
pub const MAX_FRAMES: i64 = 65536;
/// Default MAC learning aging, seconds.
pub const DEFAULT_FDB_AGING: u32 = 300;
/// Default MAC learning table size.
pub const DEFAULT_FDB_MAX: u32 = 8192;
/// Default connection tracking limit.
pub const DEFAULT_CT_MAX: u32 = 3_000_000;
/// Default UDP destination port of Geneve tunnels.
pub const GENEVE_PORT: u16 = 6081;
/// Geneve option class OVN uses for its logical port metadata.
pub const OVN_GENEVE_CLASS: u16 = 0x0102;
/// Geneve option type OVN uses for its logical port metadata.
pub const OVN_GENEVE_TYPE: u8 = 0x80;
/// Longest Linux interface name (IFNAMSIZ - 1).
pub const MAX_IFNAME: usize = 15;

/// A configuration error. Every error about the file's content carries the position of the key
/// or value at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{file}: cannot read the configuration: {source}")]
    Read {
        file: String,
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML or does not describe a valid switch. `line` and `col` are
    /// 1-based; `col` counts characters.
    #[error("{file}:{line}:{col}: {message}")]
    Invalid {
        file: String,
        line: usize,
        col: usize,
        message: String,
    },
}

impl ConfigError {
    /// The file the error is about.
    pub fn file(&self) -> &str {
        match self {
            ConfigError::Read { file, .. } | ConfigError::Invalid { file, .. } => file,
        }
    }

    /// `(line, col)` of the fault, when it is about the file's content.
    pub fn position(&self) -> Option<(usize, usize)> {
        match self {
            ConfigError::Read { .. } => None,
            ConfigError::Invalid { line, col, .. } => Some((*line, *col)),
        }
    }

    /// The message without the position prefix.
    pub fn message(&self) -> String {
        match self {
            ConfigError::Read { source, .. } => format!("cannot read the configuration: {source}"),
            ConfigError::Invalid { message, .. } => message.clone(),
        }
    }
}

/// A fully validated switch configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// The directory relative paths were resolved against.
    pub base_dir: PathBuf,
    pub datapath: DatapathConfig,
    /// Bridges in file order.
    pub bridges: Vec<BridgeConfig>,
}

impl Config {
    pub fn bridge(&self, name: &str) -> Option<&BridgeConfig> {
        self.bridges.iter().find(|b| b.name == name)
    }

    /// Finds a port by name anywhere in the switch (names are unique across bridges).
    pub fn port(&self, name: &str) -> Option<(&BridgeConfig, &PortConfig)> {
        self.bridges
            .iter()
            .find_map(|b| b.port(name).map(|p| (b, p)))
    }
}

/// How datapath threads wait for frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DatapathMode {
    /// Busy-poll the ports.
    Poll,
    /// Sleep until a port signals readiness.
    Interrupt,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DatapathConfig {
    pub mode: DatapathMode,
    /// Number of datapath threads, at least 1.
    pub threads: usize,
    /// CPU of each thread, when pinned; as many entries as `threads`.
    pub cpus: Option<Vec<usize>>,
    /// Interrupt mode: how long a thread that has just switched a burst (short of a full batch)
    /// waits before it polls again, so that the next poll finds several frames instead of one.
    /// Fewer wakeups and transmit kicks per frame, for at most this much added latency.
    pub coalesce_us: u32,
    /// MAC learning aging, seconds (at least 1).
    pub fdb_aging: u32,
    /// MAC learning table size (at least 1).
    pub fdb_max: u32,
    /// Connection tracking limit across all zones (at least 1).
    pub ct_max: u32,
    /// Connection limits of single zones (each at least 1).
    pub ct_zone_limits: BTreeMap<u16, u32>,
}

impl Default for DatapathConfig {
    fn default() -> Self {
        DatapathConfig {
            mode: DatapathMode::Poll,
            threads: 1,
            cpus: None,
            coalesce_us: DEFAULT_COALESCE_US,
            fdb_aging: DEFAULT_FDB_AGING,
            fdb_max: DEFAULT_FDB_MAX,
            ct_max: DEFAULT_CT_MAX,
            ct_zone_limits: BTreeMap::new(),
        }
    }
}

/// What a bridge does before any flow is loaded, as in Open vSwitch without a controller:
/// `standalone` switches like a learning bridge (`actions=NORMAL`), `secure` drops everything.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailMode {
    Standalone,
    Secure,
}

/// One Geneve option mapped to a `tun_metadataN` field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TlvMapping {
    pub class: u16,
    /// The option type (the `type` key).
    pub kind: u8,
    /// Option data length in bytes: a multiple of 4 in 4..=124.
    pub len: u8,
    /// `N` of `tun_metadataN`, 0..=63.
    pub field: u8,
}

impl TlvMapping {
    /// The mapping OVN installs: its logical port metadata option in `tun_metadata0`.
    pub const OVN: TlvMapping = TlvMapping {
        class: OVN_GENEVE_CLASS,
        kind: OVN_GENEVE_TYPE,
        len: 4,
        field: 0,
    };
}

#[derive(Clone, Debug, PartialEq)]
pub struct BridgeConfig {
    pub name: String,
    pub fail_mode: FailMode,
    /// Flow file to load at start, resolved against the configuration's directory; it existed
    /// when the configuration was loaded.
    pub flows: Option<PathBuf>,
    /// Geneve option mappings; [`TlvMapping::OVN`] unless the file says otherwise.
    pub tlv_map: Vec<TlvMapping>,
    /// Ports sorted by OpenFlow number; the LOCAL port (0xfffe) is always present and last.
    pub ports: Vec<PortConfig>,
}

impl BridgeConfig {
    pub fn port(&self, name: &str) -> Option<&PortConfig> {
        self.ports.iter().find(|p| p.name == name)
    }

    pub fn port_by_ofport(&self, ofport: u32) -> Option<&PortConfig> {
        self.ports.iter().find(|p| p.ofport == ofport)
    }

    /// The bridge's LOCAL port; always present in a configuration from [`load`] or [`parse`]
    /// (`None` only for a hand-built `BridgeConfig` without one).
    pub fn local_port(&self) -> Option<&PortConfig> {
        self.ports.iter().find(|p| p.ofport == OFPP_LOCAL)
    }

    /// The names flow files may use for this bridge's ports.
    pub fn port_names(&self) -> pipeline::flow::PortNames {
        let mut names = pipeline::flow::PortNames::new();
        for p in &self.ports {
            names.insert(&p.name, p.ofport);
        }
        names
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct PortConfig {
    pub name: String,
    /// Final OpenFlow port number: chosen in the file, assigned, or [`OFPP_LOCAL`].
    pub ofport: u32,
    pub kind: PortType,
    pub vlan: PortVlan,
    /// Leave this port out of floods.
    pub no_flood: bool,
    /// True only for a LOCAL port the file did not declare (see the module docs).
    pub implicit: bool,
}

impl PortConfig {
    pub fn is_local(&self) -> bool {
        self.ofport == OFPP_LOCAL
    }
}

/// A port's type and the settings only that type has.
#[derive(Clone, Debug, PartialEq)]
pub enum PortType {
    /// An AF_XDP socket on a kernel interface.
    Afxdp {
        ifname: String,
        xdp_mode: XdpMode,
        /// Number of queues (one socket each), at least 1.
        queues: u32,
        /// MTU to set on the interface.
        mtu: Option<u32>,
        /// UMEM chunks per queue (a power of two): half receive, half transmit.
        frames: u32,
    },
    /// One end of a patch cable to a port of another bridge.
    Patch {
        peer: String,
    },
    /// A TAP device that gives the host stack a port.
    Internal {
        ifname: String,
        mtu: Option<u32>,
    },
    /// Frames read from and written to pcap files (at least one of them is set).
    Pcap {
        rx: Option<PathBuf>,
        tx: Option<PathBuf>,
    },
    Geneve(GeneveConfig),
    /// In-memory queues, for tests and replay.
    Memory,
}

impl PortType {
    /// The name the file uses for this type.
    pub fn type_name(&self) -> &'static str {
        match self {
            PortType::Afxdp { .. } => "afxdp",
            PortType::Patch { .. } => "patch",
            PortType::Internal { .. } => "internal",
            PortType::Pcap { .. } => "pcap",
            PortType::Geneve(_) => "geneve",
            PortType::Memory => "memory",
        }
    }
}

/// How an AF_XDP port attaches its XDP program.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XdpMode {
    /// Native if the driver supports it, else generic.
    Auto,
    Native,
    Generic,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GeneveConfig {
    pub remote_ip: Ipv4Addr,
    pub local_ip: Option<Ipv4Addr>,
    pub key: TunnelKey,
    /// Compute UDP checksums on encapsulation.
    pub csum: bool,
    pub dst_port: u16,
}

/// The VNI of a tunnel port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TunnelKey {
    /// Set by the flows (`set_field:...->tun_id`), and every VNI is received.
    Flow,
    /// A fixed 24-bit VNI.
    Vni(u32),
}

/// VLANs a trunk carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Trunks {
    All,
    /// Sorted, without duplicates, never empty.
    Only(Vec<u16>),
}

impl Trunks {
    pub fn contains(&self, vid: u16) -> bool {
        match self {
            Trunks::All => vid <= 4095,
            Trunks::Only(v) => v.binary_search(&vid).is_ok(),
        }
    }
}

/// A port's VLAN behaviour, with Open vSwitch's Port table semantics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PortVlan {
    /// Untagged frames in the given VLAN; tagged frames are dropped on input.
    Access(u16),
    /// Tagged frames in the listed VLANs (untagged ones count as VLAN 0).
    Trunk(Trunks),
    /// Like a trunk, and untagged input belongs to `tag`; `tag` leaves tagged.
    NativeTagged { tag: u16, trunks: Trunks },
    /// Like a trunk, and untagged input belongs to `tag`; `tag` leaves untagged.
    NativeUntagged { tag: u16, trunks: Trunks },
}

impl Default for PortVlan {
    fn default() -> Self {
        PortVlan::Trunk(Trunks::All)
    }
}

/// Reads and validates a configuration file. Relative paths inside it are resolved against the
/// file's directory.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let file_name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        file: file_name.clone(),
        source,
    })?;
    let base_dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    parse(&text, &base_dir, &file_name)
}

/// Validates a configuration held in memory. `base_dir` resolves relative paths; `file_name`
/// only names the file in errors.
pub fn parse(text: &str, base_dir: &Path, file_name: &str) -> Result<Config, ConfigError> {
    let cx = Cx {
        file: file_name,
        text,
        base_dir,
    };
    let root: Spanned<Node> = toml::from_str(text).map_err(|e| cx.toml_error(&e))?;
    cx.config(&root)
}

// ---------------------------------------------------------------------------------------------
// The spanned document tree.
//
// The file is first read into a tree that keeps the byte span of every key and value; all type
// checks happen afterwards, by hand, so that every error can name its table, key and position.
// Deserializing straight into the typed structs would leave type errors without the bridge and
// port they belong to.

#[derive(Debug)]
enum Node {
    Str(String),
    Int(i64),
    Float,
    Bool(bool),
    Array(Vec<Spanned<Node>>),
    Table(Vec<(Spanned<String>, Spanned<Node>)>),
}

impl Node {
    fn kind(&self) -> &'static str {
        match self {
            Node::Str(_) => "a string",
            Node::Int(_) => "an integer",
            Node::Float => "a float",
            Node::Bool(_) => "a boolean",
            Node::Array(_) => "an array",
            Node::Table(_) => "a table",
        }
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a TOML value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Node, E> {
        Ok(Node::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Node, E> {
        Ok(Node::Int(v))
    }
    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Node, E> {
        i64::try_from(v)
            .map(Node::Int)
            .map_err(|_| E::custom("integer out of range"))
    }
    fn visit_f64<E>(self, _: f64) -> Result<Node, E> {
        Ok(Node::Float)
    }
    fn visit_str<E>(self, v: &str) -> Result<Node, E> {
        Ok(Node::Str(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<Node, E> {
        Ok(Node::Str(v))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Node::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key::<Spanned<String>>()? {
            let value = map.next_value()?;
            entries.push((key, value));
        }
        Ok(Node::Table(entries))
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Node, D::Error> {
        d.deserialize_any(NodeVisitor)
    }
}

/// A key with its value, as found in a table.
type Entry<'a> = (&'a Spanned<String>, &'a Spanned<Node>);
/// The entries of a table, in file order.
type Table = [(Spanned<String>, Spanned<Node>)];

// ---------------------------------------------------------------------------------------------
// Checking.

struct Cx<'a> {
    file: &'a str,
    text: &'a str,
    base_dir: &'a Path,
}

/// A port as read, before the checks that need the whole switch.
struct RawPort {
    port: PortConfig,
    name_at: usize,
    ofport_at: Option<usize>,
    peer_at: usize,
    /// Where the interface name comes from (`ifname`, else `name`), for afxdp and internal.
    ifname_at: usize,
    tx_pcap_at: usize,
    /// Where the `type` value is (for errors about the LOCAL port's type).
    type_at: usize,
    table_at: usize,
}

struct RawBridge {
    bridge: BridgeConfig,
    name_at: usize,
    table_at: usize,
    ports: Vec<RawPort>,
}

const ROOT_KEYS: &[&str] = &["datapath", "bridge"];
const DATAPATH_KEYS: &[&str] = &[
    "mode",
    "threads",
    "cpus",
    "coalesce_us",
    "fdb_aging",
    "fdb_max",
    "ct_max",
    "ct_zone_limits",
];
const BRIDGE_KEYS: &[&str] = &["name", "fail_mode", "flows", "tlv_map", "port"];
const TLV_KEYS: &[&str] = &["class", "type", "len", "field"];
const PORT_COMMON_KEYS: &[&str] = &[
    "name",
    "type",
    "ofport",
    "tag",
    "trunks",
    "vlan_mode",
    "no_flood",
];
/// Keys of each port type beyond the common ones.
const PORT_TYPE_KEYS: &[(&str, &[&str])] = &[
    ("afxdp", &["ifname", "xdp_mode", "queues", "mtu", "frames"]),
    ("patch", &["peer"]),
    ("internal", &["ifname", "mtu"]),
    ("pcap", &["rx_pcap", "tx_pcap"]),
    (
        "geneve",
        &["remote_ip", "local_ip", "key", "csum", "dst_port"],
    ),
    ("memory", &[]),
];

impl<'a> Cx<'a> {
    fn err_at(&self, offset: usize, message: String) -> ConfigError {
        let offset = offset.min(self.text.len());
        // Spans from the parser always fall on character boundaries; guard anyway so a bad span
        // cannot panic the position computation.
        let mut offset = offset;
        while !self.text.is_char_boundary(offset) {
            offset -= 1;
        }
        let before = &self.text[..offset];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let col = before[line_start..].chars().count() + 1;
        ConfigError::Invalid {
            file: self.file.to_string(),
            line,
            col,
            message,
        }
    }

    fn toml_error(&self, e: &toml::de::Error) -> ConfigError {
        let at = e.span().map_or(0, |s| s.start);
        // The tree keeps only spanned keys, so a date-time (which the parser hands over as a
        // private one-key table) surfaces as a key error; say what it really is.
        let message = if e.message().contains("$__toml_private_datetime") {
            "date-time values are not used in this file".to_string()
        } else {
            e.message().trim_end().to_string()
        };
        self.err_at(at, message)
    }

    /// An error about one key's value.
    fn key_err(&self, ctx: &str, key: &Spanned<String>, at: usize, msg: &str) -> ConfigError {
        let prefix = if ctx.is_empty() {
            String::new()
        } else {
            format!("{ctx}: ")
        };
        self.err_at(at, format!("{prefix}key \"{}\": {msg}", key.get_ref()))
    }

    fn val_err(&self, ctx: &str, (k, v): Entry, msg: &str) -> ConfigError {
        self.key_err(ctx, k, v.span().start, msg)
    }

    fn table<'n>(&self, ctx: &str, e: Entry<'n>) -> Result<&'n Table, ConfigError> {
        match e.1.get_ref() {
            Node::Table(t) => Ok(t),
            other => {
                Err(self.val_err(ctx, e, &format!("expected a table, found {}", other.kind())))
            }
        }
    }

    fn array<'n>(&self, ctx: &str, e: Entry<'n>) -> Result<&'n [Spanned<Node>], ConfigError> {
        match e.1.get_ref() {
            Node::Array(a) => Ok(a),
            other => Err(self.val_err(
                ctx,
                e,
                &format!("expected an array, found {}", other.kind()),
            )),
        }
    }

    fn string<'n>(&self, ctx: &str, e: Entry<'n>) -> Result<&'n str, ConfigError> {
        match e.1.get_ref() {
            Node::Str(s) => Ok(s),
            other => Err(self.val_err(
                ctx,
                e,
                &format!("expected a string, found {}", other.kind()),
            )),
        }
    }

    fn boolean(&self, ctx: &str, e: Entry) -> Result<bool, ConfigError> {
        match e.1.get_ref() {
            Node::Bool(b) => Ok(*b),
            other => Err(self.val_err(
                ctx,
                e,
                &format!("expected a boolean, found {}", other.kind()),
            )),
        }
    }

    /// An integer in `lo..=hi`.
    fn int(&self, ctx: &str, e: Entry, lo: i64, hi: i64) -> Result<i64, ConfigError> {
        self.int_node(ctx, e.0, e.1, lo, hi)
    }

    fn int_node(
        &self,
        ctx: &str,
        key: &Spanned<String>,
        v: &Spanned<Node>,
        lo: i64,
        hi: i64,
    ) -> Result<i64, ConfigError> {
        match v.get_ref() {
            Node::Int(i) if (lo..=hi).contains(i) => Ok(*i),
            Node::Int(i) => Err(self.key_err(
                ctx,
                key,
                v.span().start,
                &format!("{i} is out of range {lo}..={hi}"),
            )),
            other => Err(self.key_err(
                ctx,
                key,
                v.span().start,
                &format!("expected an integer, found {}", other.kind()),
            )),
        }
    }

    fn choice<T: Copy>(
        &self,
        ctx: &str,
        e: Entry,
        options: &[(&str, T)],
    ) -> Result<T, ConfigError> {
        let expected = || {
            let names: Vec<&str> = options.iter().map(|(n, _)| *n).collect();
            format!("expected one of {}", names.join(", "))
        };
        match e.1.get_ref() {
            Node::Str(s) => options
                .iter()
                .find(|(n, _)| n == s)
                .map(|(_, v)| *v)
                .ok_or_else(|| self.val_err(ctx, e, &expected())),
            other => Err(self.val_err(ctx, e, &format!("{}, found {}", expected(), other.kind()))),
        }
    }

    fn ipv4(&self, ctx: &str, e: Entry) -> Result<Ipv4Addr, ConfigError> {
        let s = self.string(ctx, e)?;
        s.parse()
            .map_err(|_| self.val_err(ctx, e, &format!("\"{s}\" is not an IPv4 address")))
    }

    /// A path resolved against the configuration's directory.
    fn path(&self, ctx: &str, e: Entry) -> Result<PathBuf, ConfigError> {
        let s = self.string(ctx, e)?;
        if s.is_empty() {
            return Err(self.val_err(ctx, e, "the path is empty"));
        }
        Ok(self.base_dir.join(s))
    }

    fn existing_file(&self, ctx: &str, e: Entry) -> Result<PathBuf, ConfigError> {
        let p = self.path(ctx, e)?;
        if !p.is_file() {
            return Err(self.val_err(
                ctx,
                e,
                &format!("{} does not exist or is not a file", p.display()),
            ));
        }
        Ok(p)
    }

    /// Rejects keys outside `allowed` (for ports, naming the port types a misplaced key belongs
    /// to); returns the entries by key. The parser already rejects duplicated keys.
    fn keys<'n>(
        &self,
        ctx: &str,
        table: &'n Table,
        allowed: &[&str],
        port_type: Option<&str>,
    ) -> Result<HashMap<&'n str, Entry<'n>>, ConfigError> {
        let mut out = HashMap::new();
        for (k, v) in table {
            let name = k.get_ref().as_str();
            if !allowed.contains(&name) {
                let owners: Vec<&str> = PORT_TYPE_KEYS
                    .iter()
                    .filter(|(_, keys)| keys.contains(&name))
                    .map(|(t, _)| *t)
                    .collect();
                let msg = match port_type {
                    Some(t) if !owners.is_empty() => format!(
                        "does not apply to {t} ports (it is a key of {} ports)",
                        owners.join(", ")
                    ),
                    _ => format!("unknown key; expected one of {}", allowed.join(", ")),
                };
                return Err(self.key_err(ctx, k, k.span().start, &msg));
            }
            out.insert(name, (k, v));
        }
        Ok(out)
    }

    fn config(&self, root: &Spanned<Node>) -> Result<Config, ConfigError> {
        let Node::Table(root_table) = root.get_ref() else {
            return Err(self.err_at(0, "expected a table at the top level".into()));
        };
        let keys = self.keys("", root_table, ROOT_KEYS, None)?;
        let datapath = match keys.get("datapath") {
            Some(&e) => self.datapath(e)?,
            None => DatapathConfig::default(),
        };
        let Some(&bridges_entry) = keys.get("bridge") else {
            return Err(self.err_at(0, "no bridge: add at least one [[bridge]] table".into()));
        };
        let bridge_nodes = match bridges_entry.1.get_ref() {
            Node::Array(a) => a,
            other => {
                return Err(self.val_err(
                    "",
                    bridges_entry,
                    &format!(
                        "expected an array of tables ([[bridge]]), found {}",
                        other.kind()
                    ),
                ))
            }
        };
        let mut bridges = Vec::new();
        for (i, node) in bridge_nodes.iter().enumerate() {
            bridges.push(self.bridge(i, bridges_entry.0, node)?);
        }
        if bridges.is_empty() {
            return Err(self.val_err(
                "",
                bridges_entry,
                "no bridge: add at least one [[bridge]] table",
            ));
        }
        self.check_switch(&mut bridges)?;
        Ok(Config {
            base_dir: self.base_dir.to_path_buf(),
            datapath,
            bridges: bridges.into_iter().map(|b| b.bridge).collect(),
        })
    }

    fn datapath(&self, e: Entry) -> Result<DatapathConfig, ConfigError> {
        let ctx = "datapath";
        let table = self.table("", e)?;
        let keys = self.keys(ctx, table, DATAPATH_KEYS, None)?;
        let mut d = DatapathConfig::default();
        if let Some(&e) = keys.get("mode") {
            d.mode = self.choice(
                ctx,
                e,
                &[
                    ("poll", DatapathMode::Poll),
                    ("interrupt", DatapathMode::Interrupt),
                ],
            )?;
        }
        if let Some(&e) = keys.get("threads") {
            d.threads = self.int(ctx, e, 1, 1024)? as usize;
        }
        if let Some(&e) = keys.get("cpus") {
            let items = self.array(ctx, e)?;
            let mut cpus = Vec::new();
            for item in items {
                cpus.push(self.int_node(ctx, e.0, item, 0, 65535)? as usize);
            }
            if cpus.len() != d.threads {
                return Err(self.val_err(
                    ctx,
                    e,
                    &format!(
                        "lists {} CPUs for {} threads; give one CPU per thread",
                        cpus.len(),
                        d.threads
                    ),
                ));
            }
            d.cpus = Some(cpus);
        }
        if let Some(&e) = keys.get("coalesce_us") {
            d.coalesce_us = self.int(ctx, e, 0, MAX_COALESCE_US)? as u32;
        }
        if let Some(&e) = keys.get("fdb_aging") {
            d.fdb_aging = self.int(ctx, e, 1, i64::from(u32::MAX))? as u32;
        }
        if let Some(&e) = keys.get("fdb_max") {
            d.fdb_max = self.int(ctx, e, 1, i64::from(u32::MAX))? as u32;
        }
        if let Some(&e) = keys.get("ct_max") {
            d.ct_max = self.int(ctx, e, 1, i64::from(u32::MAX))? as u32;
        }
        if let Some(&e) = keys.get("ct_zone_limits") {
            for (zone, limit) in self.table(ctx, e)? {
                let at = zone.span().start;
                let z: u16 = zone.get_ref().parse().map_err(|_| {
                    self.key_err(
                        ctx,
                        e.0,
                        at,
                        &format!("\"{}\" is not a zone number (0..=65535)", zone.get_ref()),
                    )
                })?;
                let l = self.int_node(ctx, e.0, limit, 1, i64::from(u32::MAX))?;
                d.ct_zone_limits.insert(z, l as u32);
            }
        }
        Ok(d)
    }

    fn bridge(
        &self,
        index: usize,
        key: &Spanned<String>,
        node: &Spanned<Node>,
    ) -> Result<RawBridge, ConfigError> {
        let table_at = node.span().start;
        let Node::Table(table) = node.get_ref() else {
            return Err(self.key_err(
                "",
                key,
                table_at,
                &format!("expected a table, found {}", node.get_ref().kind()),
            ));
        };
        // The name comes first so that every later message names the bridge.
        let anon = format!("bridge #{}", index + 1);
        let Some((nk, nv)) = table.iter().find(|(k, _)| k.get_ref() == "name") else {
            return Err(self.err_at(table_at, format!("{anon}: missing key \"name\"")));
        };
        let name_e = (nk, nv);
        let name = self.string(&anon, name_e)?.to_string();
        self.check_ifname(&anon, name_e, &name)?;
        let ctx = format!("bridge \"{name}\"");
        let keys = self.keys(&ctx, table, BRIDGE_KEYS, None)?;
        let mut bridge = BridgeConfig {
            name,
            fail_mode: FailMode::Standalone,
            flows: None,
            tlv_map: vec![TlvMapping::OVN],
            ports: Vec::new(),
        };
        if let Some(&e) = keys.get("fail_mode") {
            bridge.fail_mode = self.choice(
                &ctx,
                e,
                &[
                    ("standalone", FailMode::Standalone),
                    ("secure", FailMode::Secure),
                ],
            )?;
        }
        if let Some(&e) = keys.get("flows") {
            bridge.flows = Some(self.existing_file(&ctx, e)?);
        }
        if let Some(&e) = keys.get("tlv_map") {
            bridge.tlv_map = self.tlv_map(&ctx, e)?;
        }
        let mut ports = Vec::new();
        if let Some(&e) = keys.get("port") {
            for (i, node) in self.array(&ctx, e)?.iter().enumerate() {
                ports.push(self.port(&bridge.name, i, e.0, node)?);
            }
        }
        Ok(RawBridge {
            bridge,
            name_at: name_e.1.span().start,
            table_at,
            ports,
        })
    }

    fn tlv_map(&self, ctx: &str, e: Entry) -> Result<Vec<TlvMapping>, ConfigError> {
        let mut out: Vec<TlvMapping> = Vec::new();
        for (i, item) in self.array(ctx, e)?.iter().enumerate() {
            let ictx = format!("{ctx} tlv_map entry {}", i + 1);
            let Node::Table(t) = item.get_ref() else {
                return Err(self.key_err(
                    ctx,
                    e.0,
                    item.span().start,
                    &format!(
                        "expected tables like {{ class = 0x0102, type = 0x80, len = 4, field = \"tun_metadata0\" }}, found {}",
                        item.get_ref().kind()
                    ),
                ));
            };
            let keys = self.keys(&ictx, t, TLV_KEYS, None)?;
            let get = |k: &str| {
                keys.get(k).copied().ok_or_else(|| {
                    self.err_at(item.span().start, format!("{ictx}: missing key \"{k}\""))
                })
            };
            let class = self.int(&ictx, get("class")?, 0, 0xffff)? as u16;
            let kind = self.int(&ictx, get("type")?, 0, 0xff)? as u8;
            let len_e = get("len")?;
            let len = self.int(&ictx, len_e, 4, 124)? as u8;
            if len & 3 != 0 {
                return Err(self.val_err(&ictx, len_e, "must be a multiple of 4"));
            }
            let field_e = get("field")?;
            let fname = self.string(&ictx, field_e)?;
            let field = fname
                .strip_prefix("tun_metadata")
                .filter(|n| !n.is_empty() && !n.starts_with('+') && n.len() <= 2)
                .and_then(|n| n.parse::<u8>().ok())
                .filter(|n| *n <= 63)
                .ok_or_else(|| {
                    self.val_err(&ictx, field_e, "expected tun_metadata0..tun_metadata63")
                })?;
            let m = TlvMapping {
                class,
                kind,
                len,
                field,
            };
            if out.iter().any(|o| o.field == field) {
                return Err(self.val_err(
                    &ictx,
                    field_e,
                    &format!("tun_metadata{field} is already mapped by an earlier entry"),
                ));
            }
            if out.iter().any(|o| o.class == class && o.kind == kind) {
                return Err(self.err_at(
                    item.span().start,
                    format!(
                        "{ictx}: option class {class:#06x} type {kind:#04x} is already mapped by an earlier entry"
                    ),
                ));
            }
            out.push(m);
        }
        Ok(out)
    }

    /// A Linux interface name: what `ip link` accepts.
    fn check_ifname(&self, ctx: &str, e: Entry, name: &str) -> Result<(), ConfigError> {
        let bad = name.is_empty()
            || name.len() > MAX_IFNAME
            || name == "."
            || name == ".."
            || name
                .chars()
                .any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control());
        if bad {
            return Err(self.val_err(
                ctx,
                e,
                &format!(
                    "\"{name}\" is not a valid interface name (1 to {MAX_IFNAME} bytes, no '/', ':' or spaces)"
                ),
            ));
        }
        Ok(())
    }

    fn port(
        &self,
        bridge: &str,
        index: usize,
        key: &Spanned<String>,
        node: &Spanned<Node>,
    ) -> Result<RawPort, ConfigError> {
        let table_at = node.span().start;
        let anon = format!("bridge \"{bridge}\" port #{}", index + 1);
        let Node::Table(table) = node.get_ref() else {
            return Err(self.key_err(
                &format!("bridge \"{bridge}\""),
                key,
                table_at,
                &format!("expected a table, found {}", node.get_ref().kind()),
            ));
        };
        // The name and type come first: every later message names the port, and the type
        // decides which keys are allowed.
        let find = |k: &str| table.iter().find(|(key, _)| key.get_ref() == k);
        let Some((nk, nv)) = find("name") else {
            return Err(self.err_at(table_at, format!("{anon}: missing key \"name\"")));
        };
        let name = self.string(&anon, (nk, nv))?.to_string();
        if name.is_empty() || name.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(self.val_err(
                &anon,
                (nk, nv),
                &format!("\"{name}\" is not a valid port name (non-empty, no spaces)"),
            ));
        }
        let ctx = format!("bridge \"{bridge}\" port \"{name}\"");
        let Some((tk, tv)) = find("type") else {
            return Err(self.err_at(table_at, format!("{ctx}: missing key \"type\"")));
        };
        let type_names: Vec<(&str, &str)> = PORT_TYPE_KEYS.iter().map(|(t, _)| (*t, *t)).collect();
        let type_name = self.choice(&ctx, (tk, tv), &type_names)?;
        let type_keys = PORT_TYPE_KEYS
            .iter()
            .find(|(t, _)| *t == type_name)
            .map_or(&[][..], |(_, k)| k);
        let allowed: Vec<&str> = PORT_COMMON_KEYS.iter().chain(type_keys).copied().collect();
        let keys = self.keys(&ctx, table, &allowed, Some(type_name))?;
        let get = |k: &str| keys.get(k).copied();
        let missing = |k: &str| {
            self.err_at(
                table_at,
                format!("{ctx}: missing key \"{k}\" (required for {type_name} ports)"),
            )
        };

        let ofport = match get("ofport") {
            Some(e) => Some((self.int(&ctx, e, 1, i64::from(OFPORT_MAX))? as u32, e)),
            None => None,
        };
        let ifname_at = get("ifname").map_or(nv.span().start, |e| e.1.span().start);
        let ifname = |this: &Self| -> Result<String, ConfigError> {
            match get("ifname") {
                Some(e) => {
                    let s = this.string(&ctx, e)?;
                    this.check_ifname(&ctx, e, s)?;
                    Ok(s.to_string())
                }
                None => {
                    this.check_ifname(&ctx, (nk, nv), &name)?;
                    Ok(name.clone())
                }
            }
        };
        let mtu = |this: &Self| -> Result<Option<u32>, ConfigError> {
            get("mtu")
                .map(|e| this.int(&ctx, e, 68, 65535).map(|v| v as u32))
                .transpose()
        };
        let mut peer_at = 0;
        let kind = match type_name {
            "afxdp" => PortType::Afxdp {
                ifname: ifname(self)?,
                xdp_mode: match get("xdp_mode") {
                    Some(e) => self.choice(
                        &ctx,
                        e,
                        &[
                            ("auto", XdpMode::Auto),
                            ("native", XdpMode::Native),
                            ("generic", XdpMode::Generic),
                        ],
                    )?,
                    None => XdpMode::Auto,
                },
                queues: match get("queues") {
                    Some(e) => self.int(&ctx, e, 1, 256)? as u32,
                    None => 1,
                },
                mtu: mtu(self)?,
                frames: match get("frames") {
                    Some(e) => {
                        let n = self.int(&ctx, e, MIN_FRAMES, MAX_FRAMES)?;
                        if n.count_ones() != 1 {
                            return Err(self.key_err(
                                &ctx,
                                e.0,
                                e.1.span().start,
                                &format!("{n} is not a power of two"),
                            ));
                        }
                        n as u32
                    }
                    None => DEFAULT_FRAMES,
                },
            },
            "internal" => PortType::Internal {
                ifname: ifname(self)?,
                mtu: mtu(self)?,
            },
            "patch" => {
                let e = get("peer").ok_or_else(|| missing("peer"))?;
                peer_at = e.1.span().start;
                PortType::Patch {
                    peer: self.string(&ctx, e)?.to_string(),
                }
            }
            "pcap" => {
                let rx = get("rx_pcap")
                    .map(|e| self.existing_file(&ctx, e))
                    .transpose()?;
                let tx = match get("tx_pcap") {
                    Some(e) => {
                        let p = self.path(&ctx, e)?;
                        // The file is created at start; its directory must already be there.
                        let dir_ok = match p.parent() {
                            Some(d) => d.as_os_str().is_empty() || d.is_dir(),
                            None => true,
                        };
                        if !dir_ok || p.is_dir() {
                            return Err(self.val_err(
                                &ctx,
                                e,
                                &format!("cannot create {}: no such directory", p.display()),
                            ));
                        }
                        Some(p)
                    }
                    None => None,
                };
                if rx.is_none() && tx.is_none() {
                    return Err(self.err_at(
                        table_at,
                        format!("{ctx}: a pcap port needs rx_pcap, tx_pcap or both"),
                    ));
                }
                PortType::Pcap { rx, tx }
            }
            "geneve" => {
                let remote = get("remote_ip").ok_or_else(|| missing("remote_ip"))?;
                let key_e = get("key").ok_or_else(|| missing("key"))?;
                let key = match key_e.1.get_ref() {
                    Node::Str(s) if s == "flow" => TunnelKey::Flow,
                    Node::Int(_) => TunnelKey::Vni(self.int(&ctx, key_e, 0, 0xff_ffff)? as u32),
                    other => {
                        return Err(self.val_err(
                            &ctx,
                            key_e,
                            &format!(
                                "expected \"flow\" or a VNI (0..=16777215), found {}",
                                match other {
                                    Node::Str(s) => format!("\"{s}\""),
                                    o => o.kind().to_string(),
                                }
                            ),
                        ))
                    }
                };
                PortType::Geneve(GeneveConfig {
                    remote_ip: self.ipv4(&ctx, remote)?,
                    local_ip: get("local_ip").map(|e| self.ipv4(&ctx, e)).transpose()?,
                    key,
                    csum: get("csum")
                        .map(|e| self.boolean(&ctx, e))
                        .transpose()?
                        .unwrap_or(false),
                    dst_port: match get("dst_port") {
                        Some(e) => self.int(&ctx, e, 1, 65535)? as u16,
                        None => GENEVE_PORT,
                    },
                })
            }
            _ => PortType::Memory,
        };
        let vlan = self.vlan(&ctx, &keys, table_at)?;
        let no_flood = get("no_flood")
            .map(|e| self.boolean(&ctx, e))
            .transpose()?
            .unwrap_or(false);
        Ok(RawPort {
            port: PortConfig {
                name,
                ofport: ofport.map_or(0, |(n, _)| n),
                kind,
                vlan,
                no_flood,
                implicit: false,
            },
            name_at: nv.span().start,
            ofport_at: ofport.map(|(_, e)| e.1.span().start),
            peer_at,
            ifname_at,
            tx_pcap_at: get("tx_pcap").map_or(0, |e| e.1.span().start),
            type_at: tv.span().start,
            table_at,
        })
    }

    fn vlan(
        &self,
        ctx: &str,
        keys: &HashMap<&str, Entry>,
        table_at: usize,
    ) -> Result<PortVlan, ConfigError> {
        let tag_e = keys.get("tag").copied();
        let tag = tag_e
            .map(|e| self.int(ctx, e, 0, 4095).map(|v| v as u16))
            .transpose()?;
        let trunks_e = keys.get("trunks").copied();
        let trunks = match trunks_e {
            Some(e) => {
                let items = self.array(ctx, e)?;
                if items.is_empty() {
                    return Err(self.val_err(
                        ctx,
                        e,
                        "lists no VLAN; leave the key out to trunk every VLAN",
                    ));
                }
                let mut v = Vec::new();
                for item in items {
                    v.push(self.int_node(ctx, e.0, item, 0, 4095)? as u16);
                }
                v.sort_unstable();
                v.dedup();
                Some(Trunks::Only(v))
            }
            None => None,
        };
        let Some(mode_e) = keys.get("vlan_mode").copied() else {
            return Ok(match (tag, trunks) {
                (Some(t), None) => PortVlan::Access(t),
                (None, Some(tr)) => PortVlan::Trunk(tr),
                (Some(tag), Some(trunks)) => PortVlan::NativeUntagged { tag, trunks },
                (None, None) => PortVlan::Trunk(Trunks::All),
            });
        };
        #[derive(Clone, Copy)]
        enum M {
            Access,
            Trunk,
            NativeTagged,
            NativeUntagged,
        }
        let mode = self.choice(
            ctx,
            mode_e,
            &[
                ("access", M::Access),
                ("trunk", M::Trunk),
                ("native-tagged", M::NativeTagged),
                ("native-untagged", M::NativeUntagged),
            ],
        )?;
        let need_tag = |mode: &str| {
            tag.ok_or_else(|| {
                self.err_at(
                    table_at,
                    format!("{ctx}: vlan_mode \"{mode}\" needs key \"tag\""),
                )
            })
        };
        let trunks = trunks.unwrap_or(Trunks::All);
        Ok(match mode {
            M::Access => {
                if let Some(e) = trunks_e {
                    return Err(self.val_err(ctx, e, "an access port carries no trunks"));
                }
                PortVlan::Access(need_tag("access")?)
            }
            M::Trunk => {
                if let Some(e) = tag_e {
                    return Err(self.val_err(
                        ctx,
                        e,
                        "a trunk port has no tag (use a native vlan_mode)",
                    ));
                }
                PortVlan::Trunk(trunks)
            }
            M::NativeTagged => PortVlan::NativeTagged {
                tag: need_tag("native-tagged")?,
                trunks,
            },
            M::NativeUntagged => PortVlan::NativeUntagged {
                tag: need_tag("native-untagged")?,
                trunks,
            },
        })
    }

    /// Checks that need every bridge: names, OpenFlow numbers, LOCAL ports, patch pairs,
    /// tunnels; then assigns free OpenFlow numbers and sorts each bridge's ports.
    fn check_switch(&self, bridges: &mut [RawBridge]) -> Result<(), ConfigError> {
        // Bridge names, and port names across the whole switch (a bridge's name is also its
        // LOCAL port's name).
        let mut seen_bridge: HashMap<&str, usize> = HashMap::new();
        for b in bridges.iter() {
            if let Some(&first) = seen_bridge.get(b.bridge.name.as_str()) {
                return Err(self.err_at(
                    b.name_at,
                    format!(
                        "bridge \"{}\": another bridge has this name (line {})",
                        b.bridge.name,
                        self.line_of(first)
                    ),
                ));
            }
            seen_bridge.insert(&b.bridge.name, b.name_at);
        }
        let mut seen_port: HashMap<&str, (usize, &str)> = HashMap::new();
        for b in bridges.iter() {
            for p in &b.ports {
                let ctx = format!("bridge \"{}\" port \"{}\"", b.bridge.name, p.port.name);
                if let Some(&(first, first_bridge)) = seen_port.get(p.port.name.as_str()) {
                    return Err(self.err_at(
                        p.name_at,
                        format!(
                            "{ctx}: port names must be unique across the switch; bridge \"{first_bridge}\" has one at line {}",
                            self.line_of(first)
                        ),
                    ));
                }
                if p.port.name != b.bridge.name && seen_bridge.contains_key(p.port.name.as_str()) {
                    return Err(self.err_at(
                        p.name_at,
                        format!(
                            "{ctx}: the name belongs to bridge \"{}\"'s LOCAL port",
                            p.port.name
                        ),
                    ));
                }
                seen_port.insert(&p.port.name, (p.name_at, &b.bridge.name));
            }
        }

        // LOCAL ports.
        for b in bridges.iter_mut() {
            let mut has_local = false;
            for p in b.ports.iter_mut() {
                if p.port.name != b.bridge.name {
                    continue;
                }
                let ctx = format!("bridge \"{}\" port \"{}\"", b.bridge.name, p.port.name);
                if !matches!(p.port.kind, PortType::Internal { .. }) {
                    return Err(self.err_at(
                        p.type_at,
                        format!(
                            "{ctx}: a port named like its bridge is the bridge's LOCAL port and must have type \"internal\""
                        ),
                    ));
                }
                if let Some(at) = p.ofport_at {
                    return Err(self.err_at(
                        at,
                        format!("{ctx}: key \"ofport\": the LOCAL port's number is always 65534 (LOCAL); remove the key"),
                    ));
                }
                p.port.ofport = OFPP_LOCAL;
                has_local = true;
            }
            if !has_local {
                b.ports.push(RawPort {
                    port: PortConfig {
                        name: b.bridge.name.clone(),
                        ofport: OFPP_LOCAL,
                        kind: PortType::Internal {
                            ifname: b.bridge.name.clone(),
                            mtu: None,
                        },
                        vlan: PortVlan::default(),
                        no_flood: false,
                        implicit: true,
                    },
                    name_at: b.table_at,
                    ofport_at: None,
                    peer_at: 0,
                    ifname_at: b.table_at,
                    tx_pcap_at: 0,
                    type_at: b.table_at,
                    table_at: b.table_at,
                });
            }
        }

        // Chosen OpenFlow numbers are unique within a bridge; the others take the lowest free
        // numbers from 1, in file order.
        for b in bridges.iter_mut() {
            let mut taken: HashMap<u32, usize> = HashMap::new();
            for p in &b.ports {
                let Some(at) = p.ofport_at else { continue };
                if let Some(&first) = taken.get(&p.port.ofport) {
                    return Err(self.err_at(
                        at,
                        format!(
                            "bridge \"{}\" port \"{}\": key \"ofport\": {} is already used in this bridge (line {})",
                            b.bridge.name,
                            p.port.name,
                            p.port.ofport,
                            self.line_of(first)
                        ),
                    ));
                }
                taken.insert(p.port.ofport, at);
            }
            let mut next = 1;
            for p in b.ports.iter_mut() {
                if p.ofport_at.is_some() || p.port.ofport == OFPP_LOCAL {
                    continue;
                }
                while taken.contains_key(&next) {
                    next += 1;
                }
                if next > OFPORT_MAX {
                    return Err(self.err_at(
                        p.table_at,
                        format!(
                            "bridge \"{}\" port \"{}\": no free OpenFlow port number left",
                            b.bridge.name, p.port.name
                        ),
                    ));
                }
                p.port.ofport = next;
                taken.insert(next, p.table_at);
            }
        }

        // Patch ports pair up across two bridges.
        let where_is: HashMap<String, (usize, usize)> = bridges
            .iter()
            .enumerate()
            .flat_map(|(bi, b)| {
                b.ports
                    .iter()
                    .enumerate()
                    .map(move |(pi, p)| (p.port.name.clone(), (bi, pi)))
            })
            .collect();
        for (bi, b) in bridges.iter().enumerate() {
            for p in &b.ports {
                let PortType::Patch { peer } = &p.port.kind else {
                    continue;
                };
                let ctx = format!(
                    "bridge \"{}\" port \"{}\": key \"peer\"",
                    b.bridge.name, p.port.name
                );
                let Some(&(pbi, ppi)) = where_is.get(peer.as_str()) else {
                    return Err(
                        self.err_at(p.peer_at, format!("{ctx}: no port is named \"{peer}\""))
                    );
                };
                let other = &bridges[pbi].ports[ppi];
                let PortType::Patch { peer: back } = &other.port.kind else {
                    return Err(self.err_at(
                        p.peer_at,
                        format!(
                            "{ctx}: \"{peer}\" is a {} port, not a patch port",
                            other.port.kind.type_name()
                        ),
                    ));
                };
                if pbi == bi {
                    return Err(self.err_at(
                        p.peer_at,
                        format!(
                            "{ctx}: \"{peer}\" is in the same bridge; a patch cable joins two bridges"
                        ),
                    ));
                }
                if *back != p.port.name {
                    return Err(self.err_at(
                        p.peer_at,
                        format!(
                            "{ctx}: \"{peer}\" names \"{back}\" as its peer, not \"{}\"",
                            p.port.name
                        ),
                    ));
                }
            }
        }

        // Two tunnels of one bridge with the same endpoints and key could not tell their
        // received frames apart.
        for b in bridges.iter() {
            let mut tunnels: Vec<(&GeneveConfig, usize)> = Vec::new();
            for p in &b.ports {
                let PortType::Geneve(g) = &p.port.kind else {
                    continue;
                };
                let same = |o: &GeneveConfig| {
                    o.remote_ip == g.remote_ip
                        && o.local_ip == g.local_ip
                        && o.dst_port == g.dst_port
                        && o.key == g.key
                };
                if let Some((_, first)) = tunnels.iter().find(|(o, _)| same(o)) {
                    return Err(self.err_at(
                        p.table_at,
                        format!(
                            "bridge \"{}\" port \"{}\": another geneve port of this bridge (line {}) has the same remote_ip, local_ip, key and dst_port",
                            b.bridge.name,
                            p.port.name,
                            self.line_of(*first)
                        ),
                    ));
                }
                tunnels.push((g, p.table_at));
            }
        }

        // Each interface and each output capture belongs to one port. The implicit LOCAL
        // port is left out: it only gets an interface when declared.
        let mut ifnames: HashMap<&str, usize> = HashMap::new();
        let mut tx_files: HashMap<&Path, usize> = HashMap::new();
        for b in bridges.iter() {
            for p in b.ports.iter().filter(|p| !p.port.implicit) {
                let ctx = format!("bridge \"{}\" port \"{}\"", b.bridge.name, p.port.name);
                match &p.port.kind {
                    PortType::Afxdp { ifname, .. } | PortType::Internal { ifname, .. } => {
                        if let Some(&first) = ifnames.get(ifname.as_str()) {
                            return Err(self.err_at(
                                p.ifname_at,
                                format!(
                                    "{ctx}: interface \"{ifname}\" is already used by the port at line {}",
                                    self.line_of(first)
                                ),
                            ));
                        }
                        ifnames.insert(ifname, p.ifname_at);
                    }
                    PortType::Pcap { tx: Some(tx), .. } => {
                        if let Some(&first) = tx_files.get(tx.as_path()) {
                            return Err(self.err_at(
                                p.tx_pcap_at,
                                format!(
                                    "{ctx}: key \"tx_pcap\": {} is already written by the port at line {}",
                                    tx.display(),
                                    self.line_of(first)
                                ),
                            ));
                        }
                        tx_files.insert(tx, p.tx_pcap_at);
                    }
                    _ => {}
                }
            }
        }

        for b in bridges.iter_mut() {
            b.ports.sort_by_key(|p| p.port.ofport);
            b.bridge.ports = std::mem::take(&mut b.ports)
                .into_iter()
                .map(|p| p.port)
                .collect();
        }
        Ok(())
    }

    fn line_of(&self, offset: usize) -> usize {
        self.text[..offset.min(self.text.len())]
            .matches('\n')
            .count()
            + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A scratch directory removed on drop, so failing tests leave nothing behind.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> TempDir {
            static N: AtomicUsize = AtomicUsize::new(0);
            let p = std::env::temp_dir().join(format!(
                "xvs-config-test-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            std::fs::create_dir_all(&p).unwrap();
            TempDir(p)
        }

        fn write(&self, name: &str, text: &str) -> PathBuf {
            let p = self.0.join(name);
            std::fs::write(&p, text).unwrap();
            p
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// The scenario's gateway host: br0 (uplink, controller VM, patch to brAtlas) and brAtlas
    /// (VM tap, patch to br0, two geneve tunnels).
    const SCENARIO: &str = r#"
[datapath]
mode = "poll"
threads = 2
cpus = [0, 1]
coalesce_us = 20
fdb_aging = 300
fdb_max = 8192
ct_max = 3000000
ct_zone_limits = { 9 = 1000 }

[[bridge]]
name = "br0"

[[bridge.port]]
name = "eth1"
type = "afxdp"
ofport = 10
xdp_mode = "native"
queues = 2

[[bridge.port]]
name = "vnet0"
type = "afxdp"
ofport = 5

[[bridge.port]]
name = "patch-localnet-to-brAtlas"
type = "patch"
ofport = 14
peer = "patch-brAtlas-to-localnet"

[[bridge]]
name = "brAtlas"
fail_mode = "secure"
flows = "brAtlas.flows"

[[bridge.port]]
name = "tap2"
type = "afxdp"
ofport = 4
mtu = 9000

[[bridge.port]]
name = "patch-brAtlas-to-localnet"
type = "patch"
ofport = 1
peer = "patch-localnet-to-brAtlas"

[[bridge.port]]
name = "ovn-daf4b9-0"
type = "geneve"
remote_ip = "172.22.1.63"
local_ip = "172.22.1.61"
key = "flow"
csum = true

[[bridge.port]]
name = "ovn-ba3356-0"
type = "geneve"
remote_ip = "172.22.1.62"
key = "flow"
csum = true
"#;

    fn parse_in(dir: &TempDir, text: &str) -> Result<Config, ConfigError> {
        parse(text, &dir.0, "t.toml")
    }

    fn parse_ok(text: &str) -> Config {
        let dir = TempDir::new();
        match parse_in(&dir, text) {
            Ok(c) => c,
            Err(e) => panic!("unexpected error: {e}"),
        }
    }

    /// Parses a config expected to fail; returns (line, col, message).
    fn parse_err(text: &str) -> (usize, usize, String) {
        let dir = TempDir::new();
        dir.write("exists.flows", "actions=NORMAL\n");
        dir.write("in.pcap", "");
        match parse_in(&dir, text) {
            Ok(c) => panic!("expected an error, got {c:#?}"),
            Err(e) => {
                let (line, col) = e.position().expect("a positioned error");
                assert_eq!(
                    e.to_string(),
                    format!("t.toml:{line}:{col}: {}", e.message())
                );
                (line, col, e.message())
            }
        }
    }

    #[track_caller]
    fn assert_err(text: &str, line: usize, col: usize, needle: &str) {
        let (l, c, m) = parse_err(text);
        assert!(
            m.contains(needle),
            "message {m:?} does not contain {needle:?}"
        );
        assert_eq!((l, c), (line, col), "position of {m:?}");
    }

    const BR: &str = "[[bridge]]\nname = \"br0\"\n";

    #[test]
    fn scenario_config_loads_fully_resolved() {
        let dir = TempDir::new();
        let flows = dir.write("brAtlas.flows", "table=0,actions=drop\n");
        let path = dir.write("switch.toml", SCENARIO);
        let c = load(&path).unwrap();

        assert_eq!(c.base_dir, dir.0);
        assert_eq!(
            c.datapath,
            DatapathConfig {
                mode: DatapathMode::Poll,
                threads: 2,
                cpus: Some(vec![0, 1]),
                coalesce_us: 20,
                fdb_aging: 300,
                fdb_max: 8192,
                ct_max: 3_000_000,
                ct_zone_limits: BTreeMap::from([(9, 1000)]),
            }
        );
        assert_eq!(c.bridges.len(), 2);

        let br0 = &c.bridges[0];
        assert_eq!(br0.name, "br0");
        assert_eq!(br0.fail_mode, FailMode::Standalone);
        assert_eq!(br0.flows, None);
        assert_eq!(br0.tlv_map, vec![TlvMapping::OVN]);
        let numbers: Vec<(&str, u32)> = br0.ports.iter().map(|p| (&*p.name, p.ofport)).collect();
        assert_eq!(
            numbers,
            vec![
                ("vnet0", 5),
                ("eth1", 10),
                ("patch-localnet-to-brAtlas", 14),
                ("br0", OFPP_LOCAL)
            ]
        );
        let eth1 = br0.port("eth1").unwrap();
        assert_eq!(
            eth1.kind,
            PortType::Afxdp {
                ifname: "eth1".into(),
                xdp_mode: XdpMode::Native,
                queues: 2,
                mtu: None,
                frames: DEFAULT_FRAMES
            }
        );
        assert_eq!(eth1.vlan, PortVlan::Trunk(Trunks::All));
        assert!(!eth1.no_flood && !eth1.implicit);
        let local = br0.local_port().unwrap();
        assert!(local.implicit && local.is_local());
        assert_eq!(
            local.kind,
            PortType::Internal {
                ifname: "br0".into(),
                mtu: None
            }
        );

        let atlas = c.bridge("brAtlas").unwrap();
        assert_eq!(atlas.fail_mode, FailMode::Secure);
        assert_eq!(atlas.flows.as_deref(), Some(flows.as_path()));
        let numbers: Vec<(&str, u32)> = atlas.ports.iter().map(|p| (&*p.name, p.ofport)).collect();
        // The tunnels take the lowest free numbers in file order: 1 and 4 are chosen.
        assert_eq!(
            numbers,
            vec![
                ("patch-brAtlas-to-localnet", 1),
                ("ovn-daf4b9-0", 2),
                ("ovn-ba3356-0", 3),
                ("tap2", 4),
                ("brAtlas", OFPP_LOCAL)
            ]
        );
        assert_eq!(
            atlas.port("tap2").unwrap().kind,
            PortType::Afxdp {
                ifname: "tap2".into(),
                xdp_mode: XdpMode::Auto,
                queues: 1,
                mtu: Some(9000),
                frames: DEFAULT_FRAMES
            }
        );
        assert_eq!(
            atlas.port("patch-brAtlas-to-localnet").unwrap().kind,
            PortType::Patch {
                peer: "patch-localnet-to-brAtlas".into()
            }
        );
        assert_eq!(
            atlas.port("ovn-daf4b9-0").unwrap().kind,
            PortType::Geneve(GeneveConfig {
                remote_ip: Ipv4Addr::new(172, 22, 1, 63),
                local_ip: Some(Ipv4Addr::new(172, 22, 1, 61)),
                key: TunnelKey::Flow,
                csum: true,
                dst_port: GENEVE_PORT,
            })
        );
        assert_eq!(
            atlas.port("ovn-ba3356-0").unwrap().kind,
            PortType::Geneve(GeneveConfig {
                remote_ip: Ipv4Addr::new(172, 22, 1, 62),
                local_ip: None,
                key: TunnelKey::Flow,
                csum: true,
                dst_port: GENEVE_PORT,
            })
        );

        let (b, p) = c.port("tap2").unwrap();
        assert_eq!((b.name.as_str(), p.ofport), ("brAtlas", 4));
        assert_eq!(atlas.port_by_ofport(2).unwrap().name, "ovn-daf4b9-0");
        // Flow files name ports by their OpenFlow-cut names too.
        let names = atlas.port_names();
        assert_eq!(names.number("patch-brAtlas-t"), Some(1));
        assert_eq!(names.number("tap2"), Some(4));
    }

    #[test]
    fn defaults_apply_when_keys_are_left_out() {
        let c = parse_ok(
            "[[bridge]]\nname = \"br0\"\n[[bridge.port]]\nname = \"m\"\ntype = \"memory\"\n",
        );
        assert_eq!(c.datapath, DatapathConfig::default());
        assert_eq!(c.datapath.fdb_aging, 300);
        let b = &c.bridges[0];
        assert_eq!(b.fail_mode, FailMode::Standalone);
        assert_eq!(b.tlv_map, vec![TlvMapping::OVN]);
        assert_eq!(b.ports[0].kind, PortType::Memory);
        assert_eq!(b.ports[0].ofport, 1);
        assert!(b.ports[1].implicit);
    }

    #[test]
    fn assigned_ofports_fill_the_gaps_from_one() {
        let mut t = String::from(BR);
        for (name, ofport) in [
            ("a", None),
            ("b", Some(2)),
            ("c", None),
            ("d", Some(1)),
            ("e", None),
        ] {
            t += &format!("[[bridge.port]]\nname = \"{name}\"\ntype = \"memory\"\n");
            if let Some(n) = ofport {
                t += &format!("ofport = {n}\n");
            }
        }
        let c = parse_ok(&t);
        let got: Vec<(&str, u32)> = c.bridges[0]
            .ports
            .iter()
            .map(|p| (&*p.name, p.ofport))
            .collect();
        assert_eq!(
            got,
            vec![
                ("d", 1),
                ("b", 2),
                ("a", 3),
                ("c", 4),
                ("e", 5),
                ("br0", OFPP_LOCAL)
            ]
        );
    }

    #[test]
    fn declared_local_port_is_explicit() {
        let c = parse_ok(&format!(
            "{BR}[[bridge.port]]\nname = \"br0\"\ntype = \"internal\"\nmtu = 1400\ntag = 7\n"
        ));
        let local = c.bridges[0].local_port().unwrap();
        assert!(!local.implicit);
        assert_eq!(local.ofport, OFPP_LOCAL);
        assert_eq!(
            local.kind,
            PortType::Internal {
                ifname: "br0".into(),
                mtu: Some(1400)
            }
        );
        assert_eq!(local.vlan, PortVlan::Access(7));
        assert_eq!(c.bridges[0].ports.len(), 1);
    }

    fn vlan_of(keys: &str) -> PortVlan {
        let c = parse_ok(&format!(
            "{BR}[[bridge.port]]\nname = \"p\"\ntype = \"memory\"\n{keys}\n"
        ));
        c.bridges[0].port("p").unwrap().vlan.clone()
    }

    #[test]
    fn vlan_mode_is_derived_or_explicit() {
        assert_eq!(vlan_of(""), PortVlan::Trunk(Trunks::All));
        assert_eq!(vlan_of("tag = 2207"), PortVlan::Access(2207));
        assert_eq!(
            vlan_of("trunks = [2207, 10, 10]"),
            PortVlan::Trunk(Trunks::Only(vec![10, 2207]))
        );
        assert_eq!(
            vlan_of("tag = 5\ntrunks = [10]"),
            PortVlan::NativeUntagged {
                tag: 5,
                trunks: Trunks::Only(vec![10])
            }
        );
        assert_eq!(
            vlan_of("tag = 5\nvlan_mode = \"native-tagged\""),
            PortVlan::NativeTagged {
                tag: 5,
                trunks: Trunks::All
            }
        );
        assert_eq!(
            vlan_of("tag = 0\ntrunks = [4095]\nvlan_mode = \"native-untagged\""),
            PortVlan::NativeUntagged {
                tag: 0,
                trunks: Trunks::Only(vec![4095])
            }
        );
        assert_eq!(
            vlan_of("vlan_mode = \"trunk\""),
            PortVlan::Trunk(Trunks::All)
        );
        assert_eq!(
            vlan_of("tag = 3\nvlan_mode = \"access\""),
            PortVlan::Access(3)
        );
        assert!(Trunks::Only(vec![10, 2207]).contains(2207));
        assert!(!Trunks::Only(vec![10, 2207]).contains(11));
        assert!(Trunks::All.contains(4095) && !Trunks::All.contains(4096));
    }

    #[test]
    fn other_port_types_parse() {
        let dir = TempDir::new();
        dir.write("in.pcap", "");
        let c = parse_in(
            &dir,
            &format!(
                r#"{BR}
[[bridge.port]]
name = "cap"
type = "pcap"
rx_pcap = "in.pcap"
tx_pcap = "out.pcap"
no_flood = true
[[bridge.port]]
name = "vx"
type = "geneve"
remote_ip = "10.0.0.2"
key = 5001
dst_port = 7000
[[bridge.port]]
name = "host1"
type = "internal"
ifname = "xvs-h1"
[[bridge]]
name = "br1"
tlv_map = []
"#
            ),
        )
        .unwrap();
        let b = &c.bridges[0];
        let cap = b.port("cap").unwrap();
        assert!(cap.no_flood);
        assert_eq!(
            cap.kind,
            PortType::Pcap {
                rx: Some(dir.0.join("in.pcap")),
                tx: Some(dir.0.join("out.pcap"))
            }
        );
        assert_eq!(
            b.port("vx").unwrap().kind,
            PortType::Geneve(GeneveConfig {
                remote_ip: Ipv4Addr::new(10, 0, 0, 2),
                local_ip: None,
                key: TunnelKey::Vni(5001),
                csum: false,
                dst_port: 7000,
            })
        );
        assert_eq!(
            b.port("host1").unwrap().kind,
            PortType::Internal {
                ifname: "xvs-h1".into(),
                mtu: None
            }
        );
        assert!(c.bridges[1].tlv_map.is_empty());
    }

    #[test]
    fn tlv_map_entries_parse() {
        let c = parse_ok(
            "[[bridge]]\nname = \"b\"\ntlv_map = [ { class = 0x0102, type = 0x80, len = 4, field = \"tun_metadata0\" },\n  { class = 0xffff, type = 1, len = 8, field = \"tun_metadata63\" } ]\n",
        );
        assert_eq!(
            c.bridges[0].tlv_map,
            vec![
                TlvMapping::OVN,
                TlvMapping {
                    class: 0xffff,
                    kind: 1,
                    len: 8,
                    field: 63
                }
            ]
        );
    }

    #[test]
    fn error_display_names_file_line_col_port_and_key() {
        let dir = TempDir::new();
        let text = "[[bridge]]\nname = \"br0\"\n\n[[bridge.port]]\nname = \"s0\"\ntype = \"afxdp\"\nxdp_mode = \"fast\"\n";
        let path = dir.write("sw.toml", text);
        let e = load(&path).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "{}:7:12: bridge \"br0\" port \"s0\": key \"xdp_mode\": expected one of auto, native, generic",
                path.display()
            )
        );
    }

    #[test]
    fn missing_config_file_is_a_read_error() {
        let dir = TempDir::new();
        let path = dir.0.join("nope.toml");
        let e = load(&path).unwrap_err();
        assert!(matches!(e, ConfigError::Read { .. }));
        assert_eq!(e.position(), None);
        assert!(e
            .to_string()
            .starts_with(&format!("{}: cannot read", path.display())));
    }

    #[test]
    fn toml_syntax_error_has_position() {
        assert_err(&format!("{BR}name2 = \n"), 3, 9, "");
        assert_err(
            "[[bridge]]\nname = \"a\"\nname = \"b\"\n",
            3,
            1,
            "duplicate key",
        );
    }

    #[test]
    fn unknown_keys_are_errors() {
        assert_err(
            &format!("{BR}colour = 1\n"),
            3,
            1,
            "bridge \"br0\": key \"colour\": unknown key",
        );
        assert_err(
            "[datapath]\nthreadz = 1\n",
            2,
            1,
            "datapath: key \"threadz\": unknown key",
        );
        assert_err(
            "[switch]\n",
            1,
            2,
            "key \"switch\": unknown key; expected one of datapath, bridge",
        );
        assert_err(
            &format!("{BR}[[bridge.port]]\nname = \"p\"\ntype = \"memory\"\n  speed = 10\n"),
            6,
            3,
            "bridge \"br0\" port \"p\": key \"speed\": unknown key",
        );
        assert_err(
            "[[bridge]]\nname = \"b\"\ntlv_map = [ { class = 1, type = 2, len = 4, field = \"tun_metadata1\", x = 1 } ]\n",
            3,
            70,
            "bridge \"b\" tlv_map entry 1: key \"x\": unknown key",
        );
    }

    #[test]
    fn keys_of_another_port_type_are_errors() {
        assert_err(
            &format!("{BR}[[bridge.port]]\nname = \"s0\"\ntype = \"afxdp\"\npeer = \"x\"\n"),
            6,
            1,
            "bridge \"br0\" port \"s0\": key \"peer\": does not apply to afxdp ports (it is a key of patch ports)",
        );
        assert_err(
            &format!("{BR}[[bridge.port]]\nname = \"g\"\ntype = \"memory\"\nmtu = 1500\n"),
            6,
            1,
            "key \"mtu\": does not apply to memory ports (it is a key of afxdp, internal ports)",
        );
    }

    #[test]
    fn wrong_value_types_are_errors() {
        assert_err(
            "[datapath]\nthreads = \"two\"\n",
            2,
            11,
            "datapath: key \"threads\": expected an integer, found a string",
        );
        assert_err(
            &format!("{BR}[[bridge.port]]\nname = \"p\"\ntype = \"memory\"\nno_flood = 1\n"),
            6,
            12,
            "key \"no_flood\": expected a boolean, found an integer",
        );
        assert_err(
            "[[bridge]]\nname = 7\n",
            2,
            8,
            "bridge #1: key \"name\": expected a string",
        );
        assert_err(
            "bridge = 3\n",
            1,
            10,
            "key \"bridge\": expected an array of tables",
        );
        assert_err(
            "[bridge]\nname = \"x\"\n",
            1,
            1,
            "expected an array of tables ([[bridge]]), found a table",
        );
        assert_err(
            "[datapath]\nmode = 1.5\n",
            2,
            8,
            "key \"mode\": expected one of poll, interrupt, found a float",
        );
        assert_err(
            "[datapath]\nmode = \"busy\"\n",
            2,
            8,
            "key \"mode\": expected one of poll, interrupt",
        );
        assert_err(
            &format!("x = 1979-05-27T07:32:00Z\n{BR}"),
            1,
            5,
            "date-time values are not used",
        );
    }

    #[test]
    fn datapath_rules() {
        assert_err(
            "[datapath]\nthreads = 0\n",
            2,
            11,
            "key \"threads\": 0 is out of range 1..=1024",
        );
        assert_err(
            &format!("[datapath]\nthreads = 2\ncpus = [1]\n{BR}"),
            3,
            8,
            "key \"cpus\": lists 1 CPUs for 2 threads",
        );
        assert_err(
            &format!("[datapath]\ncpus = [-1]\n{BR}"),
            2,
            9,
            "key \"cpus\": -1 is out of range",
        );
        assert_err(
            &format!("[datapath]\ncoalesce_us = 1001\n{BR}"),
            2,
            15,
            "key \"coalesce_us\": 1001 is out of range 0..=1000",
        );
        assert_err(
            &format!("[datapath]\nfdb_aging = 0\n{BR}"),
            2,
            13,
            "key \"fdb_aging\": 0 is out of range",
        );
        assert_err(
            &format!("[datapath]\nct_max = 0\n{BR}"),
            2,
            10,
            "key \"ct_max\": 0 is out of range",
        );
        assert_err(
            &format!("[datapath]\nct_zone_limits = {{ zone9 = 1000 }}\n{BR}"),
            2,
            20,
            "key \"ct_zone_limits\": \"zone9\" is not a zone number",
        );
        assert_err(
            &format!("[datapath]\nct_zone_limits = {{ 70000 = 1000 }}\n{BR}"),
            2,
            20,
            "\"70000\" is not a zone number",
        );
        assert_err(
            &format!("[datapath]\nct_zone_limits = {{ 9 = 0 }}\n{BR}"),
            2,
            24,
            "key \"ct_zone_limits\": 0 is out of range",
        );
    }

    #[test]
    fn a_switch_needs_a_named_bridge() {
        assert_err("[datapath]\nthreads = 1\n", 1, 1, "no bridge");
        assert_err(
            "\n[[bridge]]\nfail_mode = \"secure\"\n",
            2,
            1,
            "bridge #1: missing key \"name\"",
        );
        assert_err(
            "[[bridge]]\nname = \"a-very-long-bridge-name\"\n",
            2,
            8,
            "is not a valid interface name",
        );
        assert_err(
            &format!("{BR}fail_mode = \"open\"\n"),
            3,
            13,
            "key \"fail_mode\": expected one of standalone, secure",
        );
    }

    #[test]
    fn bridge_names_are_unique() {
        assert_err(
            "[[bridge]]\nname = \"br0\"\n[[bridge]]\nname = \"br0\"\n",
            4,
            8,
            "bridge \"br0\": another bridge has this name (line 2)",
        );
    }

    #[test]
    fn port_names_are_unique_across_the_switch() {
        assert_err(
            "[[bridge]]\nname = \"a\"\n[[bridge.port]]\nname = \"p\"\ntype = \"memory\"\n[[bridge]]\nname = \"b\"\n[[bridge.port]]\nname = \"p\"\ntype = \"memory\"\n",
            9,
            8,
            "bridge \"b\" port \"p\": port names must be unique across the switch; bridge \"a\" has one at line 4",
        );
        assert_err(
            "[[bridge]]\nname = \"a\"\n[[bridge]]\nname = \"b\"\n[[bridge.port]]\nname = \"a\"\ntype = \"memory\"\n",
            6,
            8,
            "the name belongs to bridge \"a\"'s LOCAL port",
        );
    }

    #[test]
    fn ports_need_name_and_type() {
        assert_err(
            &format!("{BR}[[bridge.port]]\ntype = \"memory\"\n"),
            3,
            1,
            "bridge \"br0\" port #1: missing key \"name\"",
        );
        assert_err(
            &format!("{BR}[[bridge.port]]\nname = \"p\"\n"),
            3,
            1,
            "bridge \"br0\" port \"p\": missing key \"type\"",
        );
        assert_err(
            &format!("{BR}[[bridge.port]]\nname = \"p\"\ntype = \"vxlan\"\n"),
            5,
            8,
            "key \"type\": expected one of afxdp, patch, internal, pcap, geneve, memory",
        );
        assert_err(
            &format!("{BR}[[bridge.port]]\nname = \"\"\ntype = \"memory\"\n"),
            4,
            8,
            "not a valid port name",
        );
    }

    #[test]
    fn ofports_are_in_range_and_unique() {
        let port = |name: &str, n: i64| {
            format!("[[bridge.port]]\nname = \"{name}\"\ntype = \"memory\"\nofport = {n}\n")
        };
        assert_err(
            &format!("{BR}{}", port("p", 0)),
            6,
            10,
            "key \"ofport\": 0 is out of range 1..=65279",
        );
        assert_err(
            &format!("{BR}{}", port("p", 0xff00)),
            6,
            10,
            "65280 is out of range 1..=65279",
        );
        assert!(parse_ok(&format!("{BR}{}", port("p", 0xfeff))).bridges[0]
            .port_by_ofport(0xfeff)
            .is_some());
        assert_err(
            &format!("{BR}{}{}", port("p", 3), port("q", 3)),
            10,
            10,
            "bridge \"br0\" port \"q\": key \"ofport\": 3 is already used in this bridge (line 6)",
        );
        // Numbers are per bridge.
        parse_ok(&format!(
            "{BR}{}[[bridge]]\nname = \"br1\"\n{}",
            port("p", 3),
            port("q", 3)
        ));
    }

    #[test]
    fn local_port_rules() {
        assert_err(
            &format!("{BR}[[bridge.port]]\nname = \"br0\"\ntype = \"afxdp\"\n"),
            5,
            8,
            "a port named like its bridge is the bridge's LOCAL port and must have type \"internal\"",
        );
        assert_err(
            &format!("{BR}[[bridge.port]]\nname = \"br0\"\ntype = \"internal\"\nofport = 3\n"),
            6,
            10,
            "key \"ofport\": the LOCAL port's number is always 65534",
        );
    }

    const PATCH_PAIR: &str = "[[bridge]]\nname = \"a\"\n[[bridge.port]]\nname = \"pa\"\ntype = \"patch\"\npeer = \"pb\"\n[[bridge]]\nname = \"b\"\n[[bridge.port]]\nname = \"pb\"\ntype = \"patch\"\npeer = \"pa\"\n";

    #[test]
    fn patch_peers_pair_across_bridges() {
        let c = parse_ok(PATCH_PAIR);
        assert_eq!(
            c.port("pa").unwrap().1.kind,
            PortType::Patch { peer: "pb".into() }
        );
        assert_err(
            &format!("{BR}[[bridge.port]]\nname = \"p\"\ntype = \"patch\"\n"),
            3,
            1,
            "bridge \"br0\" port \"p\": missing key \"peer\" (required for patch ports)",
        );
        assert_err(
            &PATCH_PAIR.replace("peer = \"pb\"", "peer = \"pc\""),
            6,
            8,
            "bridge \"a\" port \"pa\": key \"peer\": no port is named \"pc\"",
        );
        assert_err(
            &PATCH_PAIR.replace(
                "name = \"pb\"\ntype = \"patch\"\npeer = \"pa\"",
                "name = \"pb\"\ntype = \"memory\"",
            ),
            6,
            8,
            "key \"peer\": \"pb\" is a memory port, not a patch port",
        );
        assert_err(
            "[[bridge]]\nname = \"a\"\n[[bridge.port]]\nname = \"pa\"\ntype = \"patch\"\npeer = \"pb\"\n[[bridge.port]]\nname = \"pb\"\ntype = \"patch\"\npeer = \"pa\"\n",
            6,
            8,
            "\"pb\" is in the same bridge",
        );
        assert_err(
            &format!("{PATCH_PAIR}[[bridge]]\nname = \"c\"\n[[bridge.port]]\nname = \"pc\"\ntype = \"patch\"\npeer = \"pb\"\n"),
            18,
            8,
            "bridge \"c\" port \"pc\": key \"peer\": \"pb\" names \"pa\" as its peer, not \"pc\"",
        );
    }

    #[test]
    fn afxdp_frames_are_a_power_of_two_in_range() {
        let port =
            |keys: &str| format!("{BR}[[bridge.port]]\nname = \"p\"\ntype = \"afxdp\"\n{keys}\n");
        let frames = |c: &Config| match &c.bridges[0].ports[0].kind {
            PortType::Afxdp { frames, .. } => *frames,
            other => panic!("not afxdp: {other:?}"),
        };
        assert_eq!(frames(&parse_ok(&port(""))), DEFAULT_FRAMES);
        assert_eq!(frames(&parse_ok(&port("frames = 16384"))), 16384);
        assert_err(
            &port("frames = 3000"),
            6,
            10,
            "key \"frames\": 3000 is not a power of two",
        );
        assert_err(
            &port("frames = 32"),
            6,
            10,
            "key \"frames\": 32 is out of range 64..=65536",
        );
        assert_err(
            &port("frames = 131072"),
            6,
            10,
            "key \"frames\": 131072 is out of range 64..=65536",
        );
    }

    #[test]
    fn vlan_rules() {
        let port =
            |keys: &str| format!("{BR}[[bridge.port]]\nname = \"p\"\ntype = \"afxdp\"\n{keys}\n");
        assert_err(
            &port("tag = 4096"),
            6,
            7,
            "key \"tag\": 4096 is out of range 0..=4095",
        );
        assert_err(
            &port("trunks = [1, 5000]"),
            6,
            14,
            "key \"trunks\": 5000 is out of range 0..=4095",
        );
        assert_err(&port("trunks = []"), 6, 10, "key \"trunks\": lists no VLAN");
        assert_err(
            &port("trunks = 5"),
            6,
            10,
            "key \"trunks\": expected an array, found an integer",
        );
        assert_err(
            &port("tag = 1\ntrunks = [2]\nvlan_mode = \"access\""),
            7,
            10,
            "key \"trunks\": an access port carries no trunks",
        );
        assert_err(
            &port("tag = 1\nvlan_mode = \"trunk\""),
            6,
            7,
            "key \"tag\": a trunk port has no tag",
        );
        assert_err(
            &port("vlan_mode = \"native-tagged\""),
            3,
            1,
            "vlan_mode \"native-tagged\" needs key \"tag\"",
        );
        assert_err(
            &port("vlan_mode = \"access\""),
            3,
            1,
            "vlan_mode \"access\" needs key \"tag\"",
        );
        assert_err(
            &port("vlan_mode = \"hybrid\""),
            6,
            13,
            "key \"vlan_mode\": expected one of access, trunk, native-tagged, native-untagged",
        );
    }

    #[test]
    fn afxdp_and_internal_rules() {
        let port = |t: &str, keys: &str| {
            format!("{BR}[[bridge.port]]\nname = \"p\"\ntype = \"{t}\"\n{keys}\n")
        };
        assert_err(
            &port("afxdp", "mtu = 67"),
            6,
            7,
            "key \"mtu\": 67 is out of range 68..=65535",
        );
        assert_err(
            &port("internal", "mtu = 65536"),
            6,
            7,
            "65536 is out of range 68..=65535",
        );
        assert_err(
            &port("afxdp", "queues = 0"),
            6,
            10,
            "key \"queues\": 0 is out of range",
        );
        assert_err(
            &port("afxdp", "ifname = \"bad/name\""),
            6,
            10,
            "key \"ifname\": \"bad/name\" is not a valid interface name",
        );
        // A port name too long for an interface is fine when ifname says which interface.
        parse_ok(&format!(
            "{BR}[[bridge.port]]\nname = \"uplink-port-of-br0\"\ntype = \"afxdp\"\nifname = \"eth1\"\n"
        ));
        assert_err(
            &format!("{BR}[[bridge.port]]\nname = \"uplink-port-of-br0\"\ntype = \"internal\"\n"),
            4,
            8,
            "key \"name\": \"uplink-port-of-br0\" is not a valid interface name",
        );
    }

    #[test]
    fn interfaces_and_captures_belong_to_one_port() {
        assert_err(
            "[[bridge]]\nname = \"a\"\n[[bridge.port]]\nname = \"eth1\"\ntype = \"afxdp\"\n[[bridge]]\nname = \"b\"\n[[bridge.port]]\nname = \"up\"\ntype = \"internal\"\nifname = \"eth1\"\n",
            11,
            10,
            "bridge \"b\" port \"up\": interface \"eth1\" is already used by the port at line 4",
        );
        assert_err(
            &format!("{BR}[[bridge.port]]\nname = \"x\"\ntype = \"afxdp\"\nifname = \"br1\"\n[[bridge.port]]\nname = \"br1\"\ntype = \"afxdp\"\n"),
            8,
            8,
            "port \"br1\": interface \"br1\" is already used by the port at line 6",
        );
        // An implicit LOCAL port has no interface, so its name is free for one.
        parse_ok(&format!(
            "{BR}[[bridge.port]]\nname = \"x\"\ntype = \"afxdp\"\nifname = \"br0\"\n"
        ));
        let pcap = |name: &str| {
            format!("[[bridge.port]]\nname = \"{name}\"\ntype = \"pcap\"\ntx_pcap = \"out.pcap\"\n")
        };
        assert_err(
            &format!("{BR}{}{}", pcap("p"), pcap("q")),
            10,
            11,
            "port \"q\": key \"tx_pcap\": ",
        );
    }

    #[test]
    fn pcap_rules() {
        let port =
            |keys: &str| format!("{BR}[[bridge.port]]\nname = \"p\"\ntype = \"pcap\"\n{keys}\n");
        assert_err(
            &port(""),
            3,
            1,
            "bridge \"br0\" port \"p\": a pcap port needs rx_pcap, tx_pcap or both",
        );
        assert_err(
            &port("rx_pcap = \"missing.pcap\""),
            6,
            11,
            "key \"rx_pcap\":",
        );
        assert_err(
            &port("rx_pcap = \"missing.pcap\""),
            6,
            11,
            "missing.pcap does not exist or is not a file",
        );
        assert_err(
            &port("tx_pcap = \"no/such/dir/out.pcap\""),
            6,
            11,
            "key \"tx_pcap\": cannot create",
        );
        let (_, _, m) = parse_err(&port("rx_pcap = \"in.pcap\"\nmtu = 1"));
        assert!(m.contains("does not apply to pcap ports"), "{m}");
    }

    #[test]
    fn geneve_rules() {
        let port =
            |keys: &str| format!("{BR}[[bridge.port]]\nname = \"t\"\ntype = \"geneve\"\n{keys}\n");
        assert_err(
            &port("key = \"flow\""),
            3,
            1,
            "bridge \"br0\" port \"t\": missing key \"remote_ip\" (required for geneve ports)",
        );
        assert_err(
            &port("remote_ip = \"10.0.0.1\""),
            3,
            1,
            "missing key \"key\"",
        );
        assert_err(
            &port("remote_ip = \"fe80::1\"\nkey = \"flow\""),
            6,
            13,
            "key \"remote_ip\": \"fe80::1\" is not an IPv4 address",
        );
        assert_err(
            &port("remote_ip = \"10.0.0.1\"\nlocal_ip = \"x\"\nkey = 1"),
            7,
            12,
            "key \"local_ip\": \"x\" is not an IPv4 address",
        );
        assert_err(
            &port("remote_ip = \"10.0.0.1\"\nkey = \"any\""),
            7,
            7,
            "key \"key\": expected \"flow\" or a VNI (0..=16777215), found \"any\"",
        );
        assert_err(
            &port("remote_ip = \"10.0.0.1\"\nkey = 16777216"),
            7,
            7,
            "key \"key\": 16777216 is out of range 0..=16777215",
        );
        assert_err(
            &port("remote_ip = \"10.0.0.1\"\nkey = 1\ndst_port = 0"),
            8,
            12,
            "key \"dst_port\": 0 is out of range 1..=65535",
        );
        assert_err(
            &port("remote_ip = \"10.0.0.1\"\nkey = 1\ncsum = \"true\""),
            8,
            8,
            "key \"csum\": expected a boolean, found a string",
        );
        let two = format!(
            "{}[[bridge.port]]\nname = \"u\"\ntype = \"geneve\"\nremote_ip = \"10.0.0.1\"\nkey = \"flow\"\n",
            port("remote_ip = \"10.0.0.1\"\nkey = \"flow\"")
        );
        assert_err(
            &two,
            8,
            1,
            "bridge \"br0\" port \"u\": another geneve port of this bridge (line 3)",
        );
        // A different key tells the tunnels apart.
        parse_ok(&two.replacen("key = \"flow\"", "key = 7", 1));
    }

    #[test]
    fn flows_file_must_exist() {
        assert_err(
            &format!("{BR}flows = \"missing.flows\"\n"),
            3,
            9,
            "bridge \"br0\": key \"flows\":",
        );
        assert_err(
            &format!("{BR}flows = \"missing.flows\"\n"),
            3,
            9,
            "missing.flows does not exist",
        );
        assert_err(
            &format!("{BR}flows = \"\"\n"),
            3,
            9,
            "key \"flows\": the path is empty",
        );
        let dir = TempDir::new();
        dir.write("exists.flows", "");
        let c = parse_in(&dir, &format!("{BR}flows = \"exists.flows\"\n")).unwrap();
        assert_eq!(c.bridges[0].flows, Some(dir.0.join("exists.flows")));
    }

    #[test]
    fn tlv_map_rules() {
        let tlv = |e: &str| format!("[[bridge]]\nname = \"b\"\ntlv_map = [ {e} ]\n");
        assert_err(
            &tlv("{ class = 1, type = 2, len = 6, field = \"tun_metadata1\" }"),
            3,
            42,
            "bridge \"b\" tlv_map entry 1: key \"len\": must be a multiple of 4",
        );
        assert_err(
            &tlv("{ class = 1, type = 2, len = 4, field = \"tun_metadata64\" }"),
            3,
            53,
            "key \"field\": expected tun_metadata0..tun_metadata63",
        );
        assert_err(
            &tlv("{ class = 1, type = 2, len = 4, field = \"tun_metadata1\" }, { class = 1, type = 3, len = 4, field = \"tun_metadata1\" }"),
            3,
            112,
            "tlv_map entry 2: key \"field\": tun_metadata1 is already mapped",
        );
        assert_err(
            &tlv("{ class = 1, type = 2, len = 4 }"),
            3,
            13,
            "tlv_map entry 1: missing key \"field\"",
        );
        assert_err(
            &tlv("{ class = 0x10000, type = 2, len = 4, field = \"tun_metadata1\" }"),
            3,
            23,
            "key \"class\": 65536 is out of range 0..=65535",
        );
        assert_err(&tlv("5"), 3, 13, "key \"tlv_map\": expected tables like");
    }

    #[test]
    fn columns_count_characters() {
        // "é" is two bytes but one column.
        assert_err(
            "[[bridge]]\nname = \"b\"\ntlv_map = [ { field = \"é\", class = 1, type = 2, len = 6 } ]\n",
            3,
            55,
            "key \"len\": must be a multiple of 4",
        );
    }

    #[test]
    fn example_configs_load() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/configs");
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                if let Err(e) = load(&path) {
                    panic!("{e}");
                }
                n += 1;
            }
        }
        assert!(n > 0, "no example configuration in {}", dir.display());
    }
}

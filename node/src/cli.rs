//! The `eventgate` command line: `serve`, `cluster status|leave`, `certs init|issue`,
//! `asyncapi export`, and API management through a node's admin API: `apis`, `plans`, `apps`,
//! `keys`, `access`, `secrets` (OAuth2 client secrets), `signing-keys`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::LogFormat;

/// A duration argument (`90d`, `1h30m`, `0s`), checked here so that a typo is a usage error
/// naming the flag, not a round trip to the node; sent on as written.
fn duration_arg(text: &str) -> Result<String, String> {
    humantime::parse_duration(text)
        .map(|_| text.to_owned())
        .map_err(|e| format!("`{text}` is not a duration like 90d, 24h or 30m ({e})"))
}

/// eventgate: a clustered event gateway.
#[derive(Debug, Parser)]
#[command(name = "eventgate", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Commands,
}

#[derive(Debug, Subcommand)]
pub enum Commands {
    /// Run a gateway node (with no config file: a single development node on 127.0.0.1).
    Serve(ServeArgs),
    /// Inspect or change the cluster through a node's admin API.
    Cluster {
        #[command(subcommand)]
        command: ClusterCommand,
    },
    /// Create the cluster CA and node certificates for the cluster transport.
    Certs {
        #[command(subcommand)]
        command: CertsCommand,
    },
    /// AsyncAPI 3.0 documents of what the gateway exposes.
    Asyncapi {
        #[command(subcommand)]
        command: AsyncapiCommand,
    },
    /// APIs: topics exposed as products, with entrypoints, security and a lifecycle.
    Apis {
        #[command(subcommand)]
        command: ApisCommand,
    },
    /// Plans: rate, connection and subscription limits.
    Plans {
        #[command(subcommand)]
        command: EntityCommand,
    },
    /// Applications: clients with topic permissions.
    Apps {
        #[command(subcommand)]
        command: EntityCommand,
    },
    /// API keys of applications.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Applications' access to APIs, under a plan, possibly awaiting approval (`subscriptions`
    /// is an older name of this command).
    #[command(alias = "subscriptions")]
    Access {
        #[command(subcommand)]
        command: AccessCommand,
    },
    /// OAuth2 client secrets of applications (the client id is the application's id).
    Secrets {
        #[command(subcommand)]
        command: SecretsCommand,
    },
    /// The cluster's OAuth2 token signing keys.
    SigningKeys {
        #[command(subcommand)]
        command: SigningKeysCommand,
    },
    /// WebSub subscriptions (webhooks): list, show, replay messages, rotate a secret, the
    /// delivery ledger, paused endpoints.
    Webhooks {
        #[command(subcommand)]
        command: WebhooksCommand,
    },
    /// Exit 0 when a URL answers 2xx (a container health check needing no curl).
    Probe(ProbeArgs),
    /// Check a configuration as `serve` would read it (file, EVENTGATE_* variables,
    /// defaults) and print it whole, secrets redacted.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Print a shell's completion script (`eventgate completions bash >
    /// /etc/bash_completion.d/eventgate`).
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Subcommand)]
pub enum WebhooksCommand {
    /// Every WebSub subscription.
    List {
        #[command(flatten)]
        target: AdminTarget,
    },
    /// One subscription: callback, state, lease, signing, cursor, retries waiting.
    Show {
        /// The subscription id.
        id: String,
        #[command(flatten)]
        target: AdminTarget,
    },
    /// Deliver again, in order, the messages of a range of offsets or of times (they keep their
    /// delivery id, so the subscriber can tell a replay).
    Replay {
        /// The subscription id.
        id: String,
        /// The partition (0 on a one-partition topic).
        #[arg(long, default_value_t = 0)]
        partition: u32,
        /// First offset to deliver.
        #[arg(long, conflicts_with = "since")]
        from_offset: Option<u64>,
        /// Last offset to deliver (inclusive); the newest when absent.
        #[arg(long, requires = "from_offset")]
        to_offset: Option<u64>,
        /// Deliver what the broker appended at or after this time (RFC 3339).
        #[arg(long)]
        since: Option<String>,
        /// … and before this time (RFC 3339).
        #[arg(long, requires = "since")]
        until: Option<String>,
        /// At most this many messages (default 1000, at most 10000).
        #[arg(long)]
        max: Option<u32>,
        #[command(flatten)]
        target: AdminTarget,
    },
    /// Give a subscription a new secret (printed once); the old one keeps signing next to it
    /// for the overlap.
    RotateSecret {
        /// The subscription id.
        id: String,
        /// The new secret; a random `whsec_` one when absent.
        #[arg(long)]
        secret: Option<String>,
        /// How long the old secret keeps signing too (`1h`; `0s`: not at all). Default:
        /// websub.secret_overlap.
        #[arg(long, value_parser = duration_arg)]
        overlap: Option<String>,
        #[command(flatten)]
        target: AdminTarget,
    },
    /// The delivery ledger of a subscription: its recent attempts, newest first.
    Attempts {
        /// The subscription id.
        id: String,
        /// Only attempts that ended so: succeeded, failed or gone.
        #[arg(long, value_parser = ["succeeded", "failed", "gone"])]
        outcome: Option<String>,
        /// Only attempts the callback answered with this HTTP status.
        #[arg(long)]
        status: Option<u16>,
        /// Only attempts of this message (its delivery id, `webhook-id`).
        #[arg(long)]
        message_id: Option<String>,
        /// Only attempts at or after this time (RFC 3339).
        #[arg(long)]
        since: Option<String>,
        /// Only attempts at or before this time (RFC 3339).
        #[arg(long)]
        until: Option<String>,
        /// At most this many (default 100).
        #[arg(long)]
        limit: Option<u32>,
        #[command(flatten)]
        target: AdminTarget,
    },
    /// Callback endpoints paused by the circuit breaker, and disabled subscriptions.
    Endpoints {
        #[command(flatten)]
        target: AdminTarget,
    },
    /// Resume deliveries to a paused endpoint now (`https://host[:port]`).
    ResumeEndpoint {
        /// The endpoint's origin (or any URL on it).
        origin: String,
        #[command(flatten)]
        target: AdminTarget,
    },
    /// Re-enable a subscription disabled after its endpoint's long outage.
    Enable {
        /// The subscription id.
        id: String,
        #[command(flatten)]
        target: AdminTarget,
    },
}

#[derive(Debug, Subcommand)]
pub enum SecretsCommand {
    /// Issue a client secret (printed once); the application's other secrets keep working
    /// for the overlap, then stop.
    Create {
        /// The application (its id).
        app: String,
        /// How long the other secrets keep working (`1h`; `0s`: stop now). Default:
        /// auth.oauth2.secret_overlap.
        #[arg(long, value_parser = duration_arg)]
        overlap: Option<String>,
        #[command(flatten)]
        target: AdminTarget,
    },
    /// List an application's client secrets (never the secrets themselves).
    List {
        /// The application (its id).
        app: String,
        #[command(flatten)]
        target: AdminTarget,
    },
    /// Revoke a client secret and every access token issued on it.
    Revoke {
        /// The application (its id).
        app: String,
        /// The secret's id (from `secrets list`).
        id: String,
        #[command(flatten)]
        target: AdminTarget,
    },
}

#[derive(Debug, Subcommand)]
pub enum SigningKeysCommand {
    /// The keys: current, and those still verifying tokens they signed.
    List {
        #[command(flatten)]
        target: AdminTarget,
    },
    /// Sign with a new key from now on; the previous one verifies its tokens until they expire.
    Rotate {
        #[command(flatten)]
        target: AdminTarget,
    },
}

#[derive(Debug, Args)]
pub struct ProbeArgs {
    /// What to ask.
    #[arg(default_value = "http://127.0.0.1:8080/readyz")]
    pub url: String,
    /// Give up after this long.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub timeout: std::time::Duration,
}

/// `eventgate apis …`: the entity commands, and the lifecycle.
#[derive(Debug, Subcommand)]
pub enum ApisCommand {
    #[command(flatten)]
    Entity(EntityCommand),
    /// Create or replace an API from an AsyncAPI document (3.0, 3.1 or 2.6; JSON or YAML; `-`
    /// for standard input). A new API starts `created`.
    Import {
        /// The AsyncAPI document (`-`: standard input).
        file: PathBuf,
        /// The API's name (default: from x-eventgate.name or info.title).
        #[arg(long)]
        name: Option<String>,
        /// The API's base path (default: /<name>/<version>).
        #[arg(long)]
        base_path: Option<String>,
        /// A channel's topic, `CHANNEL=TOPIC` (the channel's id in the document; 2.x: its
        /// address); needed for channels with parameters in their address.
        #[arg(long = "topic", value_name = "CHANNEL=TOPIC")]
        topics: Vec<String>,
        /// Check published messages against the channels' payload schemas.
        #[arg(long)]
        validate_messages: Option<bool>,
        #[command(flatten)]
        target: AdminTarget,
    },
    /// Move an API through its lifecycle: `created` → `published` → `deprecated` → `retired`
    /// (back to created only while nothing is subscribed; retired is final).
    Lifecycle {
        /// The API's name.
        name: String,
        /// `created`, `published`, `deprecated` or `retired`.
        state: String,
        /// A deprecated API's planned retirement, RFC 3339 (`2027-06-30T00:00:00Z`).
        #[arg(long)]
        sunset: Option<String>,
        #[command(flatten)]
        target: AdminTarget,
    },
}

/// List, show, create or replace, and delete one kind of entity.
#[derive(Debug, Subcommand)]
pub enum EntityCommand {
    /// Every one, as JSON.
    List {
        #[command(flatten)]
        target: AdminTarget,
    },
    /// One, as JSON.
    Get {
        /// Its name (an application: its id).
        name: String,
        #[command(flatten)]
        target: AdminTarget,
    },
    /// Create or replace from a JSON document (see docs/http-api.md for its fields).
    Put {
        /// Its name (an application: its id).
        name: String,
        /// JSON file with the entity; `-` reads standard input.
        #[arg(long, short = 'f')]
        file: PathBuf,
        #[command(flatten)]
        target: AdminTarget,
    },
    /// Delete it.
    Delete {
        /// Its name (an application: its id).
        name: String,
        #[command(flatten)]
        target: AdminTarget,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Print a new key and its SHA-256, without a node: for `api_key_hashes` in a config file.
    Generate,
    /// Issue a key to an application; the key is printed once.
    Create {
        /// The application (its id).
        app: String,
        /// Validity, e.g. `90d`; forever when absent.
        #[arg(long, value_parser = duration_arg)]
        expires_in: Option<String>,
        /// Rotate: the application's other keys keep working this long (`24h`; `0s`: they
        /// stop now), then expire.
        #[arg(long, value_parser = duration_arg)]
        overlap: Option<String>,
        #[command(flatten)]
        target: AdminTarget,
    },
    /// Rotate an application's keys: issue a new one (printed once); the others keep working
    /// for the overlap, then expire.
    Rotate {
        /// The application (its id).
        app: String,
        /// How long the application's other keys keep working (`0s`: they stop now).
        #[arg(long, default_value = "24h", value_parser = duration_arg)]
        overlap: Option<String>,
        /// The new key's validity, e.g. `90d`; forever when absent.
        #[arg(long, value_parser = duration_arg)]
        expires_in: Option<String>,
        #[command(flatten)]
        target: AdminTarget,
    },
    /// An application's keys (ids, prefixes, expiry; never the keys).
    List {
        /// The application (its id).
        app: String,
        #[command(flatten)]
        target: AdminTarget,
    },
    /// Revoke a key on every node.
    Revoke {
        /// The application (its id).
        app: String,
        /// The key's id (from `keys list`).
        key_id: String,
        #[command(flatten)]
        target: AdminTarget,
    },
}

#[derive(Debug, Subcommand)]
pub enum AccessCommand {
    /// An application's subscriptions to APIs, with their plans and states.
    List {
        /// The application (its id).
        app: String,
        #[command(flatten)]
        target: AdminTarget,
    },
    /// Subscribe an application to an API under a plan.
    Add {
        /// The application (its id).
        app: String,
        /// The API's name.
        api: String,
        /// The plan it is under.
        #[arg(long)]
        plan: String,
        #[command(flatten)]
        target: AdminTarget,
    },
    /// Approve an application's pending subscription to an API.
    Approve {
        /// The application (its id).
        app: String,
        /// The API's name.
        api: String,
        #[command(flatten)]
        target: AdminTarget,
    },
    /// Reject an application's pending subscription to an API.
    Reject {
        /// The application (its id).
        app: String,
        /// The API's name.
        api: String,
        #[command(flatten)]
        target: AdminTarget,
    },
    /// End an application's subscription to an API (its streams and WebSub subscriptions
    /// end on every node).
    Remove {
        /// The application (its id).
        app: String,
        /// The API's name.
        api: String,
        #[command(flatten)]
        target: AdminTarget,
    },
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Exit 0 and print the effective configuration (JSON, every default filled in, secrets
    /// `<redacted>`) when it is valid; exit 2 naming the key at fault when not.
    Check {
        /// TOML configuration file; without it, the development profile's.
        #[arg(long, short = 'c', env = "EVENTGATE_CONFIG", hide_env_values = true)]
        config: Option<PathBuf>,
        /// Print nothing when it is valid.
        #[arg(long, short = 'q')]
        quiet: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum AsyncapiCommand {
    /// Print the document generated from a configuration (the one a node with it serves at
    /// `/asyncapi.json`).
    Export {
        /// TOML configuration file; without it, the development profile's.
        #[arg(long, short = 'c', env = "EVENTGATE_CONFIG", hide_env_values = true)]
        config: Option<PathBuf>,
        /// `json` or `yaml`.
        #[arg(long, default_value = "json", value_parser = ["json", "yaml"])]
        format: String,
    },
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// TOML configuration file.
    #[arg(long, short = 'c', env = "EVENTGATE_CONFIG", hide_env_values = true)]
    pub config: Option<PathBuf>,
    /// This node's id (overrides `node_id`).
    #[arg(long)]
    pub node_id: Option<u64>,
    /// Data directory (overrides `data_dir`).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// HTTP listen address (overrides `http.listen`).
    #[arg(long)]
    pub http_listen: Option<String>,
    /// Cluster (QUIC/UDP) listen address (overrides `cluster.listen`).
    #[arg(long)]
    pub cluster_listen: Option<String>,
    /// Join the cluster through this member's cluster address; repeat for several seeds
    /// (overrides `cluster.seeds`).
    #[arg(long = "join", value_name = "HOST:PORT")]
    pub join: Vec<String>,
    /// Log format (overrides `log.format`).
    #[arg(long, value_enum)]
    pub log_format: Option<LogFormat>,
}

// Where to reach a node's admin API. (A plain comment, not a doc comment: clap would take a
// flattened struct's doc as the help of every subcommand that has none of its own.)
#[derive(Debug, Args)]
pub struct AdminTarget {
    /// Base URL of a node's HTTP address.
    #[arg(
        long,
        env = "EVENTGATE_ADMIN_URL",
        hide_env_values = true,
        default_value = "http://127.0.0.1:8080"
    )]
    pub node: String,
    /// Admin token, if the node has one configured.
    #[arg(long, env = "EVENTGATE_ADMIN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// How to print the answer: `table` (dates and ages for times), `json` (the API's
    /// document), or `auto` (a table on a terminal, JSON when piped).
    #[arg(short = 'o', long = "output", value_enum, default_value = "auto")]
    pub output: crate::output::OutputFormat,
}

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Leader, term, and each member's role, applied index and lag.
    Status {
        #[command(flatten)]
        target: AdminTarget,
        /// Same as `-o json` (kept for scripts written before `-o`).
        #[arg(long, hide = true)]
        json: bool,
        /// Wait until the cluster has a leader and this many voters (nodes still joining,
        /// or a node just started and not answering yet), then print the status.
        #[arg(long, value_name = "N")]
        wait_voters: Option<usize>,
        /// How long `--wait-voters` waits before giving up (exit 1).
        #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
        wait_timeout: std::time::Duration,
    },
    /// Remove a member from the cluster (by default the node addressed, which then stops).
    Leave {
        #[command(flatten)]
        target: AdminTarget,
        /// The member to remove; the addressed node when absent.
        #[arg(long)]
        node_id: Option<u64>,
    },
}

#[derive(Debug, Subcommand)]
pub enum CertsCommand {
    /// Create a cluster CA: `<dir>/ca.pem` and `<dir>/ca.key`.
    Init {
        /// Where to write them.
        #[arg(long, default_value = "./certs")]
        dir: PathBuf,
    },
    /// Issue a node certificate signed by the CA in `<dir>`: `<dir>/<name>.pem` and `.key`.
    Issue {
        /// Node name; also a subject alternative name.
        name: String,
        /// The CA's directory, where the certificate and key are written too.
        #[arg(long, default_value = "./certs")]
        dir: PathBuf,
        /// Extra DNS names or IP addresses for the certificate; repeatable.
        #[arg(long = "san")]
        sans: Vec<String>,
    },
}

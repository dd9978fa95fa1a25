//! Command-line definitions (clap derive) and dispatch; each subcommand lives in `cli/<name>.rs`
//! with one `run` function returning the process exit code.

pub mod ca;
pub mod fingerprint;
pub mod flows;
pub mod init;
pub mod logs;
pub mod run;
pub mod start;
pub mod status;
pub mod wg;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// ccproxy: an LLM API gateway for coding agents.
#[derive(Debug, Parser)]
#[command(name = "ccproxy", version, about, long_about = None)]
pub struct Cli {
    /// Config directory (or the ccproxy.yaml file itself). Default: $CCPROXY_CONFIG_DIR,
    /// then $XDG_CONFIG_HOME/ccproxy, then ~/.config/ccproxy.
    #[arg(long, global = true, value_name = "DIR")]
    pub config: Option<PathBuf>,

    /// More output (-v debug, -vv trace).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway in the foreground until SIGTERM/SIGINT.
    Start,
    /// Write the default ccproxy.yaml into the config directory.
    Init {
        /// Overwrite an existing ccproxy.yaml.
        #[arg(long)]
        force: bool,
    },
    /// Show whether the gateway is up, and its hook pipeline.
    ///
    /// Exit code is a bitmask of what is down: 1 = proxy, 2 = inspector.
    Status {
        /// Print machine-readable JSON.
        #[arg(long)]
        json: bool,
        /// Health check only: print nothing, exit 1 if the proxy is down.
        #[arg(long)]
        proxy: bool,
        /// Health check only: print nothing, exit 2 if the inspector is down.
        #[arg(long)]
        inspect: bool,
    },
    /// Print the gateway's log file.
    Logs {
        /// Keep printing new lines as they are written.
        #[arg(short, long)]
        follow: bool,
        /// Number of lines to show.
        #[arg(short = 'n', long, default_value_t = 100)]
        lines: usize,
    },
    /// Inspect the flows the running gateway captured (through its admin API).
    Flows {
        /// jq filter applied to the set of flows (repeatable; after flows.default_jq_filters).
        #[arg(long = "jq", global = true, value_name = "FILTER")]
        jq: Vec<String>,
        #[command(subcommand)]
        command: flows::FlowsCommand,
    },
    /// Print where the local CA certificate is and how to trust it (creating the CA first if
    /// needed).
    Ca,
    /// Run a command with its API base URLs pointed at the gateway.
    ///
    /// Sets ANTHROPIC_BASE_URL (http://host:port) and OPENAI_BASE_URL / OPENAI_API_BASE
    /// (http://host:port/v1) and runs the command; ccproxy exits with the command's exit code.
    ///
    /// With --inspect: runs the command in a network jail whose traffic all goes through the
    /// running gateway (TLS intercepted with the local CA), with no base-URL variables.
    Run {
        /// Jail the command (Linux namespaces + WireGuard to the running gateway).
        #[arg(long)]
        inspect: bool,
        /// The command and its arguments (put them after `--`).
        #[arg(
            required = true,
            trailing_var_arg = true,
            allow_hyphen_values = true,
            value_name = "COMMAND"
        )]
        command: Vec<String>,
    },
    /// Connect to an https URL with a browser TLS profile and print the JA4/JA3 of the
    /// ClientHello sent, the negotiated protocol and the answer's status.
    Fingerprint {
        /// Profile name (chrome156, or chrome/edge version names); default: no profile.
        #[arg(long)]
        profile: Option<String>,
        /// Accept any certificate (a local test listener).
        #[arg(long)]
        insecure: bool,
        url: String,
    },
    /// WireGuard: configs for external devices that route through the inspector.
    Wg {
        #[command(subcommand)]
        command: WgCommand,
    },
    /// Internal: the jail keeper of `ccproxy run --inspect`.
    #[command(name = "__jail-keeper", hide = true)]
    JailKeeper {
        #[arg(long)]
        control: String,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<String>,
    },
    /// Internal: pid 1 of the jail of `ccproxy run --inspect`.
    #[command(name = "__jail-init", hide = true)]
    JailInit {
        /// This is the jail's pid 1 (else: enter the pid namespace first).
        #[arg(long)]
        pid1: bool,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum WgCommand {
    /// Print a WireGuard client config for a device (keys kept in the config directory).
    ClientConfig {
        /// The device's name (its key is <config dir>/wireguard/peers/<name>.key).
        #[arg(long, default_value = "device")]
        name: String,
    },
}

/// Run the parsed command line.
pub fn dispatch(cli: Cli) -> ExitCode {
    let location = crate::config::locate(cli.config.as_deref());
    match cli.command {
        Command::Start => start::run(location, cli.verbose),
        Command::Init { force } => init::run(&location, force),
        Command::Status {
            json,
            proxy,
            inspect,
        } => status::run(location, json, proxy, inspect),
        Command::Logs { follow, lines } => logs::run(location, follow, lines),
        Command::Run { inspect, command } => run::run(location, inspect, &command),
        Command::Fingerprint {
            profile,
            insecure,
            url,
        } => fingerprint::run(profile.as_deref(), insecure, &url),
        Command::Wg {
            command: WgCommand::ClientConfig { name },
        } => wg::client_config(location, &name),
        Command::JailKeeper { control, command } => crate::jail::keeper::run(&control, &command),
        Command::JailInit { pid1, command } => crate::jail::init::run(pid1, &command),
        Command::Ca => ca::run(&location),
        Command::Flows { jq, command } => flows::run(location, &jq, command),
    }
}

/// Load the config or print its error; `None` means "exit 1".
pub(crate) fn load_config(
    location: crate::config::ConfigLocation,
) -> Option<crate::config::Config> {
    match crate::config::Config::load(location) {
        Ok(c) => Some(c),
        Err(e) => {
            eprintln!("ccproxy: {e}");
            None
        }
    }
}

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use roomstate_server::config::{ConfigError, DEV_API_KEY, DEV_API_SECRET};
use roomstate_server::{cli, ServerConfig};

/// roomstate: realtime room state (a shared session store and participant attributes)
/// for apps with live rooms.
#[derive(Parser)]
#[command(
    version,
    about = "roomstate: realtime room state (a shared session store and participant attributes) for apps with live rooms",
    after_help = EXAMPLES
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

const EXAMPLES: &str = "\
A first session:
  roomstate serve --dev                      # a server on ws://127.0.0.1:7880, keys devkey/secret
  export ROOMSTATE_API_KEY=devkey ROOMSTATE_API_SECRET=secret
  roomstate join class-7 --identity alice --can-update-metadata   # a participant that prints what it sees
  roomstate store watch class-7              # live changes (joins hidden)
  roomstate store set class-7 pinned '{\"text\":\"Welcome\"}'
  roomstate participant update class-7 alice --attribute hand=up
  roomstate room list

Every command but serve takes --url (ROOMSTATE_URL), --api-key, --api-secret and --json.";

#[derive(Subcommand)]
enum Command {
    /// Run the room server.
    ///
    /// Settings come from defaults, then --config, then these flags and their
    /// environment variables. Example: roomstate serve --dev
    Serve(ServeArgs),
    /// Access tokens for participants.
    Token {
        #[command(subcommand)]
        command: cli::TokenCommand,
        #[command(flatten)]
        server: cli::Server,
    },
    /// Rooms on a server (server API).
    Room {
        #[command(subcommand)]
        command: cli::RoomCommand,
        #[command(flatten)]
        server: cli::Server,
    },
    /// Participants of a room (server API).
    Participant {
        #[command(subcommand)]
        command: cli::ParticipantCommand,
        #[command(flatten)]
        server: cli::Server,
    },
    /// Join a room as a visible participant and print what it sees, until Ctrl-C.
    Join {
        #[command(flatten)]
        args: cli::JoinArgs,
        #[command(flatten)]
        server: cli::Server,
    },
    /// A room's session store (server API; `watch` joins as a hidden participant).
    Store {
        #[command(subcommand)]
        command: cli::StoreCommand,
        #[command(flatten)]
        server: cli::Server,
    },
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Address to listen on [default: 127.0.0.1:7880].
    #[arg(long, env = "ROOMSTATE_BIND")]
    bind: Option<std::net::SocketAddr>,
    /// Development mode: accept tokens signed by API key "devkey" with secret "secret".
    #[arg(long)]
    dev: bool,
    /// A TOML config file (see docs/configuration.md).
    #[arg(long, env = "ROOMSTATE_CONFIG")]
    config: Option<PathBuf>,
    /// API keys and secrets, as key:secret[,key:secret...].
    #[arg(long, env = "ROOMSTATE_KEYS", hide_env_values = true)]
    keys: Option<String>,
    /// Override a limit, as name=value (repeatable), e.g. --limit value_bytes=2048.
    #[arg(long = "limit", env = "ROOMSTATE_LIMITS", value_delimiter = ',')]
    limits: Vec<String>,
    /// How long a dropped participant may take to resume, in milliseconds [default: 20000].
    #[arg(long, env = "ROOMSTATE_RECONNECT_GRACE_MS")]
    reconnect_grace_ms: Option<u64>,
    /// Join a cluster of nodes sharing rooms through this Redis, e.g.
    /// redis://127.0.0.1:6379/0 (the `[redis]` table of the config file says more).
    #[arg(long, env = "ROOMSTATE_REDIS")]
    redis: Option<String>,
    /// This node's name in the cluster [default: random].
    #[arg(long, env = "ROOMSTATE_NODE_ID")]
    node_id: Option<String>,
    /// Log filter, e.g. info or roomstate_server=debug.
    #[arg(long, env = "ROOMSTATE_LOG", default_value = "info")]
    log: String,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Serve(args) => serve(args),
        Command::Token {
            command: cli::TokenCommand::Create(args),
            server,
        } => cli::token_create(&server, args).map_err(Into::into),
        Command::Room { command, server } => client(cli::room(&server, command)),
        Command::Participant { command, server } => client(cli::participant(&server, command)),
        Command::Store { command, server } => client(cli::store(&server, command)),
        Command::Join { args, server } => client(cli::join(&server, args)),
    };
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("roomstate: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Runs a client command on a small runtime.
fn client(
    command: impl std::future::Future<Output = Result<(), cli::CliError>>,
) -> Result<(), Box<dyn std::error::Error>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(command).map_err(Into::into)
}

fn serve(args: ServeArgs) -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_new(&args.log)?)
        .with_writer(std::io::stderr)
        .init();
    let config = build_config(&args)?;
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async move {
        let serving = roomstate_server::serve(config, |address| {
            // Tests and scripts wait for this line.
            println!("roomstate listening on ws://{address}");
        });
        tokio::select! {
            result = serving => result.map_err(Into::into),
            _ = shutdown_signal() => {
                tracing::info!("shutting down");
                Ok(())
            }
        }
    })
}

fn build_config(args: &ServeArgs) -> Result<ServerConfig, ConfigError> {
    let mut config = match &args.config {
        Some(path) => ServerConfig::from_file(path)?,
        None => ServerConfig::default(),
    };
    if let Some(bind) = args.bind {
        config.bind = bind;
    }
    if let Some(keys) = &args.keys {
        config.keys.extend(ServerConfig::parse_keys(keys)?);
    }
    if args.dev {
        config
            .keys
            .insert(DEV_API_KEY.into(), DEV_API_SECRET.into());
        eprintln!(
            "\n  ************************************************************\n  \
             DEV MODE: accepting tokens for API key {DEV_API_KEY:?}, secret {DEV_API_SECRET:?}.\n  \
             Anyone who knows them can join any room. Never use --dev in production.\n  \
             ************************************************************\n"
        );
    }
    for limit in &args.limits {
        config.set_limit(limit)?;
    }
    if let Some(grace) = args.reconnect_grace_ms {
        config.reconnect_grace_ms = grace;
    }
    if let Some(url) = &args.redis {
        config.redis.get_or_insert_with(Default::default).url = url.clone();
    }
    if let Some(node_id) = &args.node_id {
        config.redis.get_or_insert_with(Default::default).node_id = Some(node_id.clone());
    }
    config.validate()?;
    Ok(config)
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// clap checks a command line's definition only when it is parsed; this checks every
    /// subcommand's at once (duplicate names, groups, defaults).
    #[test]
    fn the_command_line_is_well_formed() {
        super::Cli::command().debug_assert();
    }
}

//! The `hushd` command: argument parsing, logging, the runtime. Everything else is in the library.

use hushd::{app, metrics};

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand, ValueEnum};
use tracing_appender::non_blocking::{NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::EnvFilter;

/// hushd answers DNS for a network, forwards ordinary lookups upstream with a cache, and blocks
/// (or, in audit mode, logs) lookups of the names in its blocklists. Edits to the config or to
/// any list apply live; a broken edit keeps the running policy and logs exactly what is wrong.
#[derive(Debug, Parser)]
#[command(name = "hushd", version, about, long_about = None)]
struct Cli {
    /// The config file (TOML). Its [blocklists] dir is relative to the file's folder.
    #[arg(
        long,
        short = 'c',
        global = true,
        env = "HUSHD_CONFIG",
        default_value = "/etc/hushd/hushd.toml"
    )]
    config: PathBuf,

    /// Log format: human-readable text, or one JSON object per line for log pipelines.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Validate the config and every list without starting; print each error with file, line and
    /// column, and exit non-zero if there is any.
    Check,
    /// Why is NAME (not) blocked? Prints the decision (block, log, allow or forward), the list
    /// that decides, every entry of every list that covers the name (file and line), and why
    /// the winner wins. Offline, from the config and the lists on disk.
    Explain {
        /// The name asked, as a client would (`ads.example.com`).
        name: String,
        /// The asking client's address (default: the first of allow_clients).
        #[arg(long)]
        client: Option<std::net::IpAddr>,
        /// Print JSON (the same object as the metrics listener's GET /explain).
        #[arg(long)]
        json: bool,
    },
    /// What hushd keeps of the queries it answered (docs/privacy.md).
    Evidence {
        #[command(subcommand)]
        command: EvidenceCommand,
    },
}

#[derive(Debug, Subcommand)]
enum EvidenceCommand {
    /// Delete one client's data: its rows in the evidence store and its lines in the query log
    /// and its rotated copies. Safe while hushd runs.
    Forget {
        /// A [clients] name (its rows under that name and under each of its addresses), an
        /// address, or a network (192.168.1.0/24).
        #[arg(long)]
        client: String,
        /// The evidence store (default: [evidence] path of the config).
        #[arg(long)]
        db: Option<PathBuf>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// hickory logs every response at info; hushd's own events say what an admin needs.
const DEFAULT_LOG_FILTER: &str =
    "info,hickory_server=warn,hickory_resolver=warn,hickory_net=warn,hickory_proto=warn";

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Check) => match app::check(&cli.config) {
            Ok(summary) => {
                print!("{summary}");
                ExitCode::SUCCESS
            }
            Err(errors) => {
                eprintln!("{errors}");
                eprintln!("{}: {} error(s)", cli.config.display(), errors.0.len());
                ExitCode::FAILURE
            }
        },
        Some(Command::Explain { name, client, json }) => {
            match hushd::explain::offline(&cli.config, &name, client) {
                Ok(e) if json => match serde_json::to_string_pretty(&e) {
                    Ok(text) => {
                        println!("{text}");
                        ExitCode::SUCCESS
                    }
                    Err(err) => {
                        eprintln!("hushd: {err}");
                        ExitCode::FAILURE
                    }
                },
                Ok(e) => {
                    print!("{}", hushd::explain::render(&e));
                    ExitCode::SUCCESS
                }
                Err(errors) => {
                    eprintln!("{errors}");
                    ExitCode::FAILURE
                }
            }
        }
        Some(Command::Evidence {
            command: EvidenceCommand::Forget { client, db },
        }) => forget(&cli.config, &client, db),
        None => {
            // Held until main returns: dropping it flushes what the log thread still holds.
            let _log_flush = init_logging(cli.log_format);
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("hushd: cannot start the async runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(app::run(&cli.config)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// `hushd evidence forget`: the config says where the store and the query log are.
fn forget(config_path: &std::path::Path, client: &str, db: Option<PathBuf>) -> ExitCode {
    use hushd::evidence::forget::{Who, forget, render};
    let config = match hushd::config::Config::load(config_path) {
        Ok(config) => config,
        Err(errors) => {
            eprintln!("{errors}");
            return ExitCode::FAILURE;
        }
    };
    let who = match Who::parse(client, &config) {
        Ok(who) => who,
        Err(e) => {
            eprintln!("hushd: {e}");
            return ExitCode::FAILURE;
        }
    };
    let db = db.unwrap_or_else(|| config.evidence.path.clone());
    let querylog = &config.querylog;
    match forget(&db, &querylog.path, &who) {
        Ok(done) => {
            print!(
                "{}",
                render(&who, &db, &querylog.path, &done, querylog.anonymize)
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("hushd: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Log lines waiting for a slow sink, at most. Past it, new lines are dropped and counted
/// (`hushd_log_dropped_total`); at a few hundred bytes a line this bounds the backlog to a few MB.
const LOG_BUFFER_LINES: usize = 8192;

/// Logs go to stderr through a thread of their own: a query worker only queues its line, so a
/// stalled journald or a full pipe costs log lines, never answers.
fn init_logging(format: LogFormat) -> WorkerGuard {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_LOG_FILTER));
    // Colour only for a person at a terminal, never into journald or a log file.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let (writer, guard) = NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(LOG_BUFFER_LINES)
        .thread_name("hushd-log")
        .finish(std::io::stderr());
    let dropped = writer.error_counter();
    metrics::count_log_drops_with(move || dropped.dropped_lines() as u64);
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(writer);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
    guard
}

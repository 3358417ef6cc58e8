//! The `hushd` command: argument parsing, logging, the runtime. Everything else is in the library.

use hushd::{
    app,
    config::Config,
    evidence::report::{self, ClientFilter, Report, Selection, When, Window},
    metrics,
};

use std::{path::PathBuf, process::ExitCode, time::SystemTime};

use clap::{CommandFactory, Parser, Subcommand, ValueEnum, error::ErrorKind};
use tracing_appender::non_blocking::{NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::EnvFilter;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    Check {
        /// Also compare the file with the config the running hushd is in force with (asked of
        /// its metrics listener's /config) and print one line per changed key: whether a
        /// reload applies it, or it needs a restart.
        #[arg(long)]
        diff_running: bool,
        /// The running hushd's metrics listener (default: the file's [metrics] listen).
        #[arg(long, value_name = "ADDR", requires = "diff_running")]
        running: Option<std::net::SocketAddr>,
    },
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
    /// Which device looked up which list's names, since when and how often: the evidence store
    /// as a device x list matrix, then each list's devices and names. Reads the store only
    /// (safe while hushd runs); without --db, the config's [evidence] path.
    Report(ReportArgs),
    /// What hushd keeps of the queries it answered (docs/privacy.md).
    Evidence {
        #[command(subcommand)]
        command: EvidenceCommand,
    },
}

// `hushd generate` is for packagers, so it is kept out of `Cli`, and so out of the manual pages
// and the shell completions it writes, which are for admins.
#[derive(Debug, Parser)]
#[command(
    name = "generate",
    bin_name = "hushd generate",
    about = "Write the manual pages or a shell completion script (for packagers)"
)]
struct GenerateCli {
    #[command(subcommand)]
    what: Generate,
}

#[derive(Debug, Subcommand)]
enum Generate {
    /// hushd.8, hushd-SUBCOMMAND.8 and hushd.toml.5 into DIR.
    Man {
        dir: PathBuf,
        /// The pages' date, YYYY-MM-DD (default: from SOURCE_DATE_EPOCH, else today), so a
        /// package build is reproducible.
        #[arg(long)]
        date: Option<String>,
    },
    /// The completion script for SHELL, on standard output.
    Completions { shell: clap_complete::Shell },
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

#[derive(Debug, clap::Args)]
struct ReportArgs {
    /// Start: a duration before now (`7d`, `24h`), a UTC day (`2026-12-01`), an RFC 3339 time
    /// (`2026-12-01T08:00:00Z`), or `all`.
    #[arg(long, default_value = "7d")]
    since: When,
    /// End: a UTC day (counted whole), an RFC 3339 time, or a duration before now. Default: now.
    #[arg(long)]
    until: Option<When>,
    /// Only the matches of this list.
    #[arg(long)]
    list: Option<String>,
    /// Only the matches of devices in this group (as they were when they matched).
    #[arg(long)]
    group: Option<String>,
    /// Only this device: its [clients] name, an address, or a CIDR for several.
    #[arg(long, value_name = "NAME|CIDR")]
    client: Option<ClientFilter>,
    #[arg(long, value_enum, default_value_t = ReportFormat::Table)]
    format: ReportFormat,
    /// Write the report to FILE instead of standard output.
    #[arg(long, short = 'o', value_name = "FILE")]
    output: Option<PathBuf>,
    /// An evidence store to read instead of the config's; give several to merge the stores of
    /// several hushd instances (two resolvers for one office) into one report.
    #[arg(long = "db", value_name = "PATH")]
    db: Vec<PathBuf>,
    /// A row per name looked up, not only per device and list (adds the `name` column).
    #[arg(long)]
    by_name: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ReportFormat {
    /// For a terminal.
    Table,
    /// For a spreadsheet: a header row, one row per device, list and action.
    Csv,
    /// For scripts: the rows, the matrix, each list's names and the days.
    Json,
    /// One self-contained page, to print or attach: the matrix, charts and names.
    Html,
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
    let mut args = std::env::args_os();
    if std::env::args_os().nth(1).is_some_and(|a| a == "generate") {
        let program = args.next();
        return generate(GenerateCli::parse_from(program.into_iter().chain(args.skip(1))).what);
    }
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Check {
            diff_running,
            running,
        }) => match app::check(&cli.config) {
            Ok(summary) => {
                print!("{summary}");
                if !diff_running {
                    return ExitCode::SUCCESS;
                }
                match app::diff_running(&cli.config, running) {
                    Ok(lines) => {
                        print!("{lines}");
                        ExitCode::SUCCESS
                    }
                    Err(e) => {
                        eprintln!("hushd: {e:#}");
                        ExitCode::FAILURE
                    }
                }
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
        Some(Command::Report(args)) => run_report(&cli.config, args),
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

/// `hushd generate`: what a package ships beside the binary, made from the same definitions.
fn generate(what: Generate) -> ExitCode {
    match what {
        Generate::Man { dir, date } => {
            let date = date.unwrap_or_else(build_date);
            let mut pages = hushd::manpage::command_pages(Cli::command(), &date);
            pages.push(hushd::manpage::config_page(
                hushd::manpage::CONFIG_REFERENCE,
                env!("CARGO_PKG_VERSION"),
                &date,
            ));
            for page in pages {
                let path = dir.join(&page.file_name);
                if let Err(e) = std::fs::write(&path, page.roff) {
                    eprintln!("hushd generate: cannot write {}: {e}", path.display());
                    return ExitCode::FAILURE;
                }
            }
            ExitCode::SUCCESS
        }
        Generate::Completions { shell } => {
            let mut cmd = Cli::command();
            clap_complete::generate(shell, &mut cmd, "hushd", &mut std::io::stdout());
            ExitCode::SUCCESS
        }
    }
}

/// SOURCE_DATE_EPOCH (the reproducible-builds convention) as a day, else today.
fn build_date() -> String {
    let when = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .map_or_else(SystemTime::now, |secs| {
            SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(secs)
        });
    humantime::format_rfc3339_seconds(when).to_string()[..10].to_owned()
}

/// `hushd evidence forget`: the config says where the store and the query log are.
fn forget(config_path: &std::path::Path, client: &str, db: Option<PathBuf>) -> ExitCode {
    use hushd::evidence::forget::{Who, forget, render};
    let config = match Config::load(config_path) {
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

/// `hushd report`: bad options exit with 2 (as clap's own errors do), a store or file that
/// cannot be read or written with 1.
fn run_report(config: &std::path::Path, args: ReportArgs) -> ExitCode {
    let now = SystemTime::now();
    let window = match Window::new(args.since, args.until, now) {
        Ok(w) => w,
        Err(e) => Cli::command().error(ErrorKind::ValueValidation, e).exit(),
    };
    let from_config = args.db.is_empty();
    let stores = if from_config {
        match Config::load(config) {
            Ok(c) => vec![c.evidence.path],
            Err(errors) => {
                eprintln!("{errors}");
                eprintln!(
                    "hushd report: the store's path comes from the config's [evidence] path; or give --db PATH"
                );
                return ExitCode::FAILURE;
            }
        }
    } else {
        args.db
    };
    let selection = Selection {
        window,
        list: args.list,
        group: args.group,
        client: args.client,
        by_name: args.by_name,
    };
    let rows = match report::read_stores(&stores, &selection) {
        Ok(rows) => rows,
        Err(e) => {
            eprintln!("hushd report: {e}");
            if matches!(e, report::ReadError::Missing(_))
                && from_config
                && std::env::var_os("STATE_DIRECTORY").is_none()
            {
                // A relative [evidence] path is under $STATE_DIRECTORY when systemd runs hushd,
                // which a shell does not set.
                eprintln!(
                    "hushd report: if systemd runs hushd, its store is in the unit's state folder: `--db /var/lib/hushd/evidence.db`, or STATE_DIRECTORY=/var/lib/hushd"
                );
            }
            return ExitCode::FAILURE;
        }
    };
    let names = stores.iter().map(|p| p.display().to_string()).collect();
    let report = Report::build(&rows, &selection, names, now);
    let text = match args.format {
        ReportFormat::Table => report::table(&report),
        ReportFormat::Csv => report::csv(&report),
        ReportFormat::Json => report::json(&report),
        ReportFormat::Html => report::html(&report),
    };
    let written = match &args.output {
        Some(path) => {
            std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))
        }
        None => {
            use std::io::Write as _;
            std::io::stdout()
                .lock()
                .write_all(text.as_bytes())
                .map_err(|e| format!("cannot write the report: {e}"))
        }
    };
    match written {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hushd report: {e}");
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
